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
