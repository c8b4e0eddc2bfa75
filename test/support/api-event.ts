/** API Gateway HTTP API (v2) events for calling the Lambda handlers directly, as API Gateway would. */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';

/** A request `method /?query` from `sourceIp`; like API Gateway, no queryStringParameters when the query is empty. */
export function apiEvent(
  method: string,
  query: Record<string, string> = {},
  sourceIp = '127.0.0.1',
): APIGatewayProxyEventV2 {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: '/',
    rawQueryString: new URLSearchParams(query).toString(),
    headers: {},
    queryStringParameters: Object.keys(query).length ? query : undefined,
    requestContext: {
      accountId: 'test',
      apiId: 'test',
      domainName: 'test',
      domainPrefix: 'test',
      http: { method, path: '/', protocol: 'HTTP/1.1', sourceIp, userAgent: 'test' },
      requestId: 'r',
      routeKey: '$default',
      stage: '$default',
      time: '',
      timeEpoch: 0,
    },
    isBase64Encoded: false,
  };
}

/** A handler result's JSON body. */
export const resultBody = (r: APIGatewayProxyStructuredResultV2) => JSON.parse(r.body ?? '{}');

/**
 * Whether a handler answered `503 store unavailable`: the store timed out (a busy machine), so
 * the request was not evaluated. Where a test asserts a limit, that is a legitimate answer; never
 * where it asserts that the thing under test succeeded.
 */
export const storeUnavailable = (r: APIGatewayProxyStructuredResultV2) =>
  r.statusCode === 503 && resultBody(r).error?.diagnostic === 'store unavailable, try again later';

/**
 * Sends a request again while it answers `503 store unavailable` (`unavailable`; at most `tries`
 * times), for a single request whose evaluated answer a limit test asserts: the limit decides the
 * answer, not the machine's load.
 */
export async function untilEvaluated<T>(
  send: () => Promise<T>,
  unavailable: (r: T) => boolean = storeUnavailable as (r: T) => boolean,
  tries = 5,
): Promise<T> {
  let r = await send();
  for (let i = 1; i < tries && unavailable(r); i++) {
    await new Promise((resolve) => setTimeout(resolve, 200 * i));
    r = await send();
  }
  return r;
}
