/** `GET /?uuid=<ID>`: a mobile client asks where a hidden server is and gets its `I` triple. */
import { tableFromEnv } from '../server/config.js';
import { checkUuid } from '../server/identities.js';
import { type DirectPolicy, lookupHiddenServer } from '../server/lookup.js';
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
 * Builds the handler over a given store (the local stack and tests use this); `obs` says where
 * its log records and metrics go (default: nowhere). With `direct`, answers name the relay that
 * holds the hidden server when it advertises a direct address (server/lookup.ts).
 */
export function makeLookupHandler(
  deps: () => { store: Store; direct?: DirectPolicy },
  obs: ApiObservability = apiObservability(),
): Handler {
  const telemetry = new ApiTelemetry(obs);
  return async (event) => {
    const facts = requestFacts(event, 'lookup');
    try {
      const method = methodOf(event);
      if (method !== 'GET' && method !== 'HEAD') {
        telemetry.refused('wrong_method', facts, 405);
        return methodNotAllowed();
      }
      const uuid = checkUuid(queryParam(event, 'uuid'));
      const { store, direct } = deps();
      const triple = await lookupHiddenServer(store, uuid, Date.now(), direct);
      telemetry.found();
      return resultResponse(triple);
    } catch (err) {
      telemetry.refused(reasonOf(err), facts, statusOf(err), err);
      return errorResponse(err);
    } finally {
      telemetry.flush();
    }
  };
}

let fromEnv: { store: Store; direct?: DirectPolicy } | undefined;

/**
 * RENDEZVOUS_LOOKUP_DIRECT=on (the deploy's direct addressing): answers may name the holding
 * relay of this function's region. Off (default): one store read per look-up, the front always.
 */
export function directPolicyFromEnv(env: NodeJS.ProcessEnv = process.env): DirectPolicy | undefined {
  const v = env.RENDEZVOUS_LOOKUP_DIRECT?.trim().toLowerCase() ?? '';
  if (!['on', 'true', '1'].includes(v)) return undefined;
  return { region: env.AWS_REGION || undefined };
}

/** The Lambda entry point. */
export const handler: Handler = makeLookupHandler(() => {
  fromEnv ??= { store: new Store({ table: tableFromEnv() }), direct: directPolicyFromEnv() };
  return fromEnv;
}, apiObservabilityFromEnv());
