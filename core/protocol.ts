/**
 * Protocol facts both ends speak: the hidden server's agent (client/), the relay and the store
 * that remembers where sockets are parked. Types only, so any layer may import them.
 */

/**
 * The two protocols a hidden server parks through: `generic` (the relay line protocol, parks
 * keyed by the mobile cookie) and `http` (HTTP CONNECT, parks keyed by the uuid).
 */
export type ParkKind = 'generic' | 'http';
