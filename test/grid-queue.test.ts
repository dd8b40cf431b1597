/**
 * The grid across machines (lib/queue, `imiad grid --queue`, `imiad worker`) against a real redis-server of its own
 * (test/helpers/redis.ts): coordinator and workers are separate processes of the built CLI (dist/), the
 * experiments real ones on a tiny synthetic dataset. Faults: a worker killed with kill -9 in the middle of a job, a
 * coordinator killed and started again, Redis restarted under running workers, a failing experiment, malformed
 * jobs, a password in the URL.
 */
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Queue } from 'bullmq';

import { runCli } from './helpers/cli';
import { freePort, RedisServer, redisMissingReason } from './helpers/redis';
import { synthesize } from '../lib/datasets/synth';
import { queueDetail } from '../lib/cli/grid-queue';
import { parseQueueUrl, redactQueueUrl } from '../lib/queue/connection';
import { validateJob, validateOutcome } from '../lib/queue/jobs';
import { gridConfig } from '../lib/runner/config';
import { describeExperiment, expandGrid } from '../lib/runner/grid';
import { ResultsStore } from '../lib/runner/store';
import type { ExperimentConfig } from '../lib/runner/types';
import { loadDataset } from '../lib/datasets';
import { version } from '../lib/version';

const ROOT = path.join(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'lib', 'cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-queue-'));
const data = path.join(tmp, 'data');
const missing = redisMissingReason();
if (missing) process.stderr.write(`[grid-queue tests] skipping the Redis tests: ${missing}\n`);
const withRedis = missing ? describe.skip : describe;

const started: ChildProcess[] = [];
const servers: RedisServer[] = [];
const queues: Queue[] = [];
afterAll(async () => {
  for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await Promise.allSettled(queues.map((q) => q.close()));
  await Promise.allSettled(servers.map((s) => s.stop()));
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The newest modification time of the TypeScript sources the CLI is built from. */
function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

/** The workers run the built CLI (`npm test` builds it first); built here when dist/ is missing or older than lib/. */
function ensureBuilt(): void {
  const built = fs.existsSync(CLI) ? fs.statSync(path.join(ROOT, 'dist', 'lib', 'queue', 'worker.js'), { throwIfNoEntry: false })?.mtimeMs ?? 0 : 0;
  if (built >= Math.max(newestSource(path.join(ROOT, 'lib')), newestSource(path.join(ROOT, 'bindings')))) return;
  const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(ROOT, 'tsconfig.json')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm run build:ts failed:\n${r.stdout}\n${r.stderr}`);
}

interface Child {
  proc: ChildProcess;
  /** stdout and stderr so far. */
  out: () => string;
  err: () => string;
  exit: Promise<number | null>;
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Child {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  started.push(proc);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)));
  return { proc, out: () => out, err: () => err, exit };
}

function worker(url: string, name: string, extra: string[] = []): Child {
  return cli(['worker', '--queue', url, '--name', name, '--stalled-after', '3', '--work-dir', path.join(tmp, 'work', name), ...extra]);
}

async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 90000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A look into the queue from the test, as BullMQ sees it. */
function inspect(server: RedisServer, name = 'imiad-grid', password?: string): Queue {
  const q = new Queue(name, { connection: { host: '127.0.0.1', port: server.port, maxRetriesPerRequest: null, ...(password ? { password } : {}) }, prefix: 'imiad' });
  q.on('error', () => undefined);
  queues.push(q);
  return q;
}

function rowsOf(file: string): ReturnType<ResultsStore['rows']> {
  if (!fs.existsSync(file)) return [];
  const store = new ResultsStore(file, { readonly: true });
  try {
    return store.rows();
  } finally {
    store.close();
  }
}

/** 3 categories x (PatchCore, PaDiM) x (vanilla, 1-shot) = 12 experiments of well under a second each. */
function writeGrid(name: string, extra: Record<string, unknown> = {}): string {
  const file = path.join(tmp, `${name}.json`);
  const grid = {
    store: `${name}/results.db`,
    datasets: [{ name: 'mvtec', root: 'data' }],
    methods: ['patchcore', 'padim'].map((m) => ({ name: m, params: { imageSize: 32, cropSize: 32 } })),
    settings: ['vanilla', { name: 'fewshot', shots: 1 }],
    ...extra,
  };
  fs.writeFileSync(file, JSON.stringify(grid));
  return file;
}

beforeAll(async () => {
  await synthesize('mvtec', data, { categories: 3, size: 32, train: 4, test: 4, seed: 0 });
  if (!missing) ensureBuilt();
}, 300000);

describe('queue address, job and result checks', () => {
  test('the URL: options for ioredis, the password never in what is shown', () => {
    const a = parseQueueUrl('redis://:s3cret@10.0.0.5:6380/2', { env: {} });
    expect(a.redis).toMatchObject({ host: '10.0.0.5', port: 6380, db: 2, password: 's3cret', maxRetriesPerRequest: null });
    expect(a.display).toBe('redis://***@10.0.0.5:6380/2');
    expect(parseQueueUrl('redis://box', { env: {} }).display).toBe('redis://box:6379/0');
    expect(parseQueueUrl('rediss://u:p@box:1/0', { env: {} }).redis.tls).toEqual({ servername: 'box' });
    expect(parseQueueUrl('redis://box', { env: { IMIAD_QUEUE_PASSWORD: 'from-env' } }).redis.password).toBe('from-env');
    expect(redactQueueUrl(':pw@host:1/0')).toBe('***@host:1/0');
    expect(redactQueueUrl('redis://u:p@ss@host')).toBe('redis://***@host');
    expect(() => parseQueueUrl('http://:pw@box', { env: {} })).toThrow('Expected a redis:// or rediss:// URL for --queue but received http://***@box of type string');
    expect(() => parseQueueUrl('redis://:pw@box/16', { env: {} })).toThrow('Expected a database number 0-15 after the port for --queue but received redis://***@box/16 of type string');
    expect(() => parseQueueUrl('redis://box', { name: 'a:b', env: {} })).toThrow('Expected a queue name of 1-64 letters, digits, _ . - for --queue-name but received a:b of type string');
  });

  test('a job is checked field by field before anything runs', async () => {
    const config = gridConfig({ datasets: [{ name: 'mvtec', root: data }], methods: ['patchcore'], settings: [{ name: 'fewshot', shots: 2 }] });
    const { experiments } = await expandGrid(config, (n, r, o) => loadDataset(n, r, o), (k) => k);
    const good = { key: experiments[0].key, codeVersion: version, config: experiments[0].config, root: data };
    expect(validateJob(good, version)).toBe(good);
    const bad = (patch: Record<string, unknown>, configPatch: Partial<Record<keyof ExperimentConfig, unknown>> = {}): unknown => ({ ...good, ...patch, config: { ...good.config, ...configPatch } });
    const cases: [unknown, string][] = [
      ['x', 'Expected an object for job but received x of type string'],
      [bad({ command: 'touch /tmp/x' }), "Unexpected field 'command' in job (expected key, codeVersion, config, root)"],
      [bad({ key: '../x' }), 'Expected a 64-digit hex experiment key for job.key but received ../x of type string'],
      [bad({ codeVersion: '0.0.1' }), `The job was queued by imiad 0.0.1 but this worker runs imiad ${version} (the version is part of the experiment key): run workers of the coordinator's version`],
      [bad({ root: 'data' }), 'Expected an absolute dataset folder for job.root but received data of type string'],
      [bad({}, { method: 'sh -c reboot' }), "Expected one of patchcore, padim, spade, dne, stpm, rd4ad, cfa, cflow, csflow, fastflow, cutpaste, devnet, dra, bgad, prn, semirest, regad, draem, favae, igd, gcad for job.config.method but received sh -c reboot of type string"],
      [bad({}, { category: '../../etc' }), 'Expected a category name (no path separators) for job.config.category but received ../../etc of type string'],
      [bad({}, { seed: -1 }), 'Expected a non-negative integer for job.config.seed but received -1 of type number'],
      [bad({}, { params: { f: () => 1 } }), 'Expected an object of JSON values for job.config.params but received Object of type object'],
      [bad({}, { setting: { name: 'fewshot', shots: 2 } }), 'Expected the normal form {"augment":null,"augmentCount":0,"name":"fewshot","shots":2} for job.config.setting but received {"name":"fewshot","shots":2}'],
      [bad({}, { setting: { name: 'fewshot', shots: 0, augment: null, augmentCount: 0 } }), 'Expected a positive integer for shots but received 0 of type number'],
    ];
    for (const [job, message] of cases) expect(() => validateJob(job, version)).toThrow(message);
  });

  test("a worker's result may write only heatmaps/<key>/ files it carries", () => {
    const key = 'a'.repeat(64);
    const rec = (image: string) => ({ sample: '/d/x.png', defectType: 'crack', image, mask: null, overlay: `heatmaps/${key}/0-overlay.png` });
    const outcome = (heatmaps: unknown[], heatmapFiles: Record<string, string>) => ({
      result: { metrics: { imageAUROC: 0.5, pixelPRO: null }, efficiency: { inferenceMsPerImage: 1, memoryBytes: 2 }, heatmaps, notes: [] },
      machine: { hostname: 'h', cores: 2 },
      worker: 'w',
      startedAt: new Date(0).toISOString(),
      finishedAt: new Date(1).toISOString(),
      heatmapFiles,
    });
    const ok = outcome([rec(`heatmaps/${key}/0-image.png`)], { '0-image.png': 'iVBORw0KGgo=', '0-overlay.png': 'AA==' });
    expect(validateOutcome(ok, key)).toBe(ok);
    expect(() => validateOutcome(outcome([rec(`heatmaps/${key}/../../x.png`)], { '0-overlay.png': 'AA==' }), key)).toThrow(
      `Malformed result from the worker: Expected a file under heatmaps/${key}/ sent with the result for result.heatmaps[].image but received heatmaps/${key}/../../x.png of type string`,
    );
    expect(() => validateOutcome(outcome([], { '../../.bashrc': 'AA==' }), key)).toThrow('Malformed result from the worker: Expected a heatmap file name for result.heatmapFiles but received ../../.bashrc of type string');
    expect(() => validateOutcome({ ...ok, result: { ...ok.result, metrics: { imageAUROC: '1' } } }, key)).toThrow('Malformed result from the worker: Expected an object of numbers for result.metrics but received Object of type object');
  });

  test("the progress line's detail: running per worker, failed, waiting", () => {
    expect(queueDetail({ done: 4, running: 3, failed: 1, waiting: 5, total: 13, workers: { 'box2-gpu0': 1, 'box1-gpu1': 2 } })).toBe('(3 running on box1-gpu1: 2, box2-gpu0: 1, 1 failed, 5 waiting)');
    expect(queueDetail({ done: 0, running: 0, failed: 0, waiting: 9, total: 9, workers: {} })).toBe('(0 running, 0 failed, 9 waiting)');
  });

  test('flags that do not apply are refused before anything runs', async () => {
    const file = writeGrid('flags');
    expect(await runCli(['grid', file, '--retries', '1'])).toMatchObject({ code: 2, stderr: 'imiad: --retries applies to a queued grid only (add --queue redis://HOST:PORT/DB)\n' });
    expect(await runCli(['grid', file, '--queue', 'redis://127.0.0.1:1', '--concurrency', '2'])).toMatchObject({
      code: 2,
      stderr: 'imiad: --concurrency applies to the local grid; with --queue each worker sets its own (imiad worker --concurrency N)\n',
    });
    expect(await runCli(['grid', file, '--queue', 'redis://:pw@127.0.0.1:1', '--retries', '-1'])).toMatchObject({ code: 2, stderr: 'imiad: Expected a non-negative integer for --retries but received -1 of type string\n' });
    expect(await runCli(['worker', '--queue', 'redis://127.0.0.1:1', '--device', 'gpu'])).toMatchObject({ code: 2, stderr: "imiad: Expected one of 'auto', 'cpu', 'cuda' for --device but received gpu of type string\n" });
    expect(await runCli(['worker', '--queue', 'redis://127.0.0.1:1', '--concurrency', '0'])).toMatchObject({ code: 2, stderr: 'imiad: Expected a positive integer for --concurrency but received 0 of type string\n' });
    expect(fs.existsSync(path.join(tmp, 'flags'))).toBe(false);
  });
});

withRedis('grid on a queue (real redis-server)', () => {
  test('12 experiments through 2 worker processes, one killed with kill -9 mid-job: each stored once, metrics as a local run', async () => {
    const redis = await RedisServer.start(path.join(tmp, 'redis-a'));
    servers.push(redis);
    const file = writeGrid('killed');
    const w1 = worker(redis.url, 'w1');
    const w2 = worker(redis.url, 'w2');
    const coordinator = cli(['grid', file, '--queue', `${redis.url}/0`, '--json'], { IMIAD_PROGRESS: '1' });
    const queue = inspect(redis);
    // Freeze w1 while it holds a job (it cannot finish it then), check that it still does, and kill it.
    const victim = { key: '', experiment: '' };
    await until(async () => {
      const job = (await queue.getJobs(['active'])).find((j) => j?.processedBy === 'w1');
      if (!job) return false;
      w1.proc.kill('SIGSTOP');
      if ((await queue.getJobState(job.id!)) === 'active' && (await queue.getJob(job.id!))?.processedBy === 'w1') {
        Object.assign(victim, { key: job.id!, experiment: describeExperiment(job.data.config) });
        w1.proc.kill('SIGKILL');
        return true;
      }
      w1.proc.kill('SIGCONT');
      return false;
    }, 'a job running on w1');
    expect(await w1.exit).toBeNull();
    expect(await coordinator.exit).toBe(0);
    const summary = JSON.parse(coordinator.out()).summary;
    expect(summary).toEqual({ store: path.join(tmp, 'killed', 'results.db'), queue: `redis://127.0.0.1:${redis.port}/0`, queueName: 'imiad-grid', skipped: 0, done: 12, failed: [], notRun: 0, aborted: false });
    // One progress line: done/total, running with the workers' names, failed, waiting.
    expect(coordinator.err()).toMatch(/\rgrid \[[#.]{24}\] \d+\/12 \(\d running on w\d: 1(, w\d: 1)?, 0 failed, \d+ waiting\)/);
    const rows = rowsOf(path.join(tmp, 'killed', 'results.db'));
    expect(rows).toHaveLength(12);
    expect(new Set(rows.map((r) => r.key)).size).toBe(12);
    // The stalled job went to w2, which ran it to the end; w1 never finished it.
    const { key, experiment } = victim;
    expect(rows.some((r) => r.key === key)).toBe(true);
    expect(w2.err()).toContain(`imiad worker w2: done ${experiment} in `);
    expect(w1.err()).not.toContain(`done ${experiment} in `);
    // Nothing left in Redis of the grid's jobs: the coordinator removed what it stored.
    expect(await queue.getJobCounts('completed', 'failed', 'active', 'wait', 'delayed')).toEqual({ completed: 0, failed: 0, active: 0, wait: 0, delayed: 0 });

    // The same grid on this machine: the same metric values, heatmaps and manifests for every experiment.
    const local = await runCli(['grid', file, '--store', path.join(tmp, 'local', 'results.db'), '--concurrency', '2']);
    expect(local.code).toBe(0);
    const localRows = new Map(rowsOf(path.join(tmp, 'local', 'results.db')).map((r) => [r.key, r]));
    expect(localRows.size).toBe(12);
    for (const r of rows) {
      const l = localRows.get(r.key)!;
      expect(r.metrics).toEqual(l.metrics);
      expect(r.manifest).toEqual(l.manifest);
      expect(r.heatmaps).toEqual(l.heatmaps);
      expect(r.notes).toEqual(l.notes);
      for (const h of r.heatmaps) expect(fs.readFileSync(path.join(tmp, 'killed', h.overlay)).equals(fs.readFileSync(path.join(tmp, 'local', h.overlay)))).toBe(true);
    }
    expect(rows.some((r) => r.heatmaps.length > 0)).toBe(true);
    // The worker cleaned its per-job heatmap folders.
    expect(fs.readdirSync(path.join(tmp, 'work', 'w2', 'jobs', String(w2.proc.pid), 'heatmaps'))).toEqual([]);
    w2.proc.kill('SIGTERM');
    expect(await w2.exit).toBe(0);
    expect(w2.err()).toContain('imiad worker w2: stopped');
  }, 240000);

  test('a coordinator killed and started again, Redis restarted under running workers: nothing lost, nothing twice', async () => {
    const redis = await RedisServer.start(path.join(tmp, 'redis-b'));
    servers.push(redis);
    const file = writeGrid('restart', { seeds: [1] });
    const store = path.join(tmp, 'restart', 'results.db');
    const workers = [worker(redis.url, 'w3'), worker(redis.url, 'w4')];
    const first = cli(['grid', file, '--queue', redis.url, '--json']);
    const queue = inspect(redis);
    await until(async () => (await queue.getActiveCount()) > 0, 'a running job');
    // Both workers must hold a connection before Redis goes away (a slow start would otherwise only ever see it down).
    await until(() => workers.every((w) => w.err().includes('taking jobs from')), 'both workers connected');
    await redis.stop();
    await new Promise((r) => setTimeout(r, 1000));
    await redis.startAgain();
    await until(() => /connected to redis:\/\/127\.0\.0\.1:\d+\/0 again/.test(first.err()), 'the coordinator to reconnect');
    expect(first.err()).toMatch(/lost Redis at redis:\/\/127\.0\.0\.1:\d+\/0 \(/);
    await until(() => rowsOf(store).length > 0, 'a stored row');
    first.proc.kill('SIGKILL');
    expect(await first.exit).toBeNull();
    const before = rowsOf(store);
    expect(before.length).toBeLessThan(12);
    // Work goes on without a coordinator; the next one collects it.
    await until(async () => (await queue.getCompletedCount()) > 0, 'a job finished while no coordinator runs');
    const second = cli(['grid', file, '--queue', redis.url, '--json']);
    expect(await second.exit).toBe(0);
    const summary = JSON.parse(second.out()).summary;
    expect(summary).toMatchObject({ skipped: before.length, done: 12 - before.length, failed: [], notRun: 0, aborted: false });
    const rows = rowsOf(store);
    expect(rows).toHaveLength(12);
    expect(new Set(rows.map((r) => r.key)).size).toBe(12);
    for (const b of before) expect(rows.find((r) => r.key === b.key)!.finishedAt).toBe(b.finishedAt);
    for (const w of workers) {
      // Alive through the restart, they said so, and they stop cleanly.
      expect(w.proc.exitCode).toBeNull();
      expect(w.err()).toMatch(/lost Redis at redis:\/\/127\.0\.0\.1:\d+\/0 \(/);
      expect(w.err()).toMatch(/connected to redis:\/\/127\.0\.0\.1:\d+\/0 again/);
      w.proc.kill('SIGTERM');
      expect(await w.exit).toBe(0);
    }
  }, 240000);

  test('a failing experiment is retried then reported; malformed jobs are rejected; the password is never shown', async () => {
    const password = 'pw-9f3c1e77';
    const redis = await RedisServer.start(path.join(tmp, 'redis-c'), ['--requirepass', password]);
    servers.push(redis);
    const url = `redis://:${password}@127.0.0.1:${redis.port}/0`;
    const shown = `redis://***@127.0.0.1:${redis.port}/0`;
    const queue = inspect(redis, 'imiad-grid', password);
    // Malformed jobs, queued directly (as anyone with access to Redis could), each with 3 attempts.
    const good = { key: 'f'.repeat(64), codeVersion: version, root: data, config: { dataset: 'mvtec', category: 'disc', method: 'patchcore', params: {}, setting: { name: 'vanilla' }, seed: 0 } };
    const malformed: [string, unknown, string][] = [
      ['bad-1', { ...good, key: 'bad-1', command: 'touch /tmp/imiad-pwned' }, "Unexpected field 'command' in job (expected key, codeVersion, config, root)"],
      ['bad-2', { ...good, key: 'bad-2' }, 'Expected a 64-digit hex experiment key for job.key but received bad-2 of type string'],
      [good.key, { ...good, config: { ...good.config, category: '../../etc' } }, 'Expected a category name (no path separators) for job.config.category but received ../../etc of type string'],
      ['e'.repeat(64), { ...good, key: 'e'.repeat(64) }, `the job's key ${'e'.repeat(64)} is not the key of its configuration (mvtec/disc patchcore vanilla seed 0)`],
    ];
    for (const [id, payload] of malformed) await queue.add('experiment', payload, { jobId: id, attempts: 3 });
    const w5 = worker(url, 'w5');
    const file = path.join(tmp, 'failing.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        store: 'failing/results.db',
        datasets: [{ name: 'mvtec', root: 'data', categories: ['disc'] }],
        methods: [
          { name: 'patchcore', params: { imageSize: 32, cropSize: 32 } },
          { name: 'patchcore', params: { imageSize: 32, cropSize: 32, coreset: 5 } },
        ],
        settings: ['vanilla'],
      }),
    );
    const coordinator = cli(['grid', file, '--queue', url, '--retries', '1', '--json']);
    expect(await coordinator.exit).toBe(1);
    const summary = JSON.parse(coordinator.out()).summary;
    const error = 'Expected number in (0, 1] for coreset but received 5 of type number';
    expect(summary.done).toBe(1);
    expect(summary.failed).toEqual([{ key: expect.stringMatching(/^[0-9a-f]{64}$/), experiment: 'mvtec/disc patchcore {"imageSize":32,"cropSize":32,"coreset":5} vanilla seed 0', error, attempts: 2 }]);
    expect(coordinator.err()).toContain(`imiad grid: mvtec/disc patchcore {"imageSize":32,"cropSize":32,"coreset":5} vanilla seed 0 failed after 2 attempts: ${error}`);
    // The error of each attempt is kept in the job.
    const failedJob = (await queue.getJob(summary.failed[0].key))!;
    expect(failedJob.attemptsMade).toBe(2);
    expect(failedJob.stacktrace).toHaveLength(2);
    for (const s of failedJob.stacktrace ?? []) expect(s).toContain(error);
    expect(rowsOf(path.join(tmp, 'failing', 'results.db'))).toHaveLength(1);

    // Every malformed job failed at its first attempt with the reason, and ran nothing.
    for (const [id, , reason] of malformed) {
      const job = (await queue.getJob(id))!;
      expect([id, await job.getState(), job.attemptsMade, job.failedReason]).toEqual([id, 'failed', 1, `Rejected before running: ${reason}`]);
    }
    expect(fs.existsSync('/tmp/imiad-pwned')).toBe(false);
    expect(w5.err()).toContain(`imiad worker w5: job bad-1 rejected before running: Unexpected field 'command'`);

    // The password appears nowhere: not on any output, not in the store, not in the worker's folder.
    for (const text of [coordinator.out(), coordinator.err(), w5.err()]) expect(text).not.toContain(password);
    expect(coordinator.err()).toContain(`queueing on ${shown}`);
    expect(w5.err()).toContain(`taking jobs from ${shown}`);
    expect(fs.readFileSync(path.join(tmp, 'failing', 'results.db')).includes(password)).toBe(false);

    // Wrong credentials: a clear error and exit code 2, not a wait for ever.
    const wrong = `redis://:nope@127.0.0.1:${redis.port}/0`;
    const refused = cli(['grid', file, '--queue', wrong]);
    expect(await refused.exit).toBe(2);
    expect(refused.err()).toMatch(new RegExp(`imiad: Redis at redis://\\*\\*\\*@127\\.0\\.0\\.1:${redis.port}/0 refused the credentials: WRONGPASS`));
    const refusedWorker = worker(wrong, 'w6');
    expect(await refusedWorker.exit).toBe(2);
    expect(refusedWorker.err()).toMatch(/imiad: Redis at redis:\/\/\*\*\*@127\.0\.0\.1:\d+\/0 refused the credentials: WRONGPASS/);
    w5.proc.kill('SIGTERM');
    expect(await w5.exit).toBe(0);
  }, 240000);

  test('the coordinator waits (it does not crash) and stops cleanly on Ctrl-C, leaving the store empty', async () => {
    const port = await freePort();
    const file = writeGrid('noredis');
    const c = cli(['grid', file, '--queue', `redis://127.0.0.1:${port}`]);
    await until(() => c.err().includes(`imiad grid: lost Redis at redis://127.0.0.1:${port}/0 (connect ECONNREFUSED`), 'the coordinator to say it waits');
    c.proc.kill('SIGINT');
    expect(await c.exit).toBe(130);
    expect(c.out()).toBe('0 experiments run, 0 already stored, 0 failed, 12 not finished (the same command again collects them); store ' + path.join(tmp, 'noredis', 'results.db') + '\n');
  }, 60000);
});
