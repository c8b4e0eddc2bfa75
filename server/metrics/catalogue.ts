/**
 * The metric catalogue: every metric's EMF name, Prometheus name, unit and labels, the namespace
 * and the deployment dimension. Shared by the relay, the API handlers and the CDK dashboard, alarms
 * and autoscaling, so a renamed metric breaks a test instead of a graph. Data only: infra/ imports
 * this file (and no other runtime module), so it imports nothing.
 */
/** CloudWatch namespace of every metric (the CDK reads the same constant). */
export const METRICS_NAMESPACE = 'Rendezvous';
/**
 * EMF dimension naming the deployment (a stack): every EMF record carries it, so two stacks in one
 * region do not mix. Its value comes from RENDEZVOUS_METRICS_DIMENSION (the CDK sets the stack name).
 */
export const DEPLOYMENT_DIMENSION = 'Deployment';

/** The metric catalogue: EMF name (CamelCase), Prometheus name, unit, labels. */
export const METRIC = {
  // Relay
  parkedSockets: {
    emf: 'ParkedSockets',
    prom: 'rendezvous_relay_parked_sockets',
    unit: 'Count',
    labels: ['protocol'],
  },
  liveSplices: { emf: 'LiveSplices', prom: 'rendezvous_relay_live_splices', unit: 'Count', labels: [] },
  pairings: {
    emf: 'Pairings',
    prom: 'rendezvous_relay_pairings_total',
    unit: 'Count',
    labels: ['protocol', 'path'],
  },
  rendezvousBytes: {
    emf: 'Bytes',
    prom: 'rendezvous_relay_bytes_total',
    unit: 'Bytes',
    labels: ['direction'],
  },
  handshakeTime: {
    emf: 'HandshakeTime',
    prom: 'rendezvous_relay_handshake_milliseconds',
    unit: 'Milliseconds',
    labels: ['protocol'],
  },
  peerLinkLatency: {
    emf: 'PeerLinkLatency',
    prom: 'rendezvous_relay_peer_link_milliseconds',
    unit: 'Milliseconds',
    labels: [],
  },
  relayRefusals: {
    emf: 'Refusals',
    prom: 'rendezvous_relay_refusals_total',
    unit: 'Count',
    labels: ['reason'],
  },
  // API handlers
  registrations: {
    emf: 'Registrations',
    prom: 'rendezvous_api_registrations_total',
    unit: 'Count',
    labels: [],
  },
  lookups: { emf: 'Lookups', prom: 'rendezvous_api_lookups_total', unit: 'Count', labels: ['outcome'] },
  apiRefusals: {
    emf: 'ApiRefusals',
    prom: 'rendezvous_api_refusals_total',
    unit: 'Count',
    labels: ['reason'],
  },
} as const;

/** One catalogue entry. */
export type MetricDef = (typeof METRIC)[keyof typeof METRIC];

/** `protocol` → `Protocol`: EMF dimension names are CamelCase like the metric names. */
export function emfDimension(label: string): string {
  return label.charAt(0).toUpperCase() + label.slice(1);
}
