/**
 * The registration API's edge: event parsing and the one place where errors become HTTP
 * responses. A 500 body is a fixed string; nothing from an exception reaches the wire.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { badRequest, type ErrorCode, isRendezvousError } from '../core/errors.js';
import type { RendezvousTriple } from '../core/triple.js';
import { isOriginalRefusal, ORIGINAL_REFUSAL_BODY } from '../server/code-rule.js';

/** A payload-v2 handler as API Gateway and the local adapter call it. */
export type Handler = (event: APIGatewayProxyEventV2) => Promise<APIGatewayProxyStructuredResultV2>;

/** The methods the API serves at `/`. */
export const ALLOWED_METHODS = 'GET, PUT';

/**
 * The cookie-line options our relays understand (`R<cookie> rid target=up`): results carry them
 * as `relayOptions`, so our agent and client send options only where they are understood; an
 * original client ignores the extra key, and a result without it means plain lines.
 */
export const RELAY_OPTIONS: readonly string[] = ['rid', 'target', 'direct'];

const STATUS: Partial<Record<ErrorCode, number>> = {
  BAD_REQUEST: 400,
  AUTH_FAILED: 401,
  NOT_FOUND: 404,
  NOT_REGISTERED: 404,
  METHOD_NOT_ALLOWED: 405,
  TOO_MANY_ATTEMPTS: 429,
  IDENTITY_DISABLED: 403,
  CODE_LENGTH_REFUSED: 400,
  QUOTA_EXCEEDED: 429,
  STORE_UNAVAILABLE: 503,
};

const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' };

function json(
  statusCode: number,
  body: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyStructuredResultV2 {
  return { statusCode, headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) };
}

/**
 * `200 {"result":{host,port,cookie}}`, plus the additive `tlsPort` when the relay has one and
 * `relayOptions` (see RELAY_OPTIONS), `replaced` on a registration that replaced a live one, and
 * `fallback` on a look-up that names the holding relay directly.
 */
export function resultResponse(triple: RendezvousTriple): APIGatewayProxyStructuredResultV2 {
  const { host, port, cookie, tlsPort, replaced, fallback } = triple;
  const result = tlsPort ? { host, port, cookie, tlsPort } : { host, port, cookie };
  // `replaced` (additive) only where the registration set it: never on a look-up.
  return json(200, {
    result: {
      ...result,
      relayOptions: [...RELAY_OPTIONS],
      ...(replaced ? { replaced } : {}),
      ...(fallback ? { fallback: { host: fallback.host, port: fallback.port } } : {}),
    },
  });
}

/** The HTTP status `errorResponse` gives an error (500 for anything unexpected). */
export function statusOf(err: unknown): number {
  if (isOriginalRefusal(err)) return 200;
  return (isRendezvousError(err) && STATUS[err.code]) || 500;
}

/**
 * `{"error":{"permanent","diagnostic"}}` with the status fitting the error (a compat identity's
 * refused code: 200 and the original's body, see server/code-rule.ts). Only `message` goes on
 * the wire (never an error's `detail`, which names configuration); the caller logs the rest.
 */
export function errorResponse(err: unknown): APIGatewayProxyStructuredResultV2 {
  // A compat identity's refused code: what the original's registrar answered (its clients retry).
  if (isOriginalRefusal(err)) return json(200, ORIGINAL_REFUSAL_BODY);
  if (isRendezvousError(err) && STATUS[err.code]) {
    const headers: Record<string, string> = {};
    if (err.retryAfter !== undefined) headers['retry-after'] = String(Math.max(1, err.retryAfter));
    if (err.code === 'METHOD_NOT_ALLOWED') headers.allow = ALLOWED_METHODS;
    return json(
      STATUS[err.code] as number,
      { error: { permanent: err.permanent, diagnostic: err.message } },
      headers,
    );
  }
  return json(500, { error: { permanent: false, diagnostic: 'internal error' } });
}

/** 405 with `Allow`. */
export function methodNotAllowed(): APIGatewayProxyStructuredResultV2 {
  return json(
    405,
    { error: { permanent: true, diagnostic: 'method not allowed' } },
    { allow: ALLOWED_METHODS },
  );
}

/** 404 for paths other than `/`. */
export function notFound(): APIGatewayProxyStructuredResultV2 {
  return json(404, { error: { permanent: true, diagnostic: 'no such resource' } });
}

const MAX_PARAM = 1024;

/** One query parameter; rejects oversize, repeated or non-printable values. */
export function queryParam(event: APIGatewayProxyEventV2, name: string): string | undefined {
  const value = event.queryStringParameters?.[name];
  if (value === undefined) return undefined;
  if (value.length > MAX_PARAM) throw badRequest(`parameter too long: ${name}`);
  // API Gateway joins repeated parameters with commas; a uuid or code never holds one.
  if (value.includes(',')) throw badRequest(`repeated parameter: ${name}`);
  if (/[^\x20-\x7e]/.test(value)) throw badRequest(`malformed parameter: ${name}`);
  return value;
}

/** The request method of a payload-v2 event. */
export function methodOf(event: APIGatewayProxyEventV2): string {
  return event.requestContext?.http?.method?.toUpperCase() ?? '';
}
