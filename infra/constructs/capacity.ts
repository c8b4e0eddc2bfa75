/**
 * How much one relay task holds, and the autoscaling targets derived from it, computed here from
 * measured figures so a change of task size, descriptor limit or measurement moves the targets
 * with it (test/infra/observability.test.ts checks the arithmetic and the template).
 *
 * Inputs (docs/performance.md, "Parked sockets"; docs/capacity.md turns them into fleet sizes):
 *   - a parked socket costs about 2.5 KB of RSS at 10,000 parked after a 500-socket warm-up (the
 *     bundle as deployed: the Dockerfile's node flags and malloc settings; RSS read without a
 *     forced GC, so V8's heap slack is in it) but about 3.9 KB at 15,000 (two runs, after a full
 *     GC too, not yet explained). The sizing takes 4,000 B, the worst measured rounded up;
 *   - filling a relay also grows V8's heap once, by at most about 40 MB;
 *   - an idle relay (the bundle with the Dockerfile's node flags and malloc settings) holds about
 *     64 MiB of RSS (VmRSS 62-65 MB from 5 s to 60 s after start, against a local store);
 *   - the relay keeps FD_HEADROOM_SHARE (20%) of its descriptor limit, and 16 more, away from
 *     client sockets (relay/capacity.ts, from the limit it reads at start), and the task's limit
 *     is RELAY_NOFILE.
 * A live splice holds two sockets (two descriptors) and, at worst, both directions' stream
 * buffers full: a stalled reader keeps up to one high-water mark on the reading side and one on
 * the writing side of each direction (64 KiB each in Node 22), so 4 × 64 KiB per splice.
 *
 * Target = TARGET_SHARE of the smaller of the memory-derived and descriptor-derived capacity:
 * half the capacity is left for what arrives while a new task starts (one-minute metrics, three
 * minutes of target tracking's alarm, about a minute for Fargate to start a task), and because a
 * scale-out only spreads new parks: hidden servers already parked stay on their task.
 */

/**
 * Fargate task size of a relay (vCPU units; 1024 = 1 vCPU). Memory decides how many hidden servers
 * a task holds; the vCPU is for what they do: pairings (a few hundred µs of CPU each), the GC of a
 * heap of several hundred MB at 250,000+ parked (a major collection there is seconds of CPU, and
 * with half a vCPU it would stall pairings behind it), and bulk splices until the CPU target (60%)
 * adds tasks. 2 GiB needs at least 0.5 vCPU on Fargate; 1 vCPU costs about $0.02 an hour more.
 */
export const RELAY_TASK_CPU = 1024;
/**
 * Fargate task memory of a relay, MiB: 2 GiB holds 509,607 parked sockets at 4,000 B each, so the
 * scaling target (half of it) is 254,803 a task, above the 200,000 a task is meant to hold.
 */
export const RELAY_TASK_MEMORY_MIB = 2048;

/**
 * Open-file limit of the relay task (soft = hard): Fargate's largest, 2^20. Every parked socket
 * and both ends of every splice hold a descriptor; at the old 65,536 a task stopped at 52,412
 * client sockets whatever its memory. The relay reads the limit at start (relay/capacity.ts), so
 * its ceiling follows this value; memory now binds first.
 */
export const RELAY_NOFILE = 1_048_576;

/**
 * Share of the descriptor limit the relay keeps for itself (store, health, peers, logs). Must
 * equal relay/capacity.ts FD_HEADROOM_SHARE (a test checks); not imported, so synth does not load
 * the relay and its SDK clients.
 */
export const RELAY_FD_HEADROOM_SHARE = 0.2;
/** Descriptors the relay keeps beyond the share (relay/capacity.ts: `… - 16`). */
export const RELAY_FD_RESERVED = 16;

const MiB = 1024 * 1024;

/** Measured inputs, with where each comes from (see the module comment). */
export const RELAY_MEASURED = {
  /**
   * RSS per parked socket, bytes: the worst the bench measured (about 3.9 KB at 15,000 parked
   * after the warm-up; 2.5 KB at 10,000), rounded up, heap slack included.
   */
  bytesPerParkedSocket: 4_000,
  /** Idle relay RSS, bytes (bundle as the container runs it, rounded up from 62–65 MB). */
  baselineRssBytes: 64 * MiB,
  /** One-time V8 heap growth while a relay fills, bytes (bench: 35–40 MB; the upper end). */
  heapGrowthBytes: 40 * MiB,
  /** Stream buffers a splice may hold: two directions × (read side + write side) × 64 KiB. */
  spliceBufferBytes: 4 * 64 * 1024,
} as const;

/** Share of a task's capacity that autoscaling keeps it at (see the module comment). */
export const TARGET_SHARE = 0.5;
/** Share of a task's capacity past which an alarm fires (the hottest task, not the average). */
export const ALARM_SHARE = 0.8;

/** Bytes of task memory left for sockets once the relay itself and its heap growth are paid. */
export const RELAY_SOCKET_MEMORY_BYTES =
  RELAY_TASK_MEMORY_MIB * MiB - RELAY_MEASURED.baselineRssBytes - RELAY_MEASURED.heapGrowthBytes;

/** Client sockets the relay accepts before it refuses at its descriptor ceiling (relay/capacity.ts). */
export const RELAY_MAX_CLIENT_SOCKETS =
  Math.floor(RELAY_NOFILE * (1 - RELAY_FD_HEADROOM_SHARE)) - RELAY_FD_RESERVED;

/** Bytes one live splice may hold: two sockets and their stream buffers. */
export const BYTES_PER_SPLICE = 2 * RELAY_MEASURED.bytesPerParkedSocket + RELAY_MEASURED.spliceBufferBytes;

/** Parked sockets one task holds: the smaller of the memory and descriptor limits, and which binds. */
export const PARKED_CAPACITY = capacity(
  Math.floor(RELAY_SOCKET_MEMORY_BYTES / RELAY_MEASURED.bytesPerParkedSocket),
  RELAY_MAX_CLIENT_SOCKETS,
);
/** Live splices one task holds (two descriptors each). */
export const SPLICE_CAPACITY = capacity(
  Math.floor(RELAY_SOCKET_MEMORY_BYTES / BYTES_PER_SPLICE),
  Math.floor(RELAY_MAX_CLIENT_SOCKETS / 2),
);

/** Target tracking values (per task) and alarm thresholds (any one task). */
export const RELAY_SCALING = {
  parkedSocketsTarget: Math.floor(PARKED_CAPACITY.value * TARGET_SHARE),
  liveSplicesTarget: Math.floor(SPLICE_CAPACITY.value * TARGET_SHARE),
  parkedSocketsAlarm: Math.floor(PARKED_CAPACITY.value * ALARM_SHARE),
  liveSplicesAlarm: Math.floor(SPLICE_CAPACITY.value * ALARM_SHARE),
  /** CPU stays a guard: splices moving bulk data cost CPU before they cost memory. */
  cpuTargetPercent: 60,
} as const;

/** A capacity and the limit that binds it. */
export interface Capacity {
  value: number;
  byMemory: number;
  byDescriptors: number;
  bound: 'memory' | 'descriptors';
}

function capacity(byMemory: number, byDescriptors: number): Capacity {
  return byMemory <= byDescriptors
    ? { value: byMemory, byMemory, byDescriptors, bound: 'memory' }
    : { value: byDescriptors, byMemory, byDescriptors, bound: 'descriptors' };
}
