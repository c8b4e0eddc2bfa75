/** `GET /?uuid=<ID>`: a mobile client asks where a hidden server is and gets its `I` triple. */
import { tableFromEnv } from '../server/config.js';
import { checkUuid } from '../server/identities.js';
import { lookupHiddenServer } from '../server/lookup.js';
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
 * its log records and metrics go (default: nowhere).
 */
export function makeLookupHandler(
  deps: () => { store: Store },
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
      const triple = await lookupHiddenServer(deps().store, uuid);
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

let fromEnv: { store: Store } | undefined;

/** The Lambda entry point. */
export const handler: Handler = makeLookupHandler(() => {
  fromEnv ??= { store: new Store({ table: tableFromEnv() }) };
  return fromEnv;
}, apiObservabilityFromEnv());
