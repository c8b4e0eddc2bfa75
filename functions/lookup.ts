/** `GET /?uuid=<ID>`: a mobile client asks where a hidden server is and gets its `I` triple. */
import { tableFromEnv } from '../core/config.js';
import { checkUuid, lookupHiddenServer } from '../core/registration.js';
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

/** Builds the handler over a given store (the local stack and tests use this). */
export function makeLookupHandler(deps: () => { store: Store }): Handler {
  return async (event) => {
    const method = methodOf(event);
    if (method !== 'GET' && method !== 'HEAD') return methodNotAllowed();
    try {
      const uuid = checkUuid(queryParam(event, 'uuid'));
      const triple = await lookupHiddenServer(deps().store, uuid);
      return resultResponse(triple);
    } catch (err) {
      logger.info('lookup refused', { code: (err as { code?: string }).code });
      return errorResponse(err);
    }
  };
}

let fromEnv: { store: Store } | undefined;

/** The Lambda entry point. */
export const handler: Handler = makeLookupHandler(() => {
  fromEnv ??= { store: new Store({ table: tableFromEnv() }) };
  return fromEnv;
});
