/**
 * A local stand-in for API Gateway (HTTP API, payload v2): turns each request into the same
 * event API Gateway would send and calls the same handlers. GET → lookup, PUT → register, on any
 * path (only the query is read, as by the original's registrar).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { type Handler, methodNotAllowed } from '../functions/http.js';

/** Largest request body the adapter accepts (API Gateway's own limit is far larger; ours needs none). */
export const MAX_BODY = 64 * 1024;

/**
 * An origin-form request target (`/path?query`) API Gateway would accept: one leading slash (a
 * `//` target is scheme-relative and names no path of ours), no whitespace or fragment, and
 * every `%` followed by two hex digits.
 */
const ORIGIN_FORM = /^\/(?!\/)[^\s#]*$/;
const BAD_PERCENT = /%(?![0-9A-Fa-f]{2})/;

/** Splits a request target into path and query, or returns undefined when it is malformed. */
export function parseTarget(target: string): { path: string; query: string } | undefined {
  if (!ORIGIN_FORM.test(target) || BAD_PERCENT.test(target)) return undefined;
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  try {
    decodeURIComponent(path); // a valid escape that is not UTF-8 (%E0%A4) is malformed too
  } catch {
    return undefined;
  }
  return { path, query: q === -1 ? '' : target.slice(q + 1) };
}

/** Builds a payload-v2 event from a Node request whose target `parseTarget` accepted. */
export function toEventV2(
  req: IncomingMessage,
  body: string,
  target: { path: string; query: string },
): APIGatewayProxyEventV2 {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(',') : v;
  }
  const query: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(target.query)) query[k] = k in query ? `${query[k]},${v}` : v;
  const now = new Date();
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: target.path,
    rawQueryString: target.query,
    headers,
    queryStringParameters: Object.keys(query).length ? query : undefined,
    requestContext: {
      accountId: 'local',
      apiId: 'local',
      domainName: headers.host ?? 'localhost',
      domainPrefix: 'local',
      http: {
        method: req.method ?? 'GET',
        path: target.path,
        protocol: `HTTP/${req.httpVersion}`,
        sourceIp: req.socket.remoteAddress ?? '',
        userAgent: headers['user-agent'] ?? '',
      },
      requestId: randomUUID(),
      routeKey: '$default',
      stage: '$default',
      time: now.toUTCString(),
      timeEpoch: now.getTime(),
    },
    body: body || undefined,
    isBase64Encoded: false,
  };
}

type HandlerResult = Awaited<ReturnType<Handler>>;

function jsonError(statusCode: number, diagnostic: string): HandlerResult {
  return {
    statusCode,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ error: { permanent: statusCode < 500, diagnostic } }),
  };
}

/** Starts the adapter; `handlers` are the same functions Lambda runs. */
export async function startApiAdapter(opts: {
  register: Handler;
  lookup: Handler;
  port: number;
  host?: string;
}): Promise<{ server: Server; url: string; close: () => Promise<void> }> {
  const answer = async (req: IncomingMessage): Promise<{ result: HandlerResult; tooLarge: boolean }> => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY) {
        // The rest of the body is never read: the connection ends after the answer.
        const result = jsonError(413, 'request body too large');
        return { result: { ...result, headers: { ...result.headers, connection: 'close' } }, tooLarge: true };
      }
      chunks.push(chunk);
    }
    const target = parseTarget(req.url ?? '');
    if (!target) {
      // A client that sends this may send anything next: answer, then end the connection.
      const result = jsonError(400, 'malformed request target');
      return { result: { ...result, headers: { ...result.headers, connection: 'close' } }, tooLarge: false };
    }
    const event = toEventV2(req, Buffer.concat(chunks).toString('utf8'), target);
    const method = event.requestContext.http.method;
    let result: HandlerResult;
    // Any path reaches the handlers, as on the original's registrar (it reads only the query).
    if (method === 'GET' || method === 'HEAD') result = await opts.lookup(event);
    else if (method === 'PUT') result = await opts.register(event);
    else result = methodNotAllowed();
    return { result, tooLarge: false };
  };
  const server = createServer((req, res) => {
    // Held here: once the response is done Node detaches the socket and `req.socket` is null.
    const socket = req.socket;
    // One request's failure is its own: it gets an answer (or its socket ends), never the process.
    answer(req)
      .catch((): { result: HandlerResult; tooLarge: boolean } => ({
        result: jsonError(500, 'internal error'),
        tooLarge: false,
      }))
      .then(({ result, tooLarge }) => {
        if (res.headersSent || res.destroyed) return;
        res.writeHead(result.statusCode ?? 200, { ...(result.headers ?? {}) } as Record<string, string>);
        res.end(req.method === 'HEAD' ? undefined : result.body);
        if (tooLarge) socket.destroySoon();
      })
      .catch(() => socket.destroy());
  });
  // A request Node's parser rejects (garbage, a head over its limit) still gets an HTTP answer.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') return void socket.destroy();
    const status =
      err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    const body = JSON.stringify({ error: { permanent: true, diagnostic: 'malformed request' } });
    socket.end(
      `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  server.headersTimeout = 10_000;
  // Idle keep-alive connections outlive the client's own idle timeout (undici's is 4 s), so the
  // client, not this server, ends them: otherwise a request sent as the server's 5 s timer fires
  // meets a closed socket ("other side closed"), which a loaded machine makes likely.
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 15_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
