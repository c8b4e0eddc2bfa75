/**
 * The shared log schema and the metrics registry: exact records, exact exposition text, exact
 * EMF documents — what an operator's queries, a Prometheus scrape and CloudWatch read.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { jsonLog, LogBudget, makeRecord, memoryLog, textLog, withFields } from '../../core/log.js';
import { DEPLOYMENT_DIMENSION, METRIC, METRICS_NAMESPACE } from '../../server/metrics/catalogue.js';
import { Metrics } from '../../server/metrics/registry.js';

const capture = () => {
  const out = new PassThrough();
  const chunks: string[] = [];
  out.on('data', (c: Buffer) => chunks.push(c.toString()));
  return { out, text: () => chunks.join('') };
};

describe('log schema', () => {
  it('a JSON record has time (UTC), level, service, msg, then the fields; undefined fields are dropped', () => {
    const c = capture();
    jsonLog('relay', c.out).warn('refused', { event: 'refusal', reason: 'unknown_cookie', uuid: undefined });
    const rec = JSON.parse(c.text());
    expect(Object.keys(rec)).toEqual(['time', 'level', 'service', 'msg', 'event', 'reason']);
    expect(rec).toMatchObject({ level: 'WARN', service: 'relay', msg: 'refused', reason: 'unknown_cookie' });
    expect(rec.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('fields named like a secret, cookie, code-bearing response or token are redacted, whatever the caller passed', () => {
    const rec = makeRecord('INFO', 'api', 'x', {
      secret: 'JBSWY3DPEHPK3PXP',
      cookie: 'Rabc',
      response: '123456',
      authorization: 'Basic Zm9v',
      sessionToken: 't',
      uuid: 'alice',
    });
    expect(rec).toMatchObject({ secret: '[redacted]', cookie: '[redacted]', response: '[redacted]' });
    expect(rec.authorization).toBe('[redacted]');
    expect(rec.sessionToken).toBe('[redacted]');
    expect(rec.uuid).toBe('alice');
    expect(JSON.stringify(rec)).not.toMatch(/JBSWY3DPEHPK3PXP|Rabc|123456|Zm9v/);
  });

  it('schema keys cannot be overwritten by fields', () => {
    const rec = makeRecord('INFO', 'relay', 'real', { service: 'spoof', level: 'ERROR', msg: 'spoof' });
    expect(rec).toEqual({ time: expect.any(String), level: 'INFO', service: 'relay', msg: 'real' });
  });

  it('text lines for people carry the UTC time and key=value fields', () => {
    const c = capture();
    textLog('expose', c.out).info('rendezvous ended', { event: 'rendezvous', rid: 'r1', bytesToHidden: 3 });
    expect(c.text()).toMatch(/^expose: \d\d:\d\d:\d\dZ rendezvous ended rid=r1 bytesToHidden=3\n$/);
  });

  it('withFields adds fields to every record; memoryLog keeps them', () => {
    const m = memoryLog('relay');
    withFields(m, { relayId: 'r-1' }).info('x', { a: 1 });
    expect(m.records).toEqual([
      { time: expect.any(String), level: 'INFO', service: 'relay', msg: 'x', relayId: 'r-1', a: 1 },
    ]);
  });

  it('LogBudget: a flood of one key yields perWindow records, then the next window reports what it dropped', () => {
    let t = 0;
    const budget = new LogBudget(3, 1_000, 10, () => t);
    const taken = Array.from({ length: 100 }, () => budget.take('malformed_line').ok).filter(Boolean);
    expect(taken).toHaveLength(3);
    t = 1_000;
    expect(budget.take('malformed_line')).toEqual({ ok: true, suppressed: 97 });
    expect(budget.take('other')).toEqual({ ok: true, suppressed: 0 });
  });

  it('LogBudget: a flood of distinct keys keeps at most maxKeys windows', () => {
    const budget = new LogBudget(1, 60_000, 5, () => 0);
    for (let i = 0; i < 1_000; i++) budget.take(`source-${i}`);
    expect((budget as unknown as { windows: Map<string, unknown> }).windows.size).toBe(5);
  });
});

describe('metrics registry', () => {
  const registry = () => {
    const m = new Metrics();
    const refusals = m.counter(METRIC.relayRefusals, 'Connections the relay refused, by reason.');
    const handshake = m.histogram(METRIC.handshakeTime, 'Accept to paired or parked.', [1, 10, 100]);
    let parked = { generic: 2, http: 1 };
    m.gaugeFrom(METRIC.parkedSockets, 'Sockets parked now.', () =>
      Object.entries(parked).map(([protocol, value]) => ({ labels: { protocol }, value })),
    );
    return { m, refusals, handshake, setParked: (p: typeof parked) => (parked = p) };
  };

  it('Prometheus text: HELP, TYPE, labelled series, cumulative histogram buckets', () => {
    const { m, refusals, handshake } = registry();
    refusals.inc({ reason: 'unknown_cookie' });
    refusals.inc({ reason: 'unknown_cookie' });
    refusals.inc({ reason: 'bad "code"\n' });
    handshake.observe({ protocol: 'generic' }, 0.5);
    handshake.observe({ protocol: 'generic' }, 50);
    handshake.observe({ protocol: 'generic' }, 5_000);
    expect(m.prometheus()).toBe(
      [
        '# HELP rendezvous_relay_refusals_total Connections the relay refused, by reason.',
        '# TYPE rendezvous_relay_refusals_total counter',
        'rendezvous_relay_refusals_total{reason="unknown_cookie"} 2',
        'rendezvous_relay_refusals_total{reason="bad \\"code\\"\\n"} 1',
        '# HELP rendezvous_relay_handshake_milliseconds Accept to paired or parked.',
        '# TYPE rendezvous_relay_handshake_milliseconds histogram',
        'rendezvous_relay_handshake_milliseconds_bucket{protocol="generic",le="1"} 1',
        'rendezvous_relay_handshake_milliseconds_bucket{protocol="generic",le="10"} 1',
        'rendezvous_relay_handshake_milliseconds_bucket{protocol="generic",le="100"} 2',
        'rendezvous_relay_handshake_milliseconds_bucket{protocol="generic",le="+Inf"} 3',
        'rendezvous_relay_handshake_milliseconds_sum{protocol="generic"} 5050.5',
        'rendezvous_relay_handshake_milliseconds_count{protocol="generic"} 3',
        '# HELP rendezvous_relay_parked_sockets Sockets parked now.',
        '# TYPE rendezvous_relay_parked_sockets gauge',
        'rendezvous_relay_parked_sockets{protocol="generic"} 2',
        'rendezvous_relay_parked_sockets{protocol="http"} 1',
        '',
      ].join('\n'),
    );
    expect(m.value(METRIC.relayRefusals, { reason: 'unknown_cookie' })).toBe(2);
    expect(m.value(METRIC.parkedSockets, { protocol: 'http' })).toBe(1);
  });

  it('EMF: counters flush what happened since the last flush, gauges their value, each with a Deployment-only total', () => {
    const { m, refusals, handshake, setParked } = registry();
    refusals.inc({ reason: 'unknown_cookie' }, 3);
    handshake.observe({ protocol: 'generic' }, 4);
    handshake.observe({ protocol: 'generic' }, 4);
    const docs = m.emf('prod-eu', 1_000) as Array<Record<string, unknown>>;
    const byName = (name: string, dims: string[]) =>
      docs.find((d) => {
        const meta = (
          d._aws as { CloudWatchMetrics: Array<{ Dimensions: string[][]; Metrics: Array<{ Name: string }> }> }
        ).CloudWatchMetrics[0];
        return meta?.Metrics[0]?.Name === name && JSON.stringify(meta.Dimensions) === JSON.stringify([dims]);
      });
    expect(byName('Refusals', [DEPLOYMENT_DIMENSION, 'Reason'])).toEqual({
      _aws: {
        Timestamp: 1_000,
        CloudWatchMetrics: [
          {
            Namespace: METRICS_NAMESPACE,
            Dimensions: [[DEPLOYMENT_DIMENSION, 'Reason']],
            Metrics: [{ Name: 'Refusals', Unit: 'Count' }],
          },
        ],
      },
      Deployment: 'prod-eu',
      Reason: 'unknown_cookie',
      Refusals: 3,
    });
    expect(byName('Refusals', [DEPLOYMENT_DIMENSION])?.Refusals).toBe(3);
    expect(byName('ParkedSockets', [DEPLOYMENT_DIMENSION])?.ParkedSockets).toBe(3);
    expect(byName('ParkedSockets', [DEPLOYMENT_DIMENSION, 'Protocol'])).toBeDefined();
    expect(byName('HandshakeTime', [DEPLOYMENT_DIMENSION])?.HandshakeTime).toEqual({
      Values: [4],
      Counts: [2],
    });

    // Next minute: nothing new on the counters (left out), gauges still written with their new value.
    setParked({ generic: 0, http: 5 });
    const next = m.emf('prod-eu', 61_000) as Array<Record<string, unknown>>;
    expect(next.some((d) => 'Refusals' in d || 'HandshakeTime' in d)).toBe(false);
    expect(next.find((d) => 'ParkedSockets' in d && !('Protocol' in d))?.ParkedSockets).toBe(5);
    // Prometheus keeps totals; EMF deltas never reset them.
    expect(m.value(METRIC.relayRefusals, { reason: 'unknown_cookie' })).toBe(3);
  });

  it('EMF: a histogram never writes more than 100 distinct values in one record (CloudWatch rejects more)', () => {
    const { m, handshake } = registry();
    for (let i = 0; i < 1_000; i++) handshake.observe({ protocol: i % 2 ? 'generic' : 'http' }, i / 7);
    const docs = m.emf('d') as Array<Record<string, { Values: number[]; Counts: number[] }>>;
    const hist = docs.filter((d) => 'HandshakeTime' in d).map((d) => d.HandshakeTime);
    expect(hist.length).toBe(3);
    for (const h of hist) {
      expect(h?.Values.length).toBeLessThanOrEqual(100);
      expect(h?.Counts.reduce((a, b) => a + b, 0)).toBe(h === hist[2] ? 1_000 : 500);
    }
  });
});
