/**
 * The bandwidth group of `npm run bench` (`--only bandwidth`): what the per-identity bandwidth
 * cap (issue 30, relay/bandwidth.ts) costs a relay, as relay CPU per GiB carried mobile → hidden
 * in one rendezvous, three identities on the same relay process, interleaved run by run:
 *
 *   - no cap: no throttle in the splice at all (the baseline);
 *   - a slack cap (8 GB/s, never reached): the throttles and the bucket in the path, never waiting;
 *   - a binding cap (200 MiB/s): the bucket holds every slice back and wakes on a timer.
 */
import type { GroupContext } from './harness.js';
import { spliceRun } from './metering.js';
import { registerCookie, type Service, startRelayProcess } from './service.js';

const CASES = [
  { label: 'no cap', bytesPerSecond: undefined },
  { label: 'slack cap (8 GB/s)', bytesPerSecond: 8e9 },
  { label: 'binding cap (200 MiB/s)', bytesPerSecond: 200 * 1024 * 1024 },
] as const;

/** The bandwidth group. */
export async function benchBandwidth(ctx: GroupContext, service: Service): Promise<void> {
  const relay = await startRelayProcess(service);
  const cookies: string[] = [];
  for (const [k, c] of CASES.entries()) {
    const uuid = `bench-bandwidth-${k}-${Date.now()}`;
    cookies.push(await registerCookie(service, uuid));
    if (c.bytesPerSecond) await service.store.setLimits(uuid, { bytesPerSecond: c.bytesPerSecond });
  }
  const bytes = (ctx.quick ? 256 : 1024) * 1024 * 1024;
  // Warm-up: JIT compilation is no throttle cost.
  for (const [k] of CASES.entries()) await spliceRun(relay, cookies[k] as string, 64 * 1024 * 1024);
  const gib: number[][] = CASES.map(() => []);
  const loadavg: number[] = [];
  for (let r = 0; r < ctx.runs && ctx.timeLeft(); r++) {
    loadavg.push(Number((await import('node:os')).loadavg()[0]));
    // Interleaved, the order rotating, so drift in the machine's load hits every case alike.
    for (let j = 0; j < CASES.length; j++) {
      const k = (r + j) % CASES.length;
      const s = await spliceRun(relay, cookies[k] as string, bytes);
      gib[k]?.push((s * 1024 ** 3) / bytes);
    }
  }
  for (const [k, c] of CASES.entries())
    ctx.add(`bandwidth: ${c.label}, relay CPU per GiB`, gib[k] ?? [], 's');
  const base = gib[0] ?? [];
  for (const [k, c] of CASES.entries())
    if (k > 0)
      ctx.add(
        `bandwidth: ${c.label} / no cap, CPU per GiB`,
        (gib[k] ?? []).map((x, i) => x / (base[i] as number)),
        '×',
      );
  ctx.add('bandwidth: machine load (1-min load average) during the runs', loadavg, '');
  relay.child.kill('SIGTERM');
}
