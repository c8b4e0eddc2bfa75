/** Polling helpers for tests that watch a running service from outside. */

/** Resolves once `cond` holds; fails naming `what` after `ms`. */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  ms: number,
  what = 'condition',
): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sockets a relay reports parked on its `/healthz` (0 when it does not answer). */
export async function parkedOnHealth(healthPort: number): Promise<number> {
  try {
    const res = await fetch(`http://127.0.0.1:${healthPort}/healthz`, { signal: AbortSignal.timeout(1_000) });
    return ((await res.json()) as { parked: number }).parked;
  } catch {
    return 0;
  }
}
