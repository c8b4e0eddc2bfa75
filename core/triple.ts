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
}
