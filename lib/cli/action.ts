/**
 * Wraps a command's action: input and argument errors (codes ERR_IMIAD_*, TypeError, RangeError) print one clear
 * line and exit with code 2; anything else prints the error and exits with 1.
 */

import { abortOnInterrupt } from '../runner/interrupt';

/**
 * Runs long work that Ctrl-C may stop cleanly (the signal is aborted; a second Ctrl-C exits at once): the result,
 * or null after an interruption, with "interrupted" on stderr and exit code 130.
 */
export async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T | null> {
  const interrupt = abortOnInterrupt();
  try {
    return await work(interrupt.signal);
  } catch (err) {
    if (!interrupt.signal.aborted) throw err;
    process.stderr.write('\nimiad: interrupted\n');
    process.exitCode = 130;
    return null;
  } finally {
    interrupt.dispose();
  }
}

export function isUserError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as Error & { code?: unknown }).code;
  return (typeof code === 'string' && code.startsWith('ERR_IMIAD_')) || err instanceof TypeError || err instanceof RangeError;
}

export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (isUserError(err)) {
        process.stderr.write(`imiad: ${message}\n`);
        process.exitCode = 2;
      } else {
        process.stderr.write(`imiad: ${err instanceof Error && err.stack ? err.stack : message}\n`);
        process.exitCode = 1;
      }
    }
  };
}
