/**
 * Where a relay's records go: stdout, written asynchronously. Node writes `process.stdout` to files
 * and pipes synchronously on Linux, so each record (one per rendezvous) was a blocking write(2) on
 * the relay's only thread; a container's stdout is a pipe. SonicBoom (pino's destination) queues
 * lines while a write is in flight on libuv's thread pool and writes them together, so a burst of
 * rendezvous costs a few writes and never waits for the pipe's reader.
 *
 * What is lost when: nothing at a clean stop (drain, then `process.exit`: the queue is written
 * synchronously in the exit handler, as it is on an uncaught exception, which also ends in exit);
 * at a crash that skips exit handlers (SIGKILL, the kernel's OOM killer, a native abort) the lines
 * still queued, at most the records of the last few milliseconds (what accumulated while one write
 * was in flight).
 */
import sonicBoom from 'sonic-boom';
import type { LineSink } from '../core/log.js';

// A CommonJS package: Node's ESM loader gives its module.exports as the default export.
const { SonicBoom } = sonicBoom;

/** An asynchronous line sink on stdout, flushed synchronously when the process exits. */
export function stdoutSink(): LineSink & { flushSync(): void } {
  const out = new SonicBoom({ fd: 1, sync: false, minLength: 0 });
  // A closed log pipe must not take the relay (and every splice on it) down: records are dropped.
  out.on('error', () => {});
  const flushSync = () => {
    try {
      out.flushSync();
    } catch {
      // The pipe is gone or full for good: nothing more can be written.
    }
  };
  process.once('exit', flushSync);
  return { write: (line) => out.write(line), flushSync };
}
