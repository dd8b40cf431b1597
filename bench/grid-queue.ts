/**
 * The grid on a queue against the local grid: `npm run bench -- grid --queue [--categories N] [--size PX]
 * [--seeds S] [--concurrency C] [--jobs J] [--repeats R]`. Needs Debian's redis-server (a private instance on a
 * free port).
 *
 * 1. Throughput: the same real experiments (a synthetic MVTec-layout dataset, PatchCore and PaDiM, vanilla and
 *    few-shot) run by `imiad grid --concurrency C` and by `imiad grid --queue` with the same total concurrency:
 *    C workers of 1, and 1 worker of C. Workers are started (and idle) before the coordinator, as on a lab's
 *    machines; each run is timed from the command's start to its summary line.
 *    Experiments per minute, and the ratio to the local grid.
 * 2. Per-job overhead, with an executor that returns at once (so only the machinery is timed): the local grid's
 *    ms per experiment (runGrid), a worker's ms per job (take the job, check it, rebuild the experiment, return the
 *    result), and the coordinator's ms per collected result (read, check, store the row, remove the job).
 */
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Queue } from 'bullmq';

import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { parseQueueUrl } from '../lib/queue/connection';
import { runQueuedGrid } from '../lib/queue/coordinator';
import { JOB_NAME, jobOf } from '../lib/queue/jobs';
import { startQueueWorker } from '../lib/queue/worker';
import { gridConfig } from '../lib/runner/config';
import { expandGrid, runGrid } from '../lib/runner/grid';
import { ResultsStore } from '../lib/runner/store';
import type { ExperimentExecutor } from '../lib/runner/types';
import { version } from '../lib/version';
import { intFlag, machineInfo, median, printTable, writeJson, type Row } from './common';
import { RedisServer, redisMissingReason } from './helpers/redis-server';

const CLI = path.join(__dirname, '..', 'lib', 'cli.js');

interface Running {
  proc: ChildProcess;
  exit: Promise<number | null>;
  stdout: () => string;
  stderr: () => string;
}

function run(args: string[]): Running {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return { proc, exit: new Promise((resolve) => proc.on('close', resolve)), stdout: () => out, stderr: () => err };
}

async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 120000, stepMs = 20): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Seconds from the start of an `imiad grid` command to its summary line (every result stored); a non-zero exit is
 * an error with its stderr. Not to the process's exit: on the queue path, the Redis client's parser keeps the event
 * loop alive for about a second after large replies while it shrinks its buffer, which delays the exit only.
 */
async function timed(args: string[]): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = run(args);
  let t1 = 0n;
  r.proc.stdout!.on('data', () => {
    if (!t1 && r.stdout().includes('experiments run,')) t1 = process.hrtime.bigint();
  });
  const code = await r.exit;
  if (code !== 0 || !t1) throw new Error(`imiad ${args.join(' ')} exited with ${code}:\n${r.stdout()}\n${r.stderr()}`);
  return Number(t1 - t0) / 1e9;
}

/** `workers` worker processes of `concurrency` each, started and idle; stopped by the returned function. */
async function startWorkers(url: string, workers: number, concurrency: number, workDir: string): Promise<() => Promise<void>> {
  const procs = Array.from({ length: workers }, (_, i) => run(['worker', '--queue', url, '--concurrency', String(concurrency), '--name', `bench${i}`, '--work-dir', workDir]));
  await until(() => procs.every((p) => p.stderr().includes('taking jobs')), 'the workers to start');
  return async () => {
    for (const p of procs) p.proc.kill('SIGTERM');
    await Promise.all(procs.map((p) => p.exit));
  };
}

export async function main(args: string[]): Promise<void> {
  const categories = intFlag(args, 'categories', 3);
  const size = intFlag(args, 'size', 64);
  const concurrency = intFlag(args, 'concurrency', 2);
  const seeds = intFlag(args, 'seeds', 2);
  const jobs = intFlag(args, 'jobs', 300);
  const repeats = intFlag(args, 'repeats', 1);
  const missing = redisMissingReason();
  if (missing) throw new Error(`the queue benchmark needs redis-server: ${missing}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-queue-'));
  const redis = await RedisServer.start(path.join(dir, 'redis'));
  try {
    const data = path.join(dir, 'data');
    await synthesize('mvtec', data, { categories, size, train: 8, test: 8, seed: 0 });
    const grid = {
      datasets: [{ name: 'mvtec', root: data }],
      methods: ['patchcore', 'padim'].map((name) => ({ name, params: { imageSize: size, cropSize: size } })),
      settings: ['vanilla', { name: 'fewshot', shots: [1, 2] }],
      seeds: Array.from({ length: seeds }, (_, i) => i),
    };
    const file = path.join(dir, 'grid.json');
    fs.writeFileSync(file, JSON.stringify(grid));
    const count = categories * 2 * 3 * seeds;
    // Builds and caches the default backbone (and warms the page cache) before anything is timed.
    fs.writeFileSync(path.join(dir, 'warmup.json'), JSON.stringify({ ...grid, settings: ['vanilla'], methods: [grid.methods[0]], seeds: [0] }));
    await timed(['grid', path.join(dir, 'warmup.json'), '--store', path.join(dir, 'warmup.db')]);

    const throughput: Row[] = [];
    const modes: { mode: string; workers: number; each: number }[] = [
      { mode: 'local grid', workers: 0, each: concurrency },
      { mode: 'queue', workers: concurrency, each: 1 },
      ...(concurrency > 1 ? [{ mode: 'queue', workers: 1, each: concurrency }] : []),
    ];
    const seconds = new Map<string, number[]>();
    let n = 0;
    // Repeats interleave the modes, so that a change of load on the machine affects each alike.
    for (let r = 0; r < repeats; r++) {
      for (const m of modes) {
        const id = `${m.mode} ${m.workers}x${m.each}`;
        const store = path.join(dir, `run${n++}.db`);
        let s: number;
        if (m.workers === 0) {
          s = await timed(['grid', file, '--store', store, '--concurrency', String(m.each)]);
        } else {
          const stop = await startWorkers(redis.url, m.workers, m.each, path.join(dir, 'work'));
          try {
            s = await timed(['grid', file, '--store', store, '--queue', redis.url]);
          } finally {
            await stop();
          }
        }
        const stored = new ResultsStore(store, { readonly: true });
        const rows = stored.count();
        stored.close();
        if (rows !== count) throw new Error(`${id}: ${rows} rows stored, expected ${count}`);
        seconds.set(id, [...(seconds.get(id) ?? []), s]);
      }
    }
    const localPerMinute = (60 * count) / median(seconds.get(`local grid 0x${concurrency}`)!);
    for (const m of modes) {
      const s = median(seconds.get(`${m.mode} ${m.workers}x${m.each}`)!);
      throughput.push({
        mode: m.mode,
        processes: m.workers === 0 ? '1' : `${m.workers} worker${m.workers > 1 ? 's' : ''} + coordinator`,
        concurrency: m.workers === 0 ? m.each : `${m.workers}x${m.each}`,
        experiments: count,
        wallSeconds: s,
        experimentsPerMinute: (60 * count) / s,
        ratioToLocal: (60 * count) / s / localPerMinute,
      });
    }
    printTable(`throughput: ${count} experiments (${categories} categories of ${size} px, PatchCore and PaDiM, vanilla and 1/2-shot, ${seeds} seeds), total concurrency ${concurrency}; seconds to the summary line`, throughput);

    // Per-job overhead: many experiments (seeds) with an executor that does no work.
    const address = parseQueueUrl(redis.url, { name: 'overhead' });
    const overheadSeeds = Math.ceil(jobs / (categories * 2 * 3));
    const config = gridConfig({ ...grid, seeds: Array.from({ length: overheadSeeds }, (_, i) => i) });
    const empty: ExperimentExecutor = async () => ({ metrics: { imageAUROC: 0.5 }, efficiency: { inferenceMsPerImage: 1, memoryBytes: 1 } });
    const localStore = new ResultsStore(path.join(dir, 'overhead-local.db'));
    const { experiments } = await expandGrid(config, (name, root, o) => loadDataset(name, root, o), (k) => localStore.heatmapDir(k));
    let t = process.hrtime.bigint();
    await runGrid(experiments, localStore, empty, { concurrency: 1 });
    const localMs = Number(process.hrtime.bigint() - t) / 1e6 / experiments.length;
    localStore.close();

    const queue = new Queue(address.name, { connection: address.redis, prefix: 'imiad' });
    await queue.addBulk(experiments.map((e) => ({ name: JOB_NAME, data: jobOf(e, version), opts: { jobId: e.key, attempts: 3 } })));
    t = process.hrtime.bigint();
    const worker = (await startQueueWorker(address, { executor: empty, concurrency: 1, name: 'overhead', workDir: path.join(dir, 'work'), log: () => undefined }))!;
    await until(async () => (await queue.getCompletedCount()) === experiments.length, 'the worker to finish', 600000, 5);
    const workerMs = Number(process.hrtime.bigint() - t) / 1e6 / experiments.length;
    await worker.close();
    const queueStore = new ResultsStore(path.join(dir, 'overhead-queue.db'));
    t = process.hrtime.bigint();
    const summary = await runQueuedGrid(experiments, queueStore, address);
    const collectMs = Number(process.hrtime.bigint() - t) / 1e6 / experiments.length;
    if (summary.done !== experiments.length) throw new Error(`the coordinator stored ${summary.done} of ${experiments.length}`);
    queueStore.close();
    await queue.close();
    const overhead: Row[] = [
      { path: 'local grid (runGrid)', jobs: experiments.length, msPerJob: localMs },
      { path: 'queue: worker (take, check, rebuild, return)', jobs: experiments.length, msPerJob: workerMs },
      { path: 'queue: coordinator (collect, check, store, remove)', jobs: experiments.length, msPerJob: collectMs },
    ];
    printTable('per-job overhead, empty executor, concurrency 1', overhead);
    writeJson('grid-queue', { machine: machineInfo(concurrency), loadAverage: os.loadavg(), throughput, seconds: Object.fromEntries(seconds), overhead });
  } finally {
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
