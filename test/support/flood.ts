/**
 * Mobile clients that reach a hidden server and then reset their connection (RST), at every
 * moment of a rendezvous: right after the cookie line or request head, after `+OK` or the first
 * response bytes, and a few milliseconds into the exchange. Real sockets on 127.0.0.1.
 */
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';

/** Delays after the request at which the timed variants reset: the handshake, pairing, the splice. */
const RESET_DELAYS_MS = [0, 1, 3, 10, 30, 100];

function resetAt(s: Socket, variant: number): void {
  const rst = () => {
    if (!s.destroyed) s.resetAndDestroy();
  };
  if (variant === 0) setImmediate(rst);
  else if (variant === 1) s.once('data', rst);
  else setTimeout(rst, RESET_DELAYS_MS[variant - 2]);
}

function one(port: number, payload: string, variant: number): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    s.once('close', () => resolve());
    s.once('connect', () => {
      s.write(payload);
      resetAt(s, variant);
    });
    // Whatever happens, this client is gone within 2 s.
    setTimeout(() => s.destroy(), 2_000).unref();
  });
}

/** `n` generic-protocol mobile clients of `uuid` that each reset their connection, `parallel` at a time. */
export async function floodGenericResets(api: string, uuid: string, n: number, parallel = 10): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const res = await fetch(`${api}/?uuid=${encodeURIComponent(uuid)}`);
      const body = (await res.json()) as { result?: { host: string; port: number; cookie: string } };
      if (!body.result) continue;
      await one(body.result.port, `${body.result.cookie}\nhello`, i % 8);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

/** `n` HTTP-specific mobile requests for `uuid` on the relay's HTTP port that each reset. */
export async function floodHttpResets(
  httpPort: number,
  uuid: string,
  n: number,
  parallel = 10,
): Promise<void> {
  let next = 0;
  const head = `GET /?rendezvous=${encodeURIComponent(uuid)} HTTP/1.1\r\nHost: x\r\n\r\n`;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await one(httpPort, head, i % 8);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

/**
 * A real HTTP server in a process of its own that the test can freeze (SIGSTOP) and thaw
 * (SIGCONT). Frozen, with its small accept queue filled, it makes every new connection to it
 * hang in the kernel — the window in which an agent has handed a rendezvous over but not yet
 * reached its target, which is where a mobile client's reset used to go unhandled.
 */
export async function startFreezableWebServer(): Promise<{
  port: number;
  freeze: () => Promise<void>;
  thaw: () => void;
  close: () => void;
}> {
  const script =
    "require('node:http').createServer((q, r) => r.end('still serving ' + q.url))" +
    ".listen({ port: 0, host: '127.0.0.1', backlog: 1 }, function () { console.log(this.address().port); });";
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.once('data', (c: Buffer) => resolve(Number(c.toString().trim())));
    child.once('exit', (code) => reject(new Error(`web server exited ${code}`)));
  });
  const fillers: Socket[] = [];
  return {
    port,
    freeze: async () => {
      child.kill('SIGSTOP');
      // Fill the accept queue (backlog 1 holds one or two), so later connects hang.
      for (let i = 0; i < 4; i++) {
        const s = connect({ host: '127.0.0.1', port });
        s.on('error', () => undefined);
        fillers.push(s);
      }
      await new Promise((r) => setTimeout(r, 200));
    },
    thaw: () => {
      for (const s of fillers.splice(0)) s.destroy();
      child.kill('SIGCONT');
    },
    close: () => {
      for (const s of fillers.splice(0)) s.destroy();
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    },
  };
}
