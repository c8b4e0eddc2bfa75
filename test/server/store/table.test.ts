/** Table access: the one paging loop reads every page, and a failed condition is the caller's. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStoreServer } from '../../../local/store-server.js';
import { isConditionFailed, Table } from '../../../server/store/table.js';

let server: Awaited<ReturnType<typeof startStoreServer>>;
let table: Table;

beforeAll(async () => {
  server = await startStoreServer({ port: 0 });
  table = new Table({ table: 'table-test', endpoint: server.endpoint, region: 'local' });
  await table.ensureTable();
  for (let i = 0; i < 5; i++) await table.put({ Item: { pk: 'P', sk: `S${i}`, n: i } });
});

afterAll(async () => {
  table.close();
  await server.close();
});

describe('the paging loop', () => {
  it('a query returns every page, not only the first', async () => {
    const items = await table.queryAll({
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': 'P' },
      Limit: 2,
    });
    expect(items.map((i) => i.n)).toEqual([0, 1, 2, 3, 4]);
    const first = await table.queryPage({
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': 'P' },
      Limit: 2,
    });
    expect(first).toHaveLength(2);
  });

  it('a scan returns every page too', async () => {
    const items = await table.scanAll({ Limit: 2 });
    expect(items.map((i) => i.n).sort()).toEqual([0, 1, 2, 3, 4]);
  });
});

describe('conditional writes', () => {
  it('a failed condition leaves as itself, for the caller to decide on', async () => {
    const err = await table
      .put({ Item: { pk: 'P', sk: 'S0' }, ConditionExpression: 'attribute_not_exists(pk)' })
      .catch((e: unknown) => e);
    expect(isConditionFailed(err)).toBe(true);
  });

  it('get returns an item without its keys', async () => {
    expect(await table.get('P', 'S3')).toEqual({ n: 3 });
    expect(await table.get('P', 'missing')).toBeUndefined();
  });
});
