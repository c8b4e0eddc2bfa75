/**
 * Usage records (issue 30): per identity, one item per UTC day it had any use and region that
 * wrote it (`usage#<uuid>` / `day#YYYY-MM-DD#<region>`), holding the day's counters per protocol
 * and each hour's counters as attributes of the same item. A relay flush adds to it with ONE
 * UpdateItem (ADD): no read, no condition, no transaction (dynalite has none), so any number of
 * relays add to one item at once without losing a byte, and an idle identity costs nothing (no
 * delta, no write). The region is in the key because a global table settles concurrent writes to
 * one item in two regions by "last writer wins": two regions ADDing to one shared item within the
 * replication lag would lose one's delta; with an item per region, each item has one writing
 * replica and every replica holds all of them. A month is one Query of one partition (at most 31
 * items per region with usage); the listing of every identity is a Scan (costly: see `ranking`).
 * Items age out through the table's TTL (`expiresAt`) USAGE_TTL_SECONDS after their day: a
 * deleted identity's usage stays until then (it is still billable).
 *
 * Attribute names are short, because every write is billed on the whole item's size: a counter is
 * `<protocol><counter>` for the day and `<protocol><counter><HH>` for hour HH (UTC), where the
 * protocol is `g` (generic) or `h` (http) and the counter `h` (bytes to the hidden server), `m`
 * (bytes to the mobile client), `r` (rendezvous begun) or `s` (connection-seconds). A counter
 * that never moved is absent (zero). A day used in every hour over both protocols holds 200
 * numbers, under 2 KB (about 1.7 KB with ten-digit byte counts).
 */
import { badRequest } from '../../core/errors.js';
import {
  emptyTotals,
  totalBytes,
  type UsageCounters,
  type UsageProtocol,
  type UsageTotals,
} from '../usage-types.js';
import { USAGE_DAY_PREFIX, usageDayKey, usagePk } from './keys.js';
import type { Item, Table } from './table.js';

/** How long a day item is kept after its day began (~13 months: a year back, and the month before). */
export const USAGE_TTL_SECONDS = 400 * 86_400;

/** Days `IdentityUsage.days` covers, today included. */
export const USAGE_DAYS = 30;

/** What an operator sees of one identity's usage (console, `rendezvous identities usage <uuid>`). */
export interface IdentityUsage {
  /** Today (UTC) so far. */
  today: UsageTotals;
  /** This UTC calendar month so far. */
  month: UsageTotals;
  /** The last USAGE_DAYS UTC days, oldest first, today last; a day without use is zeros. */
  days: { day: string; totals: UsageTotals }[];
  /** Today's hours (0..23 UTC) that had any use, in order. */
  hours: { hour: number; totals: UsageTotals }[];
}

/** One identity's usage over a month (`Store.usageRanking`). */
export interface UsageRankEntry {
  uuid: string;
  month: UsageTotals;
}

const PROTOCOLS: Record<UsageProtocol, string> = { generic: 'g', http: 'h' };
const COUNTERS: Record<keyof UsageCounters, string> = {
  bytesToHidden: 'h',
  bytesToMobile: 'm',
  rendezvous: 'r',
  connectionSeconds: 's',
};
const protocols = Object.keys(PROTOCOLS) as UsageProtocol[];
const counters = Object.keys(COUNTERS) as (keyof UsageCounters)[];

/** The attribute of one counter: the day's (`hour` undefined) or one hour's. */
const attr = (p: UsageProtocol, c: keyof UsageCounters, hour?: number) =>
  `${PROTOCOLS[p]}${COUNTERS[c]}${hour === undefined ? '' : String(hour).padStart(2, '0')}`;

/** The day attributes (what a month's sum reads). */
const DAY_ATTRS = protocols.flatMap((p) => counters.map((c) => attr(p, c)));

const DAY_MS = 86_400_000;

/** The UTC day of `ms`, YYYY-MM-DD. */
export const usageDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

/** The UTC month of `ms`, YYYY-MM. */
export const usageMonth = (ms: number): string => usageDay(ms).slice(0, 7);

/** A month as the CLI and the console take it: YYYY-MM; BAD_REQUEST otherwise. */
export function checkMonth(month: string): string {
  if (!/^\d{4}-(0[1-9]|1[0-2])$/.test(month)) throw badRequest(`month: YYYY-MM, not ${month.slice(0, 20)}`);
  return month;
}

/** The totals an item holds: the day's, or hour `hour`'s. */
function totalsOf(item: Item, hour?: number): UsageTotals {
  const t = emptyTotals();
  for (const p of protocols)
    for (const c of counters) {
      const v = item[attr(p, c, hour)];
      if (typeof v === 'number') t[p][c] = v;
    }
  return t;
}

/** `a` plus `b`, into `a`. */
function addInto(a: UsageTotals, b: UsageTotals): UsageTotals {
  for (const p of protocols) for (const c of counters) a[p][c] += b[p][c];
  return a;
}

/** The usage records of one table. */
export class Usage {
  /** The region segment of the items this store writes (its replica's region). */
  private readonly region: string;

  constructor(private readonly table: Table) {
    this.region = table.settings.region.replace(/[^A-Za-z0-9-]/g, '_');
  }

  /**
   * Adds `delta` to the uuid's day item, the day's counters and that hour's, in one UpdateItem
   * (ADD creates the item and the counters it lacks). Zero counters are left out; an all-zero
   * delta writes nothing. A negative or non-finite counter is a caller's bug: thrown, nothing added.
   */
  async add(uuid: string, delta: UsageTotals, nowMs: number = Date.now()): Promise<void> {
    const hour = new Date(nowMs).getUTCHours();
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    const adds: string[] = [];
    for (const p of protocols)
      for (const c of counters) {
        const v = delta[p]?.[c] ?? 0;
        if (!Number.isFinite(v) || v < 0) throw new RangeError(`usage delta ${p}.${c} is ${v}`);
        if (v === 0) continue;
        const i = adds.length / 2;
        names[`#d${i}`] = attr(p, c);
        names[`#h${i}`] = attr(p, c, hour);
        values[`:v${i}`] = v;
        adds.push(`#d${i} :v${i}`, `#h${i} :v${i}`);
      }
    if (adds.length === 0) return;
    const day = usageDay(nowMs);
    await this.table.update({
      Key: usageDayKey(uuid, day, this.region),
      UpdateExpression: `SET expiresAt = :exp ADD ${adds.join(', ')}`,
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: {
        ...values,
        ':exp': Math.floor(Date.parse(`${day}T00:00:00Z`) / 1000) + USAGE_TTL_SECONDS,
      },
    });
  }

  /** The uuid's day items (every region's) from `from` to `to` (YYYY-MM-DD, inclusive), oldest first: one Query. */
  private days(uuid: string, from: string, to: string, dayOnly = false): Promise<Item[]> {
    return this.table.queryAll({
      KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
      ExpressionAttributeValues: {
        ':pk': usagePk(uuid),
        ':from': `${USAGE_DAY_PREFIX}${from}`,
        // After every region's item of `to` (`day#<to>#<region>`): U+FFFF sorts after any of them.
        ':to': `${USAGE_DAY_PREFIX}${to}#\uffff`,
      },
      ...(dayOnly
        ? {
            ProjectionExpression: DAY_ATTRS.map((_, i) => `#a${i}`).join(', '),
            ExpressionAttributeNames: Object.fromEntries(DAY_ATTRS.map((a, i) => [`#a${i}`, a])),
          }
        : {}),
      // The month total (the quota check) reads eventually consistent: half the cost, and the
      // figures are a flush old anyway; the relay adds what it wrote itself (identity-limits.ts).
      ConsistentRead: !dayOnly,
    });
  }

  /** Today, this month, the last USAGE_DAYS days and today's hours: one Query. */
  async of(uuid: string, nowMs: number = Date.now()): Promise<IdentityUsage> {
    const today = usageDay(nowMs);
    const month = usageMonth(nowMs);
    const first = usageDay(nowMs - (USAGE_DAYS - 1) * DAY_MS);
    // The month can begin a day before the 30 days do (the 31st of a 31-day month).
    const from = first < `${month}-01` ? first : `${month}-01`;
    const items = await this.days(uuid, from, today);
    // Each day's items (one per region that had usage), by day.
    const byDay = new Map<string, Item[]>();
    for (const item of items) {
      const day = String(item.sk).slice(USAGE_DAY_PREFIX.length, USAGE_DAY_PREFIX.length + 10);
      byDay.set(day, [...(byDay.get(day) ?? []), item]);
    }
    const sum = (list: Item[] | undefined, hour?: number): UsageTotals =>
      (list ?? []).reduce<UsageTotals>((t, item) => addInto(t, totalsOf(item, hour)), emptyTotals());
    const monthTotals = emptyTotals();
    for (const [day, list] of byDay) if (day.startsWith(month)) addInto(monthTotals, sum(list));
    const days = Array.from({ length: USAGE_DAYS }, (_, k) => {
      const day = usageDay(nowMs - (USAGE_DAYS - 1 - k) * DAY_MS);
      return { day, totals: sum(byDay.get(day)) };
    });
    const todayItems = byDay.get(today);
    const hours: IdentityUsage['hours'] = [];
    for (let h = 0; todayItems && h < 24; h++) {
      const totals = sum(todayItems, h);
      if (protocols.some((p) => counters.some((c) => totals[p][c] !== 0))) hours.push({ hour: h, totals });
    }
    return { today: sum(todayItems), month: monthTotals, days, hours };
  }

  /**
   * Bytes both ways over both protocols this UTC month (what a quota counts): one Query of the
   * month's day items (at most 31 per region with usage, under 2 KB each: ≤ 16 read
   * units per such region at a busy month's end).
   */
  async monthBytes(uuid: string, nowMs: number = Date.now()): Promise<number> {
    const month = usageMonth(nowMs);
    const items = await this.days(uuid, `${month}-01`, `${month}-31`, true);
    return items.reduce((sum, item) => sum + totalBytes(totalsOf(item)), 0);
  }

  /**
   * Every uuid with usage in `month` (YYYY-MM, default this month), by bytes, largest first (ties
   * by uuid). COST: a paged Scan of the WHOLE table (a Scan reads every item, and is billed for
   * every item read, whatever the filter keeps) — eventually consistent, so one read unit per 8 KB
   * of table. For an operator's occasional listing (CLI, console), never for a request path.
   */
  async ranking(month: string = usageMonth(Date.now())): Promise<UsageRankEntry[]> {
    checkMonth(month);
    const items = await this.table.scanAll({
      FilterExpression: 'begins_with(pk, :usage) AND begins_with(sk, :month)',
      ExpressionAttributeValues: { ':usage': usagePk(''), ':month': `${USAGE_DAY_PREFIX}${month}-` },
      ProjectionExpression: ['pk', ...DAY_ATTRS.map((_, i) => `#a${i}`)].join(', '),
      ExpressionAttributeNames: Object.fromEntries(DAY_ATTRS.map((a, i) => [`#a${i}`, a])),
    });
    const byUuid = new Map<string, UsageTotals>();
    for (const item of items) {
      const uuid = String(item.pk).slice(usagePk('').length);
      byUuid.set(uuid, addInto(byUuid.get(uuid) ?? emptyTotals(), totalsOf(item)));
    }
    return [...byUuid]
      .map(([uuid, totals]) => ({ uuid, month: totals }))
      .sort((a, b) => totalBytes(b.month) - totalBytes(a.month) || (a.uuid < b.uuid ? -1 : 1));
  }
}
