/**
 * A grid worker: takes experiment jobs from the BullMQ queue, checks each payload (lib/queue/jobs.ts), rebuilds the
 * experiment from the dataset on this machine exactly as the coordinator's grid expansion did (the same
 * expandGrid, so the same split), runs it with the local grid's executor (createExecutor) and returns the result,
 * with its heatmap PNGs inlined. Everything it writes stays under its work folder: heatmaps/<key>/ per job (removed
 * once sent) and augmented/ (few-shot copies, reused). A payload that is not a well-formed experiment, or whose key
 * does not match its configuration, fails at once (BullMQ's UnrecoverableError: no retries); an experiment that
 * throws is retried by the queue as the coordinator asked.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { UnrecoverableError, Worker, type Job } from 'bullmq';

import { resolveDevice } from '../../bindings/device';
import type { Device } from '../../bindings/validate';
import { cacheDir } from '../backbone/builder';
import { loadDataset } from '../datasets';
import type { Category, DatasetName } from '../datasets/types';
import type { GridConfig } from '../runner/config';
import { createExecutor } from '../runner/executor';
import { describeExperiment, expandGrid, type CategoryLoader } from '../runner/grid';
import { machineDescription } from '../runner/machine';
import type { Experiment, ExperimentExecutor } from '../runner/types';
import { version as codeVersion } from '../version';
import { authError, isAuthError, isConnectionError, QUEUE_PREFIX, waitForRedis, type QueueAddress } from './connection';
import { validateJob, type ExperimentJob, type JobOutcome } from './jobs';

export interface QueueWorkerOptions {
  /** Experiments at a time in this process (default 1). */
  concurrency?: number;
  /** 'cpu' hides any GPU from this process; 'cuda' requires a usable one; 'auto' (default) uses one when present. */
  device?: Device;
  /** Where the worker writes: heatmaps/<key>/ while a job runs, augmented/ for few-shot copies. Default <cache>/worker. */
  workDir?: string;
  /** Shown on the coordinator's progress line and stored as BullMQ's processedBy (default <hostname>-<pid>). */
  name?: string;
  /**
   * Seconds after which the job of a worker that stopped renewing its lock (killed, machine gone) is handed to
   * another worker (BullMQ's lockDuration and stalledInterval; default 30).
   */
  stalledAfterSeconds?: number;
  /** The executor (default createExecutor with this worker's folders); tests and benchmarks may pass another. */
  executor?: ExperimentExecutor;
  /** One line per event (job done, failed, rejected, Redis lost or back). */
  log?: (line: string) => void;
  /** Stops the wait for Redis before the worker starts. */
  signal?: AbortSignal;
}

export interface QueueWorker {
  name: string;
  /** Stops taking jobs and resolves when the running ones have finished (force: at once, they stall). */
  close(force?: boolean): Promise<void>;
  /** Resolves when the worker has closed; rejects (ERR_IMIAD_QUEUE_AUTH) when Redis refuses its credentials. */
  closed: Promise<void>;
}

/** Minimum time between two progress reports of one job (each is a Redis write and an event). */
const PROGRESS_INTERVAL_MS = 1000;

/** The job's progress as the coordinator reads it. */
export interface JobProgress {
  worker: string;
  stage: string;
  done: number;
  total: number;
}

/** A loader that reads each (dataset, root, categories) once; shared by the expansion and the executor. */
function cachedLoader(): CategoryLoader {
  const cache = new Map<string, Promise<Category[]>>();
  return (name: DatasetName, root: string, opts: { categories?: string[] }) => {
    const id = JSON.stringify([name, root, opts.categories ?? null]);
    let p = cache.get(id);
    if (!p) {
      p = loadDataset(name, root, opts);
      p.catch(() => cache.delete(id));
      cache.set(id, p);
    }
    return p;
  };
}

/**
 * The experiment of a validated job, rebuilt on this machine: the same grid expansion as the coordinator's, over
 * the one dataset, category (or task list), method variant, setting and seed. Throws UnrecoverableError when the
 * job cannot be such an experiment, a plain Error when the dataset cannot be read here (another worker may).
 */
export async function experimentOfJob(job: ExperimentJob, loader: CategoryLoader, heatmapDir: (key: string) => string, worker: string): Promise<Experiment> {
  const { config } = job;
  const categories = config.setting.name === 'continual' ? config.category.split('+') : [config.category];
  const grid: GridConfig = {
    store: '',
    concurrency: 1,
    datasets: [{ name: config.dataset, root: job.root, categories }],
    methods: [{ name: config.method, params: config.params, grid: {} }],
    settings: [config.setting],
    seeds: [config.seed],
  };
  let expanded: Awaited<ReturnType<typeof expandGrid>>;
  try {
    expanded = await expandGrid(grid, loader, heatmapDir);
  } catch (err) {
    throw new Error(`Worker ${worker} cannot read ${config.dataset} dataset at ${job.root}: ${(err as Error).message}`);
  }
  if (expanded.invalid.length) throw new UnrecoverableError(`Rejected before running: ${expanded.invalid[0].reason}`);
  const experiment = expanded.experiments[0];
  if (expanded.experiments.length !== 1 || experiment.key !== job.key) {
    throw new UnrecoverableError(`Rejected before running: the job's key ${job.key} is not the key of its configuration (${describeExperiment(config)})`);
  }
  return experiment;
}

/**
 * Starts a worker on the queue once Redis answers (null when `signal` stopped the wait first); it runs until
 * close(). Wrong credentials throw ERR_IMIAD_QUEUE_AUTH.
 */
export async function startQueueWorker(address: QueueAddress, opts: QueueWorkerOptions = {}): Promise<QueueWorker | null> {
  const name = opts.name ?? `${os.hostname()}-${process.pid}`;
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const device = opts.device ?? 'auto';
  // Before anything probes the GPU: with 'cpu' neither the kernels nor libtorch see one.
  if (device === 'cpu') process.env.CUDA_VISIBLE_DEVICES = '';
  if (device === 'cuda') resolveDevice('cuda');
  const workDir = path.resolve(opts.workDir ?? path.join(cacheDir(), 'worker'));
  // heatmaps/<key> under a folder of this process, so that two workers sharing a work folder never meet.
  const jobsDir = path.join(workDir, 'jobs', `${process.pid}`);
  const heatmapDir = (key: string): string => path.join(jobsDir, 'heatmaps', key);
  const loader = cachedLoader();
  const reporters = new Map<string, (stage: string, done: number, total: number) => void>();
  const executor =
    opts.executor ??
    createExecutor({
      augmentDir: path.join(workDir, 'augmented'),
      loadCategories: loader,
      onStage: (experiment, stage, done, total) => reporters.get(experiment.key)?.(stage, done, total),
    });
  const machine = machineDescription();
  const stalledMs = Math.round((opts.stalledAfterSeconds ?? 30) * 1000);
  let waited = false;
  const onLost = (reason: string): void => {
    waited = true;
    log(`imiad worker ${name}: no Redis at ${address.display} (${reason}); waiting for it`);
  };
  if (!(await waitForRedis(address, { signal: opts.signal, onLost }))) return null;
  if (waited) log(`imiad worker ${name}: connected to ${address.display}`);

  const processor = async (job: Job, _token?: string, signal?: AbortSignal): Promise<JobOutcome> => {
    let payload: ExperimentJob;
    try {
      payload = validateJob(job.data, codeVersion);
    } catch (err) {
      throw new UnrecoverableError(`Rejected before running: ${(err as Error).message}`);
    }
    if (payload.key !== job.id) throw new UnrecoverableError(`Rejected before running: the job's id ${String(job.id)} is not its experiment key ${payload.key}`);
    const experiment = await experimentOfJob(payload, loader, heatmapDir, name);
    let last = 0;
    const report = (stage: string, done: number, total: number): void => {
      const now = Date.now();
      if (now - last < PROGRESS_INTERVAL_MS && done < total) return;
      last = now;
      const progress: JobProgress = { worker: name, stage, done, total };
      // Progress is informational: a failed write (Redis away) must not fail the experiment.
      job.updateProgress(progress as never).catch(() => undefined);
    };
    reporters.set(payload.key, report);
    report('starting', 0, 1);
    const startedAt = new Date();
    try {
      const result = await executor(experiment, { signal: signal ?? new AbortController().signal });
      const finishedAt = new Date();
      const heatmapFiles: { [file: string]: string } = {};
      for (const h of result.heatmaps ?? []) {
        for (const file of [h.image, h.mask, h.overlay]) {
          if (file) heatmapFiles[path.basename(file)] = fs.readFileSync(path.join(jobsDir, file)).toString('base64');
        }
      }
      return { result, machine, worker: name, startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString(), heatmapFiles };
    } finally {
      reporters.delete(payload.key);
      fs.rmSync(heatmapDir(payload.key), { recursive: true, force: true });
    }
  };

  const worker = new Worker(address.name, processor, {
    connection: address.redis,
    prefix: QUEUE_PREFIX,
    name,
    concurrency: opts.concurrency ?? 1,
    lockDuration: stalledMs,
    stalledInterval: stalledMs,
    // removeOnComplete / removeOnFail left unset: finished jobs stay until the coordinator has read them (it
    // removes what it stored).
  });
  let connected = true;
  let refuse: (err: Error) => void = () => undefined;
  const closed = new Promise<void>((resolve, reject) => {
    worker.on('closed', () => resolve());
    refuse = reject;
  });
  closed.catch(() => undefined); // a caller that never awaits it must not get an unhandled rejection
  const lost = (reason: string): void => {
    if (connected) log(`imiad worker ${name}: lost Redis at ${address.display} (${reason}); waiting for it to come back`);
    connected = false;
  };
  // A Redis that shuts down cleanly closes the connection without an error: 'ioredis:close' says so.
  worker.on('ioredis:close', () => lost('connection closed'));
  worker.on('error', (err) => {
    if (isAuthError(err)) {
      refuse(authError(address, err));
      void worker.close(true).catch(() => undefined);
    } else if (isConnectionError(err)) {
      lost(err.message);
    } else {
      log(`imiad worker ${name}: ${err.message}`);
    }
  });
  worker.on('ready', () => {
    if (!connected) log(`imiad worker ${name}: connected to ${address.display} again`);
    connected = true;
  });
  worker.on('completed', (job: Job) => {
    const outcome = job.returnvalue as JobOutcome;
    const seconds = (Date.parse(outcome.finishedAt) - Date.parse(outcome.startedAt)) / 1000;
    log(`imiad worker ${name}: done ${describeExperiment((job.data as ExperimentJob).config)} in ${seconds.toFixed(1)}s`);
  });
  worker.on('failed', (job: Job | undefined, err: Error) => {
    if (!job) return;
    if (err instanceof UnrecoverableError) {
      log(`imiad worker ${name}: job ${String(job.id)} ${err.message.replace(/^Rejected/, 'rejected')}`);
      return;
    }
    const what = describeExperiment((job.data as ExperimentJob).config);
    log(`imiad worker ${name}: ${what} failed (attempt ${job.attemptsMade} of ${job.opts.attempts ?? 1}): ${err.message}`);
  });
  return { name, close: (force = false) => worker.close(force), closed };
}
