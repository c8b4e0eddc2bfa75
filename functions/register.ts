/** `PUT /?uuid=<ID>&response=<TOTP or proof>`: a hidden server registers and gets its `R` triple. */
import { type ClaimsRouter, claimsRouterFromEnv } from '../server/claims.js';
import { policyFromEnv, tableFromEnv } from '../server/config.js';
import { checkUuid } from '../server/identities.js';
import { type RegistrationPolicy, registerHiddenServer } from '../server/register.js';
import { Store } from '../server/store/index.js';
import {
  errorResponse,
  type Handler,
  methodNotAllowed,
  methodOf,
  queryParam,
  resultResponse,
  statusOf,
} from './http.js';
import {
  type ApiObservability,
  ApiTelemetry,
  apiObservability,
  apiObservabilityFromEnv,
  reasonOf,
  requestFacts,
} from './observe.js';

/**
 * What the handler works on. `home`: the table's home replica when this region is another one
 * of a global table — codes are claimed and guesses counted there, so they hold across regions;
 * the registration itself is written to `store` (this region's replica). `claims`, when given,
 * decides that replica per request instead (the claims region, which an operator can move).
 */
export interface RegisterDeps {
  store: Store;
  policy: RegistrationPolicy;
  home?: Store;
  claims?: ClaimsRouter;
}

/**
 * Builds the handler over a given store and policy (the local stack and tests use this); `obs`
 * says where its log records and metrics go (default: nowhere).
 */
export function makeRegisterHandler(
  deps: () => RegisterDeps,
  obs: ApiObservability = apiObservability(),
): Handler {
  const telemetry = new ApiTelemetry(obs);
  return async (event) => {
    const facts = requestFacts(event, 'register');
    let home: RegisterDeps['home'];
    try {
      if (methodOf(event) !== 'PUT') {
        telemetry.refused('wrong_method', facts, 405);
        return methodNotAllowed();
      }
      const uuid = checkUuid(queryParam(event, 'uuid'));
      // Checked by the server once the identity is read: a compat identity answers a malformed
      // code the original's way.
      const response = queryParam(event, 'response');
      const d = deps();
      home = d.claims ? await d.claims.claims() : d.home;
      const source = event.requestContext?.http?.sourceIp;
      const triple = await registerHiddenServer(d.store, d.policy, uuid, response, Date.now(), source, home);
      telemetry.registered(facts);
      return resultResponse(triple);
    } catch (err) {
      telemetry.refused(reasonOf(err, home?.settings), facts, statusOf(err), err);
      return errorResponse(err);
    } finally {
      telemetry.flush();
    }
  };
}

let fromEnv: RegisterDeps | undefined;

/** The Lambda entry point: configuration from the environment, one SDK client per process. */
export const handler: Handler = makeRegisterHandler(() => {
  if (!fromEnv) {
    const store = new Store({ table: tableFromEnv() });
    fromEnv = { store, policy: policyFromEnv(), claims: claimsRouterFromEnv(store) };
  }
  return fromEnv;
}, apiObservabilityFromEnv());
