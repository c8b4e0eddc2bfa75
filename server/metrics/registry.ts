/**
 * Metrics measured from inside: a small registry of counters, gauges and histograms with labels,
 * rendered two ways from the same numbers —
 *
 *   - Prometheus text exposition (format 0.0.4), for `GET /metrics` beside `/healthz`, for anyone
 *     running relays outside AWS;
 *   - CloudWatch Embedded Metric Format (EMF): JSON log lines that CloudWatch Logs turns into
 *     metrics, one flush per minute on AWS. Counters and histograms flush what happened since the
 *     last flush; gauges flush their current value.
 *
 * Names: `METRIC` (./catalogue.ts) is the catalogue shared by the relay, the API handlers and the
 * CDK dashboard, alarms and autoscaling, so a renamed metric breaks a test instead of a graph.
 */
import { DEPLOYMENT_DIMENSION, emfDimension, METRICS_NAMESPACE, type MetricDef } from './catalogue.js';

/** Label values of one series, by label name. */
export type Labels = Record<string, string>;

/** Default histogram buckets (milliseconds): 1 ms to 10 s. */
export const DEFAULT_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000];

type Kind = 'counter' | 'gauge' | 'histogram';

interface Series {
  labels: Labels;
  /** counter: total; gauge: value. */
  value: number;
  /** counter: total at the last EMF flush. */
  flushed: number;
  /** histogram: cumulative per bucket (+Inf last), sum, count. */
  buckets?: number[];
  sum?: number;
  count?: number;
  /** histogram: observations since the last EMF flush, value → count (≤ 100 distinct, EMF's limit). */
  pending?: Map<number, number>;
}

interface Family {
  def: MetricDef;
  kind: Kind;
  help: string;
  series: Map<string, Series>;
  /** gauge: read at collection time instead of set(). */
  read?: () => Array<{ labels: Labels; value: number }>;
  bounds?: number[];
}

const keyOf = (labels: Labels) =>
  Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(',');

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

const promLabels = (labels: Labels, extra?: [string, string]) => {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${escapeLabel(labels[k] ?? '')}"`);
  if (extra) parts.push(`${extra[0]}="${extra[1]}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
};

/** A counter: only goes up. */
export interface Counter {
  inc(labels?: Labels, by?: number): void;
}
/** A gauge: a current value. */
export interface Gauge {
  set(labels: Labels, value: number): void;
}
/** A histogram of durations (milliseconds). */
export interface Histogram {
  observe(labels: Labels, value: number): void;
}

/** The registry one process (a relay, a Lambda container) keeps. */
export class Metrics {
  private readonly families = new Map<string, Family>();

  private family(def: MetricDef, kind: Kind, help: string): Family {
    let f = this.families.get(def.prom);
    if (!f) {
      f = { def, kind, help, series: new Map() };
      this.families.set(def.prom, f);
    }
    return f;
  }

  private seriesOf(f: Family, labels: Labels): Series {
    const key = keyOf(labels);
    let s = f.series.get(key);
    if (!s) {
      s = { labels: { ...labels }, value: 0, flushed: 0 };
      if (f.kind === 'histogram') {
        s.buckets = new Array((f.bounds?.length ?? 0) + 1).fill(0);
        s.sum = 0;
        s.count = 0;
        s.pending = new Map();
      }
      f.series.set(key, s);
    }
    return s;
  }

  /** A counter from the catalogue. */
  counter(def: MetricDef, help: string): Counter {
    const f = this.family(def, 'counter', help);
    return {
      inc: (labels = {}, by = 1) => {
        this.seriesOf(f, labels).value += by;
      },
    };
  }

  /** A gauge set by the caller. */
  gauge(def: MetricDef, help: string): Gauge {
    const f = this.family(def, 'gauge', help);
    return {
      set: (labels, value) => {
        this.seriesOf(f, labels).value = value;
      },
    };
  }

  /** A gauge read at collection time (parked sockets: the lot is the truth, not a counter beside it). */
  gaugeFrom(def: MetricDef, help: string, read: () => Array<{ labels: Labels; value: number }>): void {
    this.family(def, 'gauge', help).read = read;
  }

  /** A histogram from the catalogue (milliseconds). */
  histogram(def: MetricDef, help: string, bounds: number[] = DEFAULT_BUCKETS_MS): Histogram {
    const f = this.family(def, 'histogram', help);
    f.bounds = bounds;
    return {
      observe: (labels, value) => {
        const s = this.seriesOf(f, labels);
        const buckets = s.buckets as number[];
        let i = 0;
        while (i < bounds.length && value > (bounds[i] as number)) i++;
        buckets[i] = (buckets[i] ?? 0) + 1;
        s.sum = (s.sum ?? 0) + value;
        s.count = (s.count ?? 0) + 1;
        const pending = s.pending as Map<number, number>;
        // Memory bound between flushes: past PENDING_LIMIT distinct values, a value counts at its
        // bucket's bound (at most bounds.length + 1 more keys); the flush compresses to EMF's 100.
        const v = Math.round(value * 1000) / 1000;
        const at =
          pending.has(v) || pending.size < PENDING_LIMIT
            ? v
            : (bounds[Math.min(i, bounds.length - 1)] as number);
        pending.set(at, (pending.get(at) ?? 0) + 1);
      },
    };
  }

  private current(f: Family): Series[] {
    if (!f.read) return [...f.series.values()];
    return f.read().map(({ labels, value }) => ({ labels, value, flushed: 0 }));
  }

  /** The value of one series now (counters: total; gauges: value; histograms: count). For tests and /healthz. */
  value(def: MetricDef, labels: Labels = {}): number {
    const f = this.families.get(def.prom);
    if (!f) return 0;
    const s = this.current(f).find((x) => keyOf(x.labels) === keyOf(labels));
    if (!s) return 0;
    return f.kind === 'histogram' ? (s.count ?? 0) : s.value;
  }

  /** Prometheus text exposition format 0.0.4. */
  prometheus(): string {
    const out: string[] = [];
    for (const f of this.families.values()) {
      const name = f.def.prom;
      out.push(`# HELP ${name} ${f.help.replace(/\n/g, ' ')}`);
      out.push(`# TYPE ${name} ${f.kind}`);
      for (const s of this.current(f)) {
        if (f.kind !== 'histogram') {
          out.push(`${name}${promLabels(s.labels)} ${s.value}`);
          continue;
        }
        const bounds = f.bounds ?? [];
        let cumulative = 0;
        bounds.forEach((b, i) => {
          cumulative += s.buckets?.[i] ?? 0;
          out.push(`${name}_bucket${promLabels(s.labels, ['le', String(b)])} ${cumulative}`);
        });
        cumulative += s.buckets?.[bounds.length] ?? 0;
        out.push(`${name}_bucket${promLabels(s.labels, ['le', '+Inf'])} ${cumulative}`);
        out.push(`${name}_sum${promLabels(s.labels)} ${s.sum ?? 0}`);
        out.push(`${name}_count${promLabels(s.labels)} ${s.count ?? 0}`);
      }
    }
    return `${out.join('\n')}\n`;
  }

  /**
   * EMF records for what happened since the last call (counters, histograms) and what is true now
   * (gauges). Each label combination is a record whose dimensions are the deployment plus those
   * labels; a labelled metric also gets a total with the deployment alone (what autoscaling and
   * alarms read). Counters with nothing new are left out; gauges are always written.
   */
  emf(deployment: string, now: number = Date.now(), namespace: string = METRICS_NAMESPACE): object[] {
    const records: object[] = [];
    const record = (
      def: MetricDef,
      labels: Labels,
      value: number | { Values: number[]; Counts: number[] },
    ) => {
      const dims = [DEPLOYMENT_DIMENSION, ...Object.keys(labels).map(emfDimension)];
      const doc: Record<string, unknown> = {
        _aws: {
          Timestamp: now,
          CloudWatchMetrics: [
            { Namespace: namespace, Dimensions: [dims], Metrics: [{ Name: def.emf, Unit: def.unit }] },
          ],
        },
        [DEPLOYMENT_DIMENSION]: deployment,
      };
      for (const [k, v] of Object.entries(labels)) doc[emfDimension(k)] = v;
      doc[def.emf] = value;
      records.push(doc);
    };
    for (const f of this.families.values()) {
      const series = this.current(f);
      if (f.kind === 'gauge') {
        let total = 0;
        for (const s of series) {
          total += s.value;
          if (Object.keys(s.labels).length) record(f.def, s.labels, s.value);
        }
        record(f.def, {}, total);
      } else if (f.kind === 'counter') {
        let total = 0;
        for (const s of series) {
          const delta = s.value - s.flushed;
          s.flushed = s.value;
          if (delta === 0) continue;
          total += delta;
          if (Object.keys(s.labels).length) record(f.def, s.labels, delta);
        }
        if (total > 0) record(f.def, {}, total);
      } else {
        const all = new Map<number, number>();
        for (const s of series) {
          const pending = s.pending as Map<number, number>;
          if (pending.size === 0) continue;
          for (const [v, c] of pending) all.set(v, (all.get(v) ?? 0) + c);
          if (Object.keys(s.labels).length) record(f.def, s.labels, emfValues(pending));
          pending.clear();
        }
        if (all.size > 0) record(f.def, {}, emfValues(all));
      }
    }
    return records;
  }
}

/** Distinct histogram values kept between two EMF flushes, per series. */
const PENDING_LIMIT = 1_000;
/** EMF's limit on distinct values in one record. */
export const EMF_MAX_VALUES = 100;

/**
 * A histogram's observations as EMF `Values`/`Counts`, at most EMF_MAX_VALUES: the two closest
 * values are merged (into the larger, so a tail is never understated) until it fits.
 */
export function emfValues(observed: Map<number, number>): { Values: number[]; Counts: number[] } {
  const entries = [...observed.entries()].sort((a, b) => a[0] - b[0]);
  while (entries.length > EMF_MAX_VALUES) {
    let at = 0;
    let best = Number.POSITIVE_INFINITY;
    for (let i = 0; i < entries.length - 1; i++) {
      const gap = (entries[i + 1] as [number, number])[0] - (entries[i] as [number, number])[0];
      if (gap < best) {
        best = gap;
        at = i;
      }
    }
    const [, c] = entries.splice(at, 1)[0] as [number, number];
    (entries[at] as [number, number])[1] += c;
  }
  return { Values: entries.map((e) => e[0]), Counts: entries.map((e) => e[1]) };
}

/**
 * Writes the registry's EMF records to `out` (stdout: the awslogs driver and Lambda both carry
 * stdout into CloudWatch Logs, which extracts the metrics) every `periodMs`. Returns a stop that
 * flushes once more, so a draining relay's last minute is not lost.
 */
export function startEmfFlush(
  metrics: Metrics,
  deployment: string,
  periodMs = 60_000,
  out: { write(line: string): unknown } = process.stdout,
): () => void {
  const flush = () => {
    for (const doc of metrics.emf(deployment)) out.write(`${JSON.stringify(doc)}\n`);
  };
  const timer = setInterval(flush, periodMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    flush();
  };
}
