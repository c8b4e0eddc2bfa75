/**
 * Mobile clients that reach a hidden server and then reset their connection (RST), at every
 * moment of a rendezvous: right after the cookie line or request head, after `+OK` or the first
 * response bytes, and a few milliseconds into the exchange. Real sockets on 127.0.0.1.
 */
import { connect, type Socket } from 'node:net';

function resetAt(s: Socket, variant: number): void {
  const rst = () => {
    if (!s.destroyed) s.resetAndDestroy();
  };
  if (variant === 0) setImmediate(rst);
  else if (variant === 1) s.once('data', rst);
  else setTimeout(rst, variant - 2);
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
