/**
 * Issue 12 item 12: a captured peer line cannot be replayed. Each peer request carries a nonce
 * the holder remembers for the line's validity window.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentCode } from '../../core/totp.js';
import { encodePeerLine } from '../../relay/peer-line.js';
import { provisionIdentity } from '../../server/identities.js';
import { startCluster } from '../support/cluster.js';
import { dial } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const SECRET = 'peer-replay-secret';
let c: Awaited<ReturnType<typeof startCluster>>;

beforeAll(async () => {
  c = await startCluster(1, { secret: SECRET });
});
afterAll(async () => {
  await c?.close();
});

/** Sends `line` to the peer port and returns the first line of the answer. */
async function ask(line: Buffer): Promise<string> {
  const s = await dial(c.relays[0]?.peerAddress?.port as number);
  s.write(line);
  return new Promise((resolve) => {
    let text = '';
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes('\n')) {
        s.destroy();
        resolve(text.slice(0, text.indexOf('\n') + 1));
      }
    });
    s.on('close', () => resolve(text));
  });
}

describe('peer lines', () => {
  it('a captured line is honoured once; its replay is refused', async () => {
    const id = await provisionIdentity(c.store, { uuid: 'peer-replay' });
    const http = c.relays[0]?.httpAddress?.port as number;
    const code = currentCode(id);
    // Two parked HTTP hidden servers, so a replay would find a second one to take.
    const parks = [];
    let cookie = '';
    for (let k = 0; k < 2; k++) {
      const s = await dial(http);
      s.write(
        `CONNECT uuid:peer-replay?${cookie ? `cookie=${cookie}` : `response=${code}`} HTTP/1.1\r\n\r\n`,
      );
      const head = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
      cookie ||= /Rendezvous-Cookie: (\S+)/.exec(head)?.[1] ?? '';
      parks.push(s);
    }
    await waitFor(() => (c.relays[0]?.lot.count('http', 'peer-replay') ?? 0) === 2, 3_000, 'parked');
    const captured = encodePeerLine(SECRET, { kind: 'http', key: 'peer-replay', waitMs: 0 });
    expect(await ask(captured)).toBe('+OK\n');
    expect(await ask(captured)).toMatch(/^-ERR /);
    expect(c.relays[0]?.lot.count('http', 'peer-replay')).toBe(1);
    // A fresh line (new nonce) is still served.
    expect(await ask(encodePeerLine(SECRET, { kind: 'http', key: 'peer-replay', waitMs: 0 }))).toBe('+OK\n');
    for (const s of parks) s.destroy();
  });
});
