/**
 * The SDK's default credential provider as the Lambda bundles have it (scripts/build.mjs and the
 * CDK's NodejsFunction alias `@aws-sdk/credential-provider-node` to this file). Lambda gives a
 * function its role's credentials in the environment, so the rest of the SDK's chain (profiles,
 * SSO, web identity, containers, instance metadata and the clients they carry) is never reached;
 * left out, it is about a third less bundle for every cold start to compile.
 */

/** Credentials as the SDK takes them. */
interface EnvCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/**
 * `defaultProvider` with the signature of `@aws-sdk/credential-provider-node`'s: credentials from
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (read at each call, so the
 * SDK's refresh sees a new set), or an error that says where they were looked for.
 */
export const defaultProvider = (_init?: unknown) => async (): Promise<EnvCredentials> => {
  const env = process.env;
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey)
    throw Object.assign(
      new Error('no AWS credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)'),
      { name: 'CredentialsProviderError', tryNextLink: false },
    );
  const expiry = env.AWS_CREDENTIAL_EXPIRATION;
  return {
    accessKeyId,
    secretAccessKey,
    ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
    ...(expiry ? { expiration: new Date(expiry) } : {}),
  };
};
