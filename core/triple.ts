/**
 * The rendezvous triple, on its own so that the client (which only reads triples) does not
 * import the registration domain and, through it, the store and the AWS SDK.
 */

/**
 * The triple handed to both sides; `cookie` carries its `R`/`I` prefix. `tlsPort` is additive
 * (original clients ignore unknown fields and use `port` in plain TCP): where set, the same host
 * speaks the generic protocol over TLS on that port, and our agent and client use it.
 */
export interface RendezvousTriple {
  host: string;
  port: number;
  cookie: string;
  tlsPort?: number;
  /**
   * Registration answers only, additive: the live registration this one replaced, when it was
   * made (ISO time) and from which source address. Another agent on the same uuid shows here.
   */
  replaced?: ReplacedRegistration;
  /**
   * Look-up answers only, additive: set when `host:port` names the relay holding the hidden
   * server directly rather than the deployment's front (the NLB). A client that cannot reach the
   * named relay connects here instead, with the same cookie (original clients ignore it and fail
   * over by looking up again).
   */
  fallback?: RelayAddress;
}

/** A relay's address as a triple names it. */
export interface RelayAddress {
  host: string;
  port: number;
}

/** A replaced registration as the registration API tells its successor. */
export interface ReplacedRegistration {
  /** When it was made (ISO 8601, UTC). */
  at: string;
  /** The address its registration request came from. */
  from: string;
}
