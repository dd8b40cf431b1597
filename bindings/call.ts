/**
 * Runs a native call that returns a Promise, wiring an AbortSignal to the kernel's cancel flag and giving a
 * rejected error the caller's stack (the native error is created on the event loop, with no useful stack).
 */

export interface CallOptions {
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export type NativeStart<T> = (cancelFlag: Int32Array, onProgress: ((done: number, total: number) => void) | undefined) => Promise<T>;

export async function callKernel<T>(start: NativeStart<T>, opts: CallOptions = {}, caller?: Function): Promise<T> {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, caller ?? callKernel);
  const { signal, onProgress } = opts;
  if (signal?.aborted) throw abortError();
  const cancelFlag = new Int32Array(new SharedArrayBuffer(4));
  const onAbort = (): void => {
    Atomics.store(cancelFlag, 0, 1);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await start(cancelFlag, onProgress);
  } catch (err) {
    if (err instanceof Error && holder.stack) {
      const frames = holder.stack.split('\n').slice(1).join('\n');
      err.stack = `${err.name}: ${err.message}\n${frames}`;
    }
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

export function abortError(): Error & { code: string } {
  const err = new Error('The operation was aborted') as Error & { code: string };
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  return err;
}
