/** A throw-away sshd on 127.0.0.1 and an ssh client for it (real OpenSSH, keys in a temp folder). */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { stop, waitForOutput } from './cli.js';

const SSHD = '/usr/sbin/sshd';

/** A running sshd and the ssh arguments that log in to it as this user with its key. */
export interface Sshd {
  port: number;
  /** `ssh` arguments before the destination (key, no host-key prompts, batch mode). */
  sshArgs: string[];
  /** The destination (`user@hidden-server`; the host name only reaches the ProxyCommand). */
  destination: string;
  close(): Promise<void>;
}

/** Starts sshd on a free port of 127.0.0.1, accepting one fresh key for the current user. */
export async function startSshd(): Promise<Sshd> {
  if (!existsSync(SSHD)) {
    throw new Error('sshd not found: install it with `apt-get install -y openssh-server` (.ci/run does)');
  }
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-sshd-'));
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'user_key')]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'user_key.pub')));
  // A free port for sshd: bind 0, read it, release it.
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
    ].join('\n'),
  );
  if (userInfo().uid === 0) mkdirSync('/run/sshd', { recursive: true });
  const sshd: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  await waitForOutput(sshd, /Server listening/, 10_000, 'stderr');
  return {
    port,
    sshArgs: [
      '-i',
      join(dir, 'user_key'),
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'BatchMode=yes',
      '-o',
      'LogLevel=ERROR',
    ],
    destination: `${userInfo().username}@hidden-server`,
    close: async () => {
      await stop(sshd);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
