/**
 * The HTTP-specific half of `rendezvous smoke`: parking with CONNECT (a code, or the cookie a
 * first park was given), and telling this run's own request from another client's on the parked
 * connection by a nonce header (anyone who knows the uuid can send a request that takes it).
 */
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { RendezvousError } from '../core/errors.js';
import {
  type ConnectRequest,
  encodeConnect,
  HeadDecoder,
  parseResponseHead,
  type ResponseHead,
} from '../core/http-head.js';
import { connectTcp, readPreamble } from '../core/socket-reader.js';
import { within } from './smoke-pairing.js';

/** The request header that carries a run's nonce, echoed by the run's HTTP target. */
export const NONCE_HEADER = 'x-smoke-nonce';

/** Longest request head the parked side reads before judging whose request it is. */
const MAX_HEAD = 16 * 1024;

/** Opens a connection to the HTTP-specific endpoint (TLS for https). */
export async function dialHttpRelay(relay: URL, timeoutMs: number): Promise<Socket> {
  const port = Number(relay.port) || (relay.protocol === 'https:' ? 443 : 80);
  const tcp = await connectTcp(relay.hostname, port, { timeoutMs });
  if (relay.protocol !== 'https:') return tcp;
  return within(
    new Promise<Socket>((resolve, reject) => {
      const s = tlsConnect({ socket: tcp, servername: relay.hostname });
      s.once('secureConnect', () => resolve(s as unknown as Socket));
      s.once('error', (err) => {
        tcp.destroy();
        reject(new RendezvousError('UNREACHABLE', `TLS to ${relay.host} failed: ${err.message}`));
      });
    }),
    timeoutMs,
    'TLS handshake',
  );
}

/** Parks on the HTTP-specific port with CONNECT; the socket and the relay's answer. */
export async function connectPark(
  relay: URL,
  credential: Pick<ConnectRequest, 'uuid' | 'response' | 'cookie'>,
  ms: number,
  cleanup: Array<() => void>,
): Promise<{ socket: Socket; head: ResponseHead }> {
  const socket = await dialHttpRelay(relay, ms);
  cleanup.push(() => socket.destroy());
  socket.write(encodeConnect({ ...credential, host: relay.host }));
  const decoder = new HeadDecoder();
  const head: ResponseHead = await readPreamble(
    socket,
    (chunk) => {
      const d = decoder.push(chunk);
      return d && { value: parseResponseHead(d.text), rest: d.rest };
    },
    { what: 'answer to CONNECT', timeoutMs: ms },
  );
  return { socket, head };
}

/**
 * Waits for the request forwarded to a parked socket and tells whether it carries `nonce`; the
 * bytes read stay in the socket for whoever reads it next.
 */
export function isOwnRequest(socket: Socket, nonce: string, ms: number): Promise<boolean> {
  return within(
    new Promise<boolean>((resolve, reject) => {
      let got = Buffer.alloc(0);
      const onData = (c: Buffer) => {
        got = Buffer.concat([got, c]);
        const end = got.indexOf('\r\n\r\n');
        if (end === -1 && got.length < MAX_HEAD) return;
        done();
        socket.pause();
        socket.unshift(got);
        const head = got.subarray(0, end === -1 ? got.length : end).toString('latin1');
        resolve(new RegExp(`\r\n${NONCE_HEADER}:[ \t]*${nonce}[ \t]*(\r\n|$)`, 'i').test(head));
      };
      const onEnd = () => {
        done();
        reject(new Error('the parked connection ended before a request'));
      };
      const done = () => {
        socket.off('data', onData);
        socket.off('end', onEnd);
        socket.off('error', onEnd);
      };
      socket.on('data', onData);
      socket.once('end', onEnd);
      socket.once('error', onEnd);
    }),
    ms,
    'request on the parked connection',
  );
}
