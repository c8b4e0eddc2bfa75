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

/** Builds the handler over a given store and policy (the local stack and tests use this). */
export function makeRegisterHandler(deps: () => { store: Store; policy: RegistrationPolicy }): Handler {
  return async (event) => {
    if (methodOf(event) !== 'PUT') return methodNotAllowed();
    try {
      const uuid = checkUuid(queryParam(event, 'uuid'));
      const code = checkResponse(queryParam(event, 'response'));
      const { store, policy } = deps();
      const source = event.requestContext?.http?.sourceIp;
      const triple = await registerHiddenServer(store, policy, uuid, code, Date.now(), source);
      logger.info('registered', { uuid });
      return resultResponse(triple);
    } catch (err) {
      logger.warn('register refused', { code: (err as { code?: string }).code });
      return errorResponse(err);
    }
  };
}

let fromEnv: { store: Store; policy: RegistrationPolicy } | undefined;

/** The Lambda entry point: configuration from the environment, one SDK client per process. */
export const handler: Handler = makeRegisterHandler(() => {
  fromEnv ??= { store: new Store({ table: tableFromEnv() }), policy: policyFromEnv() };
  return fromEnv;
});
