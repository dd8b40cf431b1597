/**
 * `imiad grid CONFIG --queue redis://HOST:PORT[/DB] [--queue-name NAME] [--retries N]`: the grid's coordinator
 * (lib/queue/coordinator.ts) on the command line: one progress line (stored / running, with the workers' names /
 * failed / waiting), the failures as they come, and the summary of the local grid. docs/grid-queue.md.
 */
import { imiadError, invalidType } from '../../bindings/errors';
import { DEFAULT_QUEUE_NAME, parseQueueUrl, type QueueAddress } from '../queue/connection';
import type { QueueGridState } from '../queue/coordinator';
import { describeExperiment } from '../runner/grid';
import { abortOnInterrupt } from '../runner/interrupt';
import type { ResultsStore } from '../runner/store';
import type { Experiment } from '../runner/types';
import { progress } from './progress';

export interface QueueFlags {
  queue?: string;
  queueName?: string;
  retries?: string;
  concurrency?: string;
}

/** A queued grid's settings from the flags, checked before the grid is expanded. */
export interface QueueRun {
  address: QueueAddress;
  retries?: number;
}

/**
 * The queue settings of `imiad grid` (null without --queue); rejects flags that do not apply to a queued grid, or
 * need one: nothing is silently ignored.
 */
export function queueRunOf(flags: QueueFlags): QueueRun | null {
  if (flags.queue === undefined) {
    for (const [f, name] of [['queueName', '--queue-name'], ['retries', '--retries']] as const) {
      if (flags[f] !== undefined) throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', `${name} applies to a queued grid only (add --queue redis://HOST:PORT/DB)`);
    }
    return null;
  }
  if (flags.concurrency !== undefined) {
    throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', '--concurrency applies to the local grid; with --queue each worker sets its own (imiad worker --concurrency N)');
  }
  const address = parseQueueUrl(flags.queue, { name: flags.queueName });
  let retries: number | undefined;
  if (flags.retries !== undefined) {
    retries = Number(flags.retries);
    if (flags.retries.trim() === '' || !Number.isInteger(retries) || retries < 0) throw invalidType('a non-negative integer', '--retries', flags.retries);
  }
  return { address, retries };
}

/** The detail of the progress line: `3 running (box1: 2, box2: 1), 1 failed, 8 waiting`. */
export function queueDetail(s: QueueGridState): string {
  const names = Object.entries(s.workers)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, n]) => `${name}: ${n}`)
    .join(', ');
  return `(${s.running} running${names ? ` on ${names}` : ''}, ${s.failed} failed, ${s.waiting} waiting)`;
}

/** What a queued grid did: the summary (as the JSON output's `summary`) and its one line for the terminal. */
export interface QueuedGridOutcome {
  failed: number;
  aborted: boolean;
  summary: object;
  text: string;
}

export async function coordinateGrid(experiments: Experiment[], store: ResultsStore, run: QueueRun): Promise<QueuedGridOutcome> {
  const { address, retries } = run;
  // BullMQ loads only for a queued grid (a few hundred ms that every other command would pay).
  const { runQueuedGrid } = await import('../queue/coordinator');
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  log(`imiad grid: queueing on ${address.display} (queue ${address.name}); workers: imiad worker --queue URL${address.name === DEFAULT_QUEUE_NAME ? '' : ` --queue-name ${address.name}`}`);
  const interrupt = abortOnInterrupt(() => log('\nimiad grid: stopping; the queued experiments stay queued and running ones finish (run the same command again to collect them)'));
  let bar: ReturnType<typeof progress> | undefined;
  try {
    const summary = await runQueuedGrid(experiments, store, address, {
      retries,
      signal: interrupt.signal,
      onUpdate: (s) => {
        bar ??= progress('grid', s.total);
        bar.update(s.done + s.failed, s.total, queueDetail(s));
      },
      onFailed: (e, error, attempts) => log(`\nimiad grid: ${describeExperiment(e.config)} failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${error}`),
      onConnection: (event, detail) => log(event === 'lost' ? `\nimiad grid: lost Redis at ${address.display} (${detail}); waiting for it to come back` : `\nimiad grid: connected to ${address.display} again`),
    });
    const text = `${summary.done} experiments run, ${summary.skipped} already stored, ${summary.failed.length} failed${summary.aborted ? `, ${summary.notRun} not finished (the same command again collects them)` : ''}`;
    bar?.done(text);
    return {
      failed: summary.failed.length,
      aborted: summary.aborted,
      summary: { store: store.file, queue: address.display, queueName: address.name, ...summary },
      text,
    };
  } finally {
    interrupt.dispose();
  }
}
