/**
 * The grid's coordinator on a BullMQ queue: enqueues every experiment the results store does not hold as a job whose
 * id is the experiment key (so enqueuing twice, or from a restarted coordinator, never duplicates work), follows
 * the jobs until each is finished or failed, and writes every finished result into the store itself: the store
 * keeps one writer and stays the source of the report. A restarted coordinator collects what finished meanwhile,
 * retries what had failed (as a rerun of the local grid does) and waits for the rest. When Redis goes away it waits
 * and, once Redis is back, enqueues its unfinished experiments again (a no-op for jobs Redis kept; the jobs of a
 * Redis that lost its data are queued anew).
 */
import * as fs from 'fs';
import * as path from 'path';

import { Queue, type Job } from 'bullmq';

import { describeExperiment, resultRow, type GridSummary } from '../runner/grid';
import type { ResultsStore } from '../runner/store';
import type { Experiment, ResultRow } from '../runner/types';
import { version as codeVersion } from '../version';
import { authError, isAuthError, isConnectionError, QUEUE_PREFIX, waitForRedis, type QueueAddress } from './connection';
import { JOB_NAME, jobOf, validateOutcome, type JobOutcome } from './jobs';
import type { JobProgress } from './worker';

export const DEFAULT_RETRIES = 2;
/**
 * How often the coordinator looks at the queue. Polling, not QueueEvents: workers never wait for the coordinator,
 * so this only delays when a result is stored, and QueueEvents cannot be closed while Redis is unreachable.
 */
const POLL_MS = 250;
/**
 * How often the coordinator queues its unfinished experiments again (a no-op for the jobs Redis holds) and drops
 * those its store received from elsewhere (another coordinator on the same store): a job lost with a Redis that
 * restarted without its data, or removed by another coordinator on the same queue, is queued anew.
 */
const RECONCILE_MS = 30_000;
/** Jobs per addBulk call. */
const ENQUEUE_CHUNK = 500;

export interface QueueGridState {
  /** Stored by this run. */
  done: number;
  running: number;
  failed: number;
  /** Queued, delayed for a retry, or not yet seen by a worker. */
  waiting: number;
  total: number;
  /** Running experiments per worker name. */
  workers: { [name: string]: number };
}

export interface QueueGridSummary extends GridSummary {
  failed: { key: string; experiment: string; error: string; attempts: number }[];
}

export interface QueueGridOptions {
  /** Retries of a failing job after its first attempt (default 2). */
  retries?: number;
  /** Stops following the jobs (they stay queued; a new coordinator collects them). */
  signal?: AbortSignal;
  version?: string;
  onUpdate?: (state: QueueGridState) => void;
  onFinished?: (experiment: Experiment, row: ResultRow) => void;
  onFailed?: (experiment: Experiment, error: string, attempts: number) => void;
  /** Redis lost ('lost', with the reason) or reachable again ('back'). */
  onConnection?: (event: 'lost' | 'back', detail: string) => void;
}

/** Writes a file through a temporary sibling and a rename: a reader never sees half of it. */
function writeAtomic(file: string, data: Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, file);
}

export async function runQueuedGrid(experiments: Experiment[], store: ResultsStore, address: QueueAddress, opts: QueueGridOptions = {}): Promise<QueueGridSummary> {
  const retries = opts.retries ?? DEFAULT_RETRIES;
  if (!Number.isInteger(retries) || retries < 0) throw new RangeError(`Expected a non-negative integer for retries but received ${retries} of type ${typeof retries}`);
  const version = opts.version ?? codeVersion;
  const stored = store.keys();
  const ours = new Map<string, Experiment>();
  const pending = new Map<string, Experiment>();
  let skipped = 0;
  for (const e of experiments) {
    if (ours.has(e.key)) continue;
    ours.set(e.key, e);
    if (stored.has(e.key)) skipped++;
    else pending.set(e.key, e);
  }
  const total = pending.size;
  const summary: QueueGridSummary = { skipped, done: 0, failed: [], notRun: 0, aborted: false };
  const signal = opts.signal ?? new AbortController().signal;

  opts.onUpdate?.({ done: 0, running: 0, failed: 0, waiting: total, total, workers: {} });
  let waited = false;
  const onLost = (reason: string): void => {
    waited = true;
    opts.onConnection?.('lost', reason);
  };
  if (total === 0) return summary;
  if (!(await waitForRedis(address, { signal, onLost }))) return { ...summary, aborted: true, notRun: total };
  if (waited) opts.onConnection?.('back', address.display);
  const queue = new Queue(address.name, { connection: address.redis, prefix: QUEUE_PREFIX });
  let wake: () => void = () => undefined;
  const nudge = (): void => wake();
  // Stops the waiting below on Ctrl-C or on a refusal of the credentials (commands wait for ever otherwise).
  let stop: () => void = () => undefined;
  const stopped = new Promise<'stopped'>((resolve) => (stop = () => resolve('stopped')));
  if (signal.aborted) stop();
  signal.addEventListener(
    'abort',
    () => {
      stop();
      nudge();
    },
    { once: true },
  );
  let lost: string | null = null;
  let enqueueAgain = false;
  let fatal: Error | null = null;
  const onError = (err: Error): void => {
    if (isAuthError(err)) {
      fatal = authError(address, err);
      stop();
      nudge();
      return;
    }
    if (lost === null) opts.onConnection?.('lost', err.message);
    lost = err.message;
    enqueueAgain = true;
  };
  queue.on('error', onError);
  // A Redis that shuts down cleanly closes the connection without an error.
  queue.on('ioredis:close', () => {
    if (lost === null) opts.onConnection?.('lost', 'connection closed');
    lost ??= 'connection closed';
    enqueueAgain = true;
  });

  const enqueue = async (keys: string[]): Promise<void> => {
    for (let i = 0; i < keys.length; i += ENQUEUE_CHUNK) {
      await queue.addBulk(
        keys.slice(i, i + ENQUEUE_CHUNK).map((key) => ({
          name: JOB_NAME,
          data: jobOf(pending.get(key)!, version),
          opts: { jobId: key, attempts: retries + 1, backoff: { type: 'exponential', delay: 1000 } },
        })),
      );
    }
  };

  const collect = async (job: Job): Promise<void> => {
    const key = job.id as string;
    const experiment = pending.get(key)!;
    let outcome: JobOutcome;
    try {
      outcome = validateOutcome(job.returnvalue, key);
    } catch (err) {
      pending.delete(key);
      fail(experiment, (err as Error).message, job.attemptsMade);
      // Removed, so that a rerun of the coordinator queues the experiment again.
      await job.remove();
      return;
    }
    const dir = store.heatmapDir(key);
    if (Object.keys(outcome.heatmapFiles).length) fs.mkdirSync(dir, { recursive: true });
    for (const [file, data] of Object.entries(outcome.heatmapFiles)) writeAtomic(path.join(dir, file), Buffer.from(data, 'base64'));
    const row = resultRow(experiment, outcome.result, new Date(outcome.startedAt), new Date(outcome.finishedAt), outcome.machine, version);
    store.insert(row);
    pending.delete(key);
    summary.done++;
    opts.onFinished?.(experiment, row);
    await job.remove();
  };

  const fail = (experiment: Experiment, error: string, attempts: number): void => {
    summary.failed.push({ key: experiment.key, experiment: describeExperiment(experiment.config), error, attempts });
    opts.onFailed?.(experiment, error, attempts);
  };

  /** One look at the queue: collects finished jobs, records failed ones, counts the running ones. */
  const sweep = async (): Promise<QueueGridState> => {
    for (const job of await queue.getJobs(['completed'])) {
      if (!job?.id || !ours.has(job.id)) continue;
      if (pending.has(job.id)) await collect(job);
      // Stored by an earlier coordinator that stopped before removing the job.
      else if (store.has(job.id)) await job.remove();
    }
    for (const job of await queue.getJobs(['failed'])) {
      if (!job?.id || !pending.has(job.id)) continue;
      const experiment = pending.get(job.id)!;
      pending.delete(job.id);
      fail(experiment, job.failedReason, job.attemptsMade);
    }
    const workers: { [name: string]: number } = {};
    let running = 0;
    for (const job of await queue.getJobs(['active'])) {
      if (!job?.id || !pending.has(job.id)) continue;
      running++;
      const name = job.processedBy ?? (job.progress as Partial<JobProgress> | undefined)?.worker ?? '?';
      workers[name] = (workers[name] ?? 0) + 1;
    }
    return { done: summary.done, running, failed: summary.failed.length, waiting: pending.size - running, total, workers };
  };

  const untilStopped = async <T>(work: Promise<T>): Promise<T | 'stopped'> => {
    work.catch(() => undefined);
    return Promise.race([work, stopped]);
  };
  const pause = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });

  try {
    let start = true;
    let reconciled = Date.now();
    while (pending.size > 0 && !signal.aborted && !fatal) {
      if (Date.now() - reconciled > RECONCILE_MS) {
        reconciled = Date.now();
        const nowStored = store.keys();
        for (const key of [...pending.keys()]) {
          if (nowStored.has(key)) {
            pending.delete(key);
            summary.skipped++;
          }
        }
        enqueueAgain = true;
      }
      try {
        if (start) {
          // Failed jobs of an earlier run are tried again, with their full number of attempts; then the rest is
          // queued (jobs that exist already are left as they are).
          const retried = await untilStopped(
            (async () => {
              for (const job of await queue.getJobs(['failed'])) {
                if (job?.id && pending.has(job.id)) await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
              }
            })(),
          );
          if (retried === 'stopped') break;
        }
        if (start || enqueueAgain) {
          enqueueAgain = false;
          if ((await untilStopped(enqueue([...pending.keys()]))) === 'stopped') break;
          start = false;
        }
        const state = await untilStopped(sweep());
        if (state === 'stopped') break;
        if (lost !== null) {
          lost = null;
          opts.onConnection?.('back', address.display);
        }
        opts.onUpdate?.(state);
      } catch (err) {
        if (isAuthError(err)) onError(err as Error);
        else if (isConnectionError(err)) onError(err as Error);
        else throw err;
      }
      if (pending.size > 0) await pause(POLL_MS);
    }
    if (fatal) throw fatal;
  } finally {
    await queue.close().catch(() => undefined);
  }
  summary.aborted = signal.aborted;
  summary.notRun = pending.size;
  return summary;
}
