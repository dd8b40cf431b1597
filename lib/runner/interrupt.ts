/**
 * Ctrl-C for long runs: the first SIGINT (or SIGTERM) aborts the returned signal, so the grid starts nothing new and
 * records what finishes; a second one exits at once (130). Finished rows are already committed either way.
 */
export function abortOnInterrupt(onFirst?: () => void): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const handler = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) process.exit(130);
    onFirst?.();
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
