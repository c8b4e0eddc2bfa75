/**
 * A local stand-in for API Gateway (HTTP API, payload v2): turns each request into the same
 * event API Gateway would send and calls the same handlers. GET → lookup, PUT → register.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { type Handler, methodNotAllowed, notFound } from '../functions/http.js';

/** Largest request body the adapter accepts (API Gateway's own limit is far larger; ours needs none). */
export const MAX_BODY = 64 * 1024;

/** Builds a payload-v2 event from a Node request. */
export function toEventV2(req: IncomingMessage, body: string): APIGatewayProxyEventV2 {
  const url = new URL(req.url ?? '/', 'http://local');
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(',') : v;
  }
  const query: Record<string, string> = {};
  for (const [k, v] of url.searchParams) query[k] = k in query ? `${query[k]},${v}` : v;
  const now = new Date();
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    headers,
    queryStringParameters: Object.keys(query).length ? query : undefined,
    requestContext: {
      accountId: 'local',
      apiId: 'local',
      domainName: headers.host ?? 'localhost',
      domainPrefix: 'local',
      http: {
        method: req.method ?? 'GET',
        path: url.pathname,
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

/** Starts the adapter; `handlers` are the same functions Lambda runs. */
export async function startApiAdapter(opts: {
  register: Handler;
  lookup: Handler;
  port: number;
  host?: string;
}): Promise<{ server: Server; url: string; close: () => Promise<void> }> {
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY) {
        tooLarge = true;
        break;
      }
      chunks.push(chunk);
    }
    let result: Awaited<ReturnType<Handler>>;
    if (tooLarge) {
      result = {
        statusCode: 413,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ error: { permanent: true, diagnostic: 'request body too large' } }),
      };
    } else {
      const event = toEventV2(req, Buffer.concat(chunks).toString('utf8'));
      const method = event.requestContext.http.method;
      if (event.rawPath !== '/') result = notFound();
      else if (method === 'GET' || method === 'HEAD') result = await opts.lookup(event);
      else if (method === 'PUT') result = await opts.register(event);
      else result = methodNotAllowed();
    }
    const headers = { ...(result.headers ?? {}) } as Record<string, string>;
    res.writeHead(result.statusCode ?? 200, headers);
    res.end(req.method === 'HEAD' ? undefined : result.body);
    if (tooLarge) req.socket.destroySoon();
  });
  server.headersTimeout = 10_000;
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
