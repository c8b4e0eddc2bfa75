#!/usr/bin/env bash
# Builds a local Node base image from this machine's own node binary and the libraries it links
# (plus busybox for a shell), for machines that cannot pull images from a registry. The relay's
# Dockerfile takes it as --build-arg NODE_IMAGE=<this image>; its default stays public Node 22.
set -euo pipefail
image="${1:-${NODE_IMAGE:-rendezvous-node-base:local}}"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
node_bin="$(readlink -f "$(command -v node)")"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/tmp" "$root/etc" "$root/home/node"
cp "$node_bin" "$root/usr/local/bin/node"
for lib in $(ldd "$node_bin" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
if [ -x /bin/busybox ]; then
  cp /bin/busybox "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
fi
printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
chown 1000:1000 "$root/home/node"
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$image" >/dev/null
echo "$image"
