/**
 * `rendezvous connect` on stdin/stdout (an ssh ProxyCommand, a shell pipe): copies both ways with
 * backpressure and propagates each half-close on its own. The far side's end closes our stdout
 * after the data in flight (the application reading it sees EOF at once); the end of stdin
 * half-closes the rendezvous. The process exits when both directions are done, or at once with a
 * message on stderr when the far side fails.
 */
import { closeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { printable } from '../core/printable.js';

/** Why a far side that failed before sending a byte most likely failed (the agent logs the rest). */
export const EMPTY_RESET_HINT =
  'the hidden server ended the connection before sending anything: its target is probably down or refusing (the agent on the hidden server logs why)';

/** How long an end with nothing received waits for a reset that would explain it. */
const EMPTY_END_GRACE_MS = 250;

/** Bridges `socket` and this process's stdin/stdout; resolves with the exit code when both are done. */
export function bridgeStdio(
  socket: Socket,
  io: { stdin?: NodeJS.ReadStream; stdout?: NodeJS.WriteStream; stderr?: NodeJS.WritableStream } = {},
): Promise<number> {
  const stdin = io.stdin ?? process.stdin;
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  return new Promise((resolve) => {
    let received = 0;
    let failure: string | undefined;
    let stdoutClosed: Promise<void> | undefined;

    // Far side → stdout, paused while stdout is full.
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (!stdout.write(chunk)) socket.pause();
    });
    stdout.on('drain', () => socket.resume());
    // The reader went away (EPIPE): nobody is left to read the far side; end the rendezvous.
    stdout.on('error', () => socket.destroy());
    // Far side ended its direction: once stdout has taken every byte, close it so the reader
    // (ssh, a pipe) sees EOF now; stdin may still have data for the far side.
    socket.on('end', () => {
      stdoutClosed = new Promise((done) =>
        stdout.write('', async () => {
          // An end before any byte is often the first half of a refusal: the reset that follows
          // carries the reason. Closing stdout at once let ssh exit and kill this process before
          // it could say why; wait for the socket's close (briefly) so the reason comes first.
          if (received === 0 && !socket.closed)
            await new Promise<void>((closed) => {
              const t = setTimeout(closed, EMPTY_END_GRACE_MS);
              socket.once('close', () => {
                clearTimeout(t);
                setImmediate(closed);
              });
            });
          // process.stdout cannot be end()ed; closing fd 1 is the half-close its reader sees.
          if (stdout === process.stdout) {
            try {
              closeSync(1);
            } catch {
              // already closed: nothing to tell the reader
            }
          } else stdout.end();
          done();
        }),
      );
    });

    // stdin → far side; its end half-closes the rendezvous (pipe ends the socket's write side).
    stdin.pipe(socket);
    stdin.on('error', () => socket.end());

    socket.on('error', (err: NodeJS.ErrnoException) => {
      failure =
        received === 0 && (err.code === 'ECONNRESET' || err.code === 'EPIPE')
          ? EMPTY_RESET_HINT
          : `connection to the hidden server failed: ${err.message}`;
    });
    socket.on('close', () => {
      stdin.unpipe(socket);
      stdin.pause();
      if (failure) {
        stderr.write(`rendezvous: ${printable(failure)}\n`);
        return resolve(1);
      }
      // Exit once the last byte is out (stdout may be a pipe whose writes are asynchronous).
      if (stdoutClosed) void stdoutClosed.then(() => resolve(0));
      else stdout.write('', () => resolve(0));
    });
  });
}
