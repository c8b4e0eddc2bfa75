/**
 * The ECS task's public IPv4 (direct addressing, RELAY_DIRECT_HOST=ecs-public-ip). The task
 * metadata endpoint v4 names only the task's private address, so the public one is read from EC2:
 * one DescribeNetworkInterfaces call filtered by that private address, signed (SigV4) with the
 * task role's credentials from the container credentials endpoint. Plain fetch and node:crypto:
 * the relay keeps the AWS SDK to the store alone.
 */
import { createHash, createHmac } from 'node:crypto';

const sha256 = (data: string) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();

interface Credentials {
  AccessKeyId: string;
  SecretAccessKey: string;
  Token?: string;
}

/** GETs a JSON document, bounded by 2 s. */
async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  if (!res.ok) throw new Error(`${new URL(url).pathname}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

/** The task's private IPv4, from the task metadata endpoint v4. */
async function privateIp(metadata: string): Promise<string> {
  const task = await getJson<{ Containers?: Array<{ Networks?: Array<{ IPv4Addresses?: string[] }> }> }>(
    `${metadata}/task`,
  );
  for (const c of task.Containers ?? []) {
    const ip = c.Networks?.[0]?.IPv4Addresses?.[0];
    if (ip) return ip;
  }
  throw new Error('no IPv4 address in the task metadata');
}

/**
 * Signs a GET of `url` for `service` in `region` (AWS Signature Version 4, headers), returning the
 * headers to send.
 */
export function signGet(
  url: URL,
  service: string,
  region: string,
  creds: Credentials,
  now: Date = new Date(),
): Record<string, string> {
  const amzDate = now.toISOString().replace(/[-:]|\.\d{3}/g, '');
  const day = amzDate.slice(0, 8);
  const enc = (s: string) =>
    encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const query = [...url.searchParams]
    .map(([k, v]) => `${enc(k)}=${enc(v)}`)
    .sort()
    .join('&');
  const headers: Record<string, string> = {
    host: url.host,
    'x-amz-content-sha256': sha256(''),
    'x-amz-date': amzDate,
  };
  if (creds.Token) headers['x-amz-security-token'] = creds.Token;
  const names = Object.keys(headers).sort();
  const canonical = [
    'GET',
    url.pathname || '/',
    query,
    ...names.map((n) => `${n}:${headers[n]}`),
    '',
    names.join(';'),
    sha256(''),
  ].join('\n');
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  let key: Buffer = hmac(`AWS4${creds.SecretAccessKey}`, day);
  for (const part of [region, service, 'aws4_request']) key = hmac(key, part);
  const signature = createHmac('sha256', key).update(toSign).digest('hex');
  return {
    ...headers,
    authorization: `AWS4-HMAC-SHA256 Credential=${creds.AccessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`,
  };
}

/**
 * The public IPv4 of this ECS task (awsvpc with assignPublicIp): reads the private address from
 * ECS_CONTAINER_METADATA_URI_V4 and the task role's credentials from
 * AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (or _FULL_URI), then asks EC2 (AWS_ENDPOINT_URL_EC2, else
 * the region's endpoint) which public address is associated with it. Needs
 * `ec2:DescribeNetworkInterfaces` on the task role. Rejects when any step fails or the interface
 * has no public address.
 */
export async function ecsPublicIp(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const metadata = env.ECS_CONTAINER_METADATA_URI_V4;
  if (!metadata) throw new Error('not on ECS (no ECS_CONTAINER_METADATA_URI_V4)');
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION;
  if (!region) throw new Error('no AWS_REGION');
  const credsUrl =
    env.AWS_CONTAINER_CREDENTIALS_FULL_URI ||
    (env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
      ? `http://169.254.170.2${env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI}`
      : undefined);
  if (!credsUrl) throw new Error('no task role credentials');
  const [ip, creds] = await Promise.all([privateIp(metadata), getJson<Credentials>(credsUrl)]);
  const url = new URL(env.AWS_ENDPOINT_URL_EC2 || `https://ec2.${region}.amazonaws.com/`);
  url.searchParams.set('Action', 'DescribeNetworkInterfaces');
  url.searchParams.set('Version', '2016-11-15');
  url.searchParams.set('Filter.1.Name', 'addresses.private-ip-address');
  url.searchParams.set('Filter.1.Value.1', ip);
  const res = await fetch(url, {
    headers: signGet(url, 'ec2', region, creds),
    signal: AbortSignal.timeout(5_000),
  });
  const body = await res.text();
  if (!res.ok) throw new Error(`DescribeNetworkInterfaces: HTTP ${res.status}`);
  const found = /<publicIp>([0-9.]{7,15})<\/publicIp>/.exec(body)?.[1];
  if (!found) throw new Error(`no public IPv4 associated with ${ip}`);
  return found;
}
