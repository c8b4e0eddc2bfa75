/**
 * Where a relay's records go: stdout, written asynchronously and in batches. Node makes stdout
 * synchronous when it is a pipe (a container's stdout) or a file, so each record (one per
 * rendezvous) was a write(2) of its own on the relay's only thread, which blocks while the pipe's
 * reader lags. Here the records of one turn of the event loop go out in one write, and a pipe is
 * switched to non-blocking: what it cannot take at once is queued by libuv and written as the
 * reader drains it, while the relay goes on pairing. (A thread-pool writer such as pino's
 * SonicBoom was tried first: each fs.write costs more on the main thread than the pipe write it
 * replaces, see docs/performance.md.) A file stays synchronous: a disk does not wait for a reader.
 *
 * Bounded: past MAX_QUEUED bytes waiting for a stalled reader, records are dropped and counted; the
 * next record written says how many (`dropped`).
 *
 * What is lost when: nothing at a clean stop (`flush()` before the drain's `process.exit`, and
 * at exit what is still queued is written synchronously). At a crash that skips exit handlers
 * (SIGKILL, the OOM killer, a native abort), the records of the current event-loop turn and
 * whatever the pipe had not taken yet (at most MAX_QUEUED bytes, normally none).
 */
import { writeSync } from 'node:fs';
import type { LineSink } from '../core/log.js';

/** Bytes queued for a stalled log reader before records are dropped. */
export const MAX_QUEUED = 16 * 1024 * 1024;

/** A line sink that batches per event-loop turn and never blocks on its reader. */
export interface AsyncSink extends LineSink {
  /** Resolves once everything written so far has reached the pipe (or file). */
  flush(): Promise<void>;
}

/** The relay's stdout as an asynchronous, batched line sink. */
export function stdoutSink(out: NodeJS.WriteStream = process.stdout): AsyncSink {
  const handle = (out as unknown as { _handle?: { setBlocking?: (on: boolean) => number } })._handle;
  // A pipe (or socket): non-blocking. A file or a terminal keeps Node's synchronous writes.
  handle?.setBlocking?.(false);
  let pending = '';
  let scheduled = false;
  let dropped = 0;
  const flushTurn = () => {
    scheduled = false;
    if (!pending) return;
    const text = pending;
    pending = '';
    out.write(text);
  };
  // At exit nothing more is written asynchronously: what is queued goes out synchronously.
  process.once('exit', () => {
    if (!pending) return;
    try {
      handle?.setBlocking?.(true);
      writeSync(1, pending);
    } catch {
      // The pipe is gone: nothing more can be written.
    }
  });
  return {
    write(line: string) {
      if (out.writableLength + pending.length > MAX_QUEUED) {
        dropped++;
        return;
      }
      if (dropped > 0) {
        pending += `{"time":"${new Date().toISOString()}","level":"WARN","service":"relay","msg":"log records dropped","dropped":${dropped}}\n`;
        dropped = 0;
      }
      pending += line;
      if (!scheduled) {
        scheduled = true;
        setImmediate(flushTurn);
      }
    },
    flush() {
      flushTurn();
      if (out.writableLength === 0) return Promise.resolve();
      return new Promise((resolve) => out.write('', () => resolve()));
    },
  };
}
