/** `PUT /?uuid=<ID>&response=<TOTP>`: a hidden server registers and gets its `R` triple. */
import { policyFromEnv, tableFromEnv } from '../core/config.js';
import {
  checkResponse,
  checkUuid,
  type RegistrationPolicy,
  registerHiddenServer,
} from '../core/registration.js';
import { Store } from '../core/store.js';
import {
  errorResponse,
  type Handler,
  logger,
  methodNotAllowed,
  methodOf,
  queryParam,
  resultResponse,
} from './http.js';

/**
 * What the handler works on. `home`: the table's home replica when this region is another one
 * of a global table — codes are claimed and guesses counted there, so they hold across regions;
 * the registration itself is written to `store` (this region's replica).
 */
export interface RegisterDeps {
  store: Store;
  policy: RegistrationPolicy;
  home?: Store;
}

/** Builds the handler over a given store and policy (the local stack and tests use this). */
export function makeRegisterHandler(deps: () => RegisterDeps): Handler {
  return async (event) => {
    if (methodOf(event) !== 'PUT') return methodNotAllowed();
    try {
      const uuid = checkUuid(queryParam(event, 'uuid'));
      const code = checkResponse(queryParam(event, 'response'));
      const { store, policy, home } = deps();
      const source = event.requestContext?.http?.sourceIp;
      const triple = await registerHiddenServer(store, policy, uuid, code, Date.now(), source, home);
      logger.info('registered', { uuid });
      return resultResponse(triple);
    } catch (err) {
      logger.warn('register refused', { code: (err as { code?: string }).code });
      return errorResponse(err);
    }
  };
}

/**
 * The home replica's store when `RENDEZVOUS_HOME_REGION` names a region other than this one
 * (`AWS_REGION`), else undefined (single region, or the home region itself: claims stay local).
 */
export function homeStoreFromEnv(env: NodeJS.ProcessEnv = process.env): Store | undefined {
  const home = env.RENDEZVOUS_HOME_REGION?.trim();
  if (!home || home === env.AWS_REGION) return undefined;
  return new Store({ table: tableFromEnv(env), region: home });
}

let fromEnv: RegisterDeps | undefined;

/** The Lambda entry point: configuration from the environment, one SDK client per process. */
export const handler: Handler = makeRegisterHandler(() => {
  fromEnv ??= {
    store: new Store({ table: tableFromEnv() }),
    policy: policyFromEnv(),
    home: homeStoreFromEnv(),
  };
  return fromEnv;
});
