/**
 * A global table in miniature: two dynalite stores and a replicator that copies every change
 * (puts and deletes) from each to the other after `delayMs` — the replication lag during which a
 * conditional write in one region does not see a write made in the other. Last writer wins, as
 * with DynamoDB global tables. Test code only.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, DynamoDBDocumentClient, PutCommand, ScanCommand } from '@aws-sdk/lib-dynamodb';

type Item = Record<string, unknown>;

interface Side {
  doc: DynamoDBDocumentClient;
  raw: DynamoDBClient;
  /** What this side held at the last scan (or after our own replicated write), by key. */
  seen: Map<string, string>;
}

/** A running replicator. */
export interface Replicator {
  /** Resolves once every change made so far has reached the other side. */
  settle(): Promise<void>;
  stop(): Promise<void>;
}

const keyOf = (item: Item) => `${item.pk}\u0000${item.sk}`;

/** Starts replicating between two tables of the same name on two endpoints. */
export function startReplicator(
  table: string,
  endpoints: [string, string],
  delayMs: number,
  pollMs = 20,
): Replicator {
  const sides: Side[] = endpoints.map((endpoint) => {
    const raw = new DynamoDBClient({
      endpoint,
      region: 'local',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    });
    return { raw, doc: DynamoDBDocumentClient.from(raw), seen: new Map() };
  });
  // Changes waiting out the lag: [due time, target side, key, item or undefined for a delete].
  const queue: Array<{ due: number; to: number; key: string; item: Item | undefined }> = [];
  let stopped = false;
  let idleSince = 0;

  const scan = async (side: Side): Promise<Map<string, Item>> => {
    const out = new Map<string, Item>();
    let start: Item | undefined;
    do {
      const page = await side.doc.send(
        new ScanCommand({ TableName: table, ExclusiveStartKey: start, ConsistentRead: true }),
      );
      for (const item of page.Items ?? []) out.set(keyOf(item), item);
      start = page.LastEvaluatedKey;
    } while (start);
    return out;
  };

  // One loop does everything, so a scan never races with a replicated write of ours.
  const loop = (async () => {
    while (!stopped) {
      const now = Date.now();
      while (queue.length > 0 && (queue[0]?.due ?? Infinity) <= now) {
        const c = queue.shift() as (typeof queue)[number];
        const side = sides[c.to] as Side;
        if (c.item) {
          side.seen.set(c.key, JSON.stringify(c.item));
          await side.doc.send(new PutCommand({ TableName: table, Item: c.item }));
        } else {
          side.seen.delete(c.key);
          const [pk, sk] = c.key.split('\u0000');
          await side.doc.send(new DeleteCommand({ TableName: table, Key: { pk, sk } }));
        }
      }
      for (const [i, side] of sides.entries()) {
        const items = await scan(side).catch(() => undefined);
        if (!items) continue;
        for (const [key, item] of items) {
          const json = JSON.stringify(item);
          if (side.seen.get(key) === json) continue;
          side.seen.set(key, json);
          queue.push({ due: Date.now() + delayMs, to: 1 - i, key, item });
        }
        for (const key of [...side.seen.keys()]) {
          if (items.has(key)) continue;
          side.seen.delete(key);
          queue.push({ due: Date.now() + delayMs, to: 1 - i, key, item: undefined });
        }
      }
      if (queue.length > 0) idleSince = 0;
      else idleSince ||= Date.now();
      await new Promise((r) => setTimeout(r, pollMs));
    }
  })();

  return {
    async settle() {
      // Quiet for a few polls: every change seen and delivered, nothing new since.
      for (;;) {
        await new Promise((r) => setTimeout(r, pollMs * 2));
        if (queue.length === 0 && idleSince && Date.now() - idleSince > pollMs * 5) return;
      }
    },
    async stop() {
      stopped = true;
      await loop.catch(() => undefined);
      for (const s of sides) s.raw.destroy();
    },
  };
}
