/**
 * The continual setting's learning modes (docs/settings-continual.md): PaDiM's running statistics equal a refit on
 * the union; PatchCore's and SPADE's memory banks grow; STPM learns the tasks in turn (task l's fit sees task l's
 * images only and starts from task l-1's weights and optimiser state); joint training is an explicit, separately
 * keyed option; a continual grid killed between tasks resumes to the same matrix; Table XI says which mode ran.
 * The STPM tests skip, with the reason printed, when the training addon is not built.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { gaussianAccumulate, gaussianFactor, gaussianFit, runningGaussian } from '../bindings/gaussian';
import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { settingFromFlags } from '../lib/cli/setting-options';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Category, Sample } from '../lib/datasets/types';
import { Padim, PatchCore, Rd4ad, Spade, Stpm } from '../lib/methods';
import type { DetectorState, FitOptions, TrainSample } from '../lib/methods/types';
import { reportData } from '../lib/report/data';
import { tableXI, tableXIII } from '../lib/report/tables';
import { continualCheckpointFile } from '../lib/runner/continual';
import { createExecutor } from '../lib/runner/executor';
import { expandGrid, runGrid } from '../lib/runner/grid';
import { gridConfig } from '../lib/runner/config';
import { ResultsStore } from '../lib/runner/store';
import {
  NOTE_CONTINUAL_JOINT,
  NOTE_CONTINUAL_SEQUENTIAL,
  NOTE_CONTINUAL_STATISTICS,
  NOTE_MEMORY_BANK_ACCUMULATES,
  NOTE_REFIT_ON_UNION,
  type ResultRow,
} from '../lib/runner/types';
import { settingLabel, settingSpec } from '../lib/settings';
import { runCli } from './helpers/cli';
import { makeRow } from './helpers/rows';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-continual-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) {
  process.stdout.write(`test/continual.test.ts: skipping the STPM tests: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
}
const withAddon = available ? test : test.skip;

const root = path.join(tmp, 'mvtec');
let categories: Category[] = [];
const trainOf = (c: Category): Sample[] => c.samples.filter((s) => s.split === 'train');
const small = { imageSize: 64, cropSize: 64 };

beforeAll(async () => {
  await synthesize('mvtec', root, { seed: 5, categories: 3, size: 64, train: 5, test: 4 });
  categories = await loadDataset('mvtec', root);
});

/** |a - b| <= tol * max(|b|, 1e-3 * max |b|) for every element (relative, with a floor for entries near 0). */
function expectRelativelyEqual(a: Float64Array | Float32Array, b: Float64Array | Float32Array, tol: number): void {
  expect(a.length).toBe(b.length);
  let scale = 0;
  for (const v of b) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), 1e-3 * scale));
  expect(worst).toBeLessThanOrEqual(tol);
}

describe('PaDiM: running statistics (the statistics mode)', () => {
  test('the pairwise update over chunks equals the two-pass statistics of all rows (1e-9 relative)', async () => {
    const n = 23;
    const channels = 5;
    const positions = 9;
    const data = new Float32Array(n * channels * positions);
    let x = 12345;
    for (let i = 0; i < data.length; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      data[i] = 3 + (x / 2147483648) * 2; // an offset mean makes x x^T sums cancel badly; the pairwise update must not
    }
    const all = runningGaussian(channels, positions);
    await gaussianAccumulate(all, data, { n });
    const parts = runningGaussian(channels, positions);
    for (const [from, to] of [[0, 7], [7, 8], [8, 23]]) {
      await gaussianAccumulate(parts, data.subarray(from * channels * positions, to * channels * positions), { n: to - from });
    }
    expect(parts.count).toBe(n);
    // Plain two-pass reference in float64.
    const tri = (channels * (channels + 1)) / 2;
    const mean = new Float64Array(positions * channels);
    const scatter = new Float64Array(positions * tri);
    for (let p = 0; p < positions; p++) {
      for (let c = 0; c < channels; c++) {
        let s = 0;
        for (let i = 0; i < n; i++) s += data[(i * channels + c) * positions + p];
        mean[p * channels + c] = s / n;
      }
      for (let r = 0; r < channels; r++) {
        for (let c = 0; c <= r; c++) {
          let s = 0;
          for (let i = 0; i < n; i++) s += (data[(i * channels + r) * positions + p] - mean[p * channels + r]) * (data[(i * channels + c) * positions + p] - mean[p * channels + c]);
          scatter[p * tri + (r * (r + 1)) / 2 + c] = s;
        }
      }
    }
    expectRelativelyEqual(parts.mean, mean, 1e-9);
    expectRelativelyEqual(parts.scatter, scatter, 1e-9);
    expectRelativelyEqual(all.scatter, scatter, 1e-9);
    // One accumulation of everything, factorised, is bit for bit gaussianFit.
    const fitted = await gaussianFit(data, { n, channels, positions });
    const factored = await gaussianFactor(all);
    expect(Buffer.from(factored.mean.buffer).equals(Buffer.from(fitted.mean.buffer))).toBe(true);
    expect(Buffer.from(factored.cholesky.buffer).equals(Buffer.from(fitted.cholesky.buffer))).toBe(true);
    await expect(gaussianFactor(runningGaussian(2, 2))).rejects.toMatchObject({ code: 'ERR_IMIAD_EMPTY', message: 'Expected running statistics of at least one image but received none' });
  });

  test('three tasks through running sums equal a refit on their union', async () => {
    const union = categories.flatMap(trainOf);
    const continual = new Padim({ ...small, runningSums: true });
    const joint = new Padim({ ...small, runningSums: true });
    const plain = new Padim(small);
    try {
      for (const c of categories) await continual.fit(trainOf(c), { continueTraining: true });
      await joint.fit(union);
      await plain.fit(union);
      const a = continual.runningStatistics!;
      const b = joint.runningStatistics!;
      expect(a.count).toBe(union.length);
      expectRelativelyEqual(a.mean, b.mean, 1e-9);
      expectRelativelyEqual(a.scatter, b.scatter, 1e-9);
      // The Gaussians: a single fit with running sums is exactly the plain fit; after three tasks they agree to
      // float32 rounding of the same double values.
      const sj = joint.saveState();
      const sp = plain.saveState();
      expect(Buffer.from(sj.arrays.cholesky.buffer).equals(Buffer.from(sp.arrays.cholesky.buffer))).toBe(true);
      expect(Buffer.from(sj.arrays.mean.buffer).equals(Buffer.from(sp.arrays.mean.buffer))).toBe(true);
      const sc = continual.saveState();
      expectRelativelyEqual(sc.arrays.mean as Float32Array, sp.arrays.mean as Float32Array, 1e-6);
      expectRelativelyEqual(sc.arrays.cholesky as Float32Array, sp.arrays.cholesky as Float32Array, 1e-5);
      // A checkpoint keeps the running sums, so a loaded PaDiM goes on learning.
      const loaded = new Padim({ ...small, runningSums: true });
      await loaded.loadState(sc);
      expect(loaded.runningStatistics!.count).toBe(union.length);
      await loaded.dispose();
    } finally {
      await continual.dispose();
      await joint.dispose();
      await plain.dispose();
    }
  });

  test('continueTraining without running sums is refused; without continueTraining a fit starts over', async () => {
    const p = new Padim(small);
    const r = new Padim({ ...small, runningSums: true });
    try {
      await p.fit(trainOf(categories[0]));
      await expect(p.fit(trainOf(categories[1]), { continueTraining: true })).rejects.toMatchObject({
        code: 'ERR_IMIAD_STATE',
        message: 'PaDiM: continueTraining needs the running statistics of the earlier fit (create the detector with runningSums: true)',
      });
      await r.fit(trainOf(categories[0]));
      await r.fit(trainOf(categories[1]));
      expect(r.runningStatistics!.count).toBe(trainOf(categories[1]).length);
      await expect(r.fit(trainOf(categories[1]), { continueTraining: 1 } as unknown as FitOptions)).rejects.toThrow(
        'Expected boolean for continueTraining but received 1 of type number',
      );
      expect(() => new Padim({ ...small, runningSums: 'yes' as unknown as boolean })).toThrow('Expected boolean for runningSums but received yes of type string');
    } finally {
      await p.dispose();
      await r.dispose();
    }
  });
});

describe('memory banks (the accumulate mode)', () => {
  test("PatchCore's bank after 3 tasks holds each task's coreset rows, in task order", async () => {
    const p = new PatchCore({ ...small, seed: 2 });
    try {
      const alone: Float32Array[] = [];
      for (const c of categories) {
        const q = new PatchCore({ ...small, seed: 2 });
        await q.fit(trainOf(c));
        alone.push(q.memoryBank!.bank.slice());
        await q.dispose();
      }
      for (const c of categories) await p.fit(trainOf(c), { continueTraining: true });
      const bank = p.memoryBank!;
      const dims = bank.dims;
      expect(bank.rows).toBe(alone.reduce((a, b) => a + b.length / dims, 0));
      let at = 0;
      for (const part of alone) {
        expect(part.length).toBeGreaterThan(0);
        expect(Buffer.from(bank.bank.slice(at, at + part.length).buffer).equals(Buffer.from(part.buffer))).toBe(true);
        at += part.length;
      }
      // Without continueTraining a fit replaces the bank.
      await p.fit(trainOf(categories[0]));
      expect(p.memoryBank!.rows * dims).toBe(alone[0].length);
    } finally {
      await p.dispose();
    }
  });

  test("SPADE's bank grows by each task's images: the same scores as a fit on the union", async () => {
    const test = categories.flatMap((c) => c.samples.filter((s) => s.split === 'test'));
    const a = new Spade(small);
    const b = new Spade(small);
    try {
      for (const c of categories) await a.fit(trainOf(c), { continueTraining: true });
      await b.fit(categories.flatMap(trainOf));
      expect(a.stateBytes()).toBe(b.stateBytes());
      const pa = await a.predict(test);
      const pb = await b.predict(test);
      expect(Array.from(pa.scores)).toEqual(Array.from(pb.scores));
      expect(Buffer.from(pa.maps[3].data.buffer).equals(Buffer.from(pb.maps[3].data.buffer))).toBe(true);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });
});

describe('joint training is an explicit, separately keyed option', () => {
  test('settings, grid file and --joint', () => {
    expect(settingSpec('continual')).toEqual({ name: 'continual', order: null, joint: false });
    expect(settingLabel(settingSpec('continual', { joint: true }))).toBe('continual-joint');
    expect(() => settingSpec('continual', { joint: 'yes' as unknown as boolean })).toThrow('Expected boolean for joint but received yes of type string');
    const grid = gridConfig({ datasets: [{ name: 'mvtec', root: '/d' }], methods: ['stpm'], settings: [{ name: 'continual', joint: [false, true] }] });
    expect(grid.settings).toEqual([{ name: 'continual', order: null, joint: false }, { name: 'continual', order: null, joint: true }]);
    expect(settingFromFlags({ setting: 'continual', joint: true }).spec).toEqual({ name: 'continual', order: null, joint: true });
    expect(() => settingFromFlags({ setting: 'vanilla', joint: true })).toThrow('Expected --setting continual with --joint for --setting but received vanilla of type string');
  });

  test('imiad run --joint without --setting continual is refused (exit code 2)', async () => {
    const r = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'padim', '--joint']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Expected --setting continual with --joint for --setting but received vanilla of type string');
  });

  test("Table XI labels joint rows apart and its footnotes name each method's mode; Table XIII leaves joint out", () => {
    const row = (method: string, joint: boolean, base: number, notes: string[]): ResultRow =>
      makeRow({ method, category: 'bottle+cable', setting: { name: 'continual', order: null, joint },
        continual: { tasks: ['bottle', 'cable'], matrix: { imageAUROC: [[base, null], [base - 0.2, base]] } }, notes });
    const rows = [
      row('stpm', false, 0.9, [NOTE_CONTINUAL_SEQUENTIAL]),
      row('stpm', true, 0.95, [NOTE_CONTINUAL_JOINT]),
      row('padim', false, 0.8, [NOTE_CONTINUAL_STATISTICS]),
      row('dne', false, 0.7, [NOTE_MEMORY_BANK_ACCUMULATES]),
      // A row stored before the modes existed: SPADE refitted on the union is joint training.
      row('spade', false, 0.6, [NOTE_MEMORY_BANK_ACCUMULATES, NOTE_REFIT_ON_UNION]),
      row('patchcore', false, 0.5, []),
    ];
    const t = tableXI(reportData(rows))!;
    expect(t.rows.map((r) => (r[0] as { text: string }).text)).toEqual(['dne', 'padim', 'patchcore', 'spade (joint)', 'stpm', 'stpm (joint)']);
    expect(t.notes).toEqual([
      "Sequential (one model learns the tasks in turn, each from the weights the previous task left, on that task's images only): stpm.",
      'Accumulating (the memory grows with each task: memory-bank rows, or one Gaussian per task): dne.',
      'Running statistics (Gaussians updated with each task, equal to a refit on the union of the tasks): padim.',
      'Joint training on the union of the tasks so far after each task (an upper bound, not continual learning): spade (joint), stpm (joint).',
      'Mode not recorded: patchcore.',
    ]);
    const [x] = tableXIII(reportData(rows));
    const stpm = x.rows.find((r) => (r[1] as { text: string }).text === 'stpm' && (r[0] as { text: string }).text.startsWith('Image AUC'))!;
    // The continual column holds the sequential row's final average (0.7 + 0.9) / 2, not the joint one's.
    expect((stpm[3] as { value: number }).value).toBeCloseTo(0.8, 12);
  });
});

/** A grid of one continual STPM experiment over the three categories. */
function stpmGrid(store: string, joint = false): ReturnType<typeof gridConfig> {
  return gridConfig({
    store,
    datasets: [{ name: 'mvtec', root }],
    methods: [{ name: 'stpm', params: { ...small, epochs: 1, batchSize: 4, trainThreads: 1, threads: 1 } }],
    settings: [{ name: 'continual', joint }],
    seeds: [3],
  });
}

async function runStpmGrid(store: string, joint = false): Promise<ResultRow> {
  const config = stpmGrid(store, joint);
  const results = new ResultsStore(config.store);
  try {
    const { experiments } = await expandGrid(config, (name, r, o) => loadDataset(name, r, o), (k) => results.heatmapDir(k));
    const summary = await runGrid(experiments, results, createExecutor({ heatmaps: false }));
    expect(summary.failed).toEqual([]);
    return results.rows().find((r) => r.key === experiments[0].key)!;
  } finally {
    results.close();
  }
}

describe.each([['padim'], ['patchcore']])('%s: a continual grid aborted between tasks', (method) => {
  test('resumes from the progress file to the same matrix, without learning task 1 again', async () => {
    const config = (store: string): ReturnType<typeof gridConfig> =>
      gridConfig({ store, datasets: [{ name: 'mvtec', root }], methods: [{ name: method, params: small }], settings: ['continual'], seeds: [1] });
    const run = async (store: string, onStage?: (stage: string) => void, signal?: AbortSignal): Promise<{ rows: ResultRow[]; key: string; aborted: boolean }> => {
      const c = config(store);
      const results = new ResultsStore(c.store);
      try {
        const { experiments } = await expandGrid(c, (name, r, o) => loadDataset(name, r, o), (k) => results.heatmapDir(k));
        const summary = await runGrid(experiments, results, createExecutor({ heatmaps: false, onStage: (_e, s) => onStage?.(s) }), { signal });
        expect(summary.failed).toEqual([]);
        return { rows: results.rows(), key: experiments[0].key, aborted: summary.aborted };
      } finally {
        results.close();
      }
    };
    const reference = await run(path.join(tmp, `abort-${method}-ref`, 'results.db'));
    const store = path.join(tmp, `abort-${method}`, 'results.db');
    const controller = new AbortController();
    const first = await run(store, (stage) => {
      if (/^task 2\/3 \S+ fit$/.test(stage)) controller.abort();
    }, controller.signal);
    expect(first.aborted).toBe(true);
    expect(first.rows).toEqual([]);
    const progress = continualCheckpointFile(path.dirname(store), first.key);
    expect(fs.existsSync(progress)).toBe(true);
    const stages: string[] = [];
    const second = await run(store, (stage) => stages.push(stage));
    expect(stages.some((s) => s.startsWith('task 1/3'))).toBe(false);
    expect(fs.existsSync(progress)).toBe(false);
    expect(second.rows).toHaveLength(1);
    expect(second.rows[0].continual!.matrix).toEqual(reference.rows[0].continual!.matrix);
  }, 300000);
});

describe('STPM learns the tasks in turn (the sequential mode)', () => {
  withAddon('task l fits on task l\'s images only, from task l-1\'s weights and optimiser state; same seed, same matrix', async () => {
    const calls: { paths: string[]; opts: FitOptions | undefined; before: DetectorState | null; after: DetectorState; fitCount: number }[] = [];
    const fit = Stpm.prototype.fit;
    const spy = jest.spyOn(Stpm.prototype, 'fit').mockImplementation(async function (this: Stpm, train: TrainSample[], opts?: FitOptions) {
      const fitCount = this.fitCount;
      const before = fitCount > 0 ? this.saveState() : null;
      await fit.call(this, train, opts);
      calls.push({ paths: train.map((s) => s.path), opts, before, after: this.saveState(), fitCount });
    });
    let first: ResultRow;
    try {
      first = await runStpmGrid(path.join(tmp, 'stpm-a', 'results.db'));
    } finally {
      spy.mockRestore();
    }
    expect(calls).toHaveLength(3);
    const order = first.continual!.tasks;
    expect(order).toEqual(categories.map((c) => c.name));
    calls.forEach((call, l) => {
      // The executor's training samples are task l's: its category's training images, nothing from other tasks.
      const task = categories.find((c) => c.name === order[l])!;
      expect(call.paths.slice().sort()).toEqual(trainOf(task).map((s) => s.path).sort());
      expect(call.opts?.continueTraining).toBe(true);
      expect(call.fitCount).toBe(l);
    });
    for (let l = 1; l < 3; l++) {
      const before = calls[l].before!;
      const previous = calls[l - 1].after;
      // Task l starts from exactly the weights and optimiser state task l-1 left: not a fresh initialisation.
      expect(Object.keys(before.arrays).sort()).toEqual(Object.keys(previous.arrays).sort());
      expect(Object.keys(before.arrays).filter((k) => k.startsWith('o:momentum:')).length).toBeGreaterThan(0);
      for (const k of Object.keys(previous.arrays)) {
        expect(Buffer.from(before.arrays[k].buffer).equals(Buffer.from(previous.arrays[k].buffer))).toBe(true);
      }
      // ...and training moved them.
      expect(Buffer.from(calls[l].after.arrays['w:conv1.weight'].buffer).equals(Buffer.from(before.arrays['w:conv1.weight'].buffer))).toBe(false);
    }
    expect(first.notes).toEqual([NOTE_CONTINUAL_SEQUENTIAL]);
    const T = first.continual!.matrix.imageAUROC;
    expect(T.map((r) => r.map((v) => v === null))).toEqual([[false, true, true], [false, false, true], [false, false, false]]);
    const again = await runStpmGrid(path.join(tmp, 'stpm-b', 'results.db'));
    expect(again.continual!.matrix).toEqual(first.continual!.matrix);
    // Joint training is another experiment (another key) with its own note.
    const joint = await runStpmGrid(path.join(tmp, 'stpm-b', 'results.db'), true);
    expect(joint.key).not.toBe(again.key);
    expect(joint.config.setting).toEqual({ name: 'continual', order: null, joint: true });
    expect(joint.notes).toEqual([NOTE_CONTINUAL_JOINT]);
  }, 600000);

  withAddon('a checkpoint carries the optimiser state: a loaded STPM or RD4AD trains on exactly as the saved one', async () => {
    // RD4AD's decoder is slow to train on this machine: two images, one step per fit, and no from-scratch check.
    for (const [make, optimiserKey, images] of [
      [(p: object) => new Stpm(p), 'o:momentum:conv1.weight', 5],
      [(p: object) => new Rd4ad({ ...p, backboneShape: 'resnet18' }), 'o:step:conv1.weight', 2],
    ] as const) {
      const task = (c: Category): Sample[] => trainOf(c).slice(0, images);
      const params = { ...small, epochs: 1, batchSize: 4, trainThreads: 1, threads: 1, seed: 4 };
      const a = make(params);
      const b = make(params);
      const c = make(params);
      try {
        await a.fit(task(categories[0]));
        const saved = a.saveState();
        expect(saved.arrays[optimiserKey]).toBeDefined();
        // Adam's step count as two exact floats {step / 2^24, step % 2^24}: one step so far.
        if (optimiserKey.startsWith('o:step')) expect(Array.from(saved.arrays[optimiserKey])).toEqual([0, 1]);
        await b.loadState(saved);
        expect(b.fitCount).toBe(1);
        await a.fit(task(categories[1]), { continueTraining: true });
        await b.fit(task(categories[1]), { continueTraining: true });
        expect(b.fitCount).toBe(2);
        const sa = a.saveState();
        const sb = b.saveState();
        expect(Object.keys(sb.arrays).sort()).toEqual(Object.keys(sa.arrays).sort());
        for (const k of Object.keys(sa.arrays)) expect(Buffer.from(sb.arrays[k].buffer).equals(Buffer.from(sa.arrays[k].buffer))).toBe(true);
        if (images === 2) continue;
        // Without continueTraining, a fit starts from the seeded initialisation again: twice = once.
        await c.fit(trainOf(categories[1]));
        await a.fit(trainOf(categories[1]));
        expect(a.fitCount).toBe(1);
        const sc = c.saveState();
        for (const k of Object.keys(sc.arrays)) expect(Buffer.from(a.saveState().arrays[k].buffer).equals(Buffer.from(sc.arrays[k].buffer))).toBe(true);
      } finally {
        await a.dispose();
        await b.dispose();
        await c.dispose();
      }
    }
  }, 300000);

  withAddon('a continual grid killed between tasks resumes to the same matrix as an uninterrupted run', async () => {
    const uninterrupted = await runStpmGrid(path.join(tmp, 'kill-ref', 'results.db'));
    const storeFile = path.join(tmp, 'kill', 'results.db');
    const gridFile = path.join(tmp, 'kill', 'grid.json');
    fs.mkdirSync(path.dirname(gridFile), { recursive: true });
    const config = stpmGrid(storeFile);
    fs.writeFileSync(gridFile, JSON.stringify({ ...config, datasets: config.datasets, settings: [{ name: 'continual' }] }));
    const progress = continualCheckpointFile(path.dirname(storeFile), uninterrupted.key);
    const child = path.join(__dirname, 'fixtures', 'continual-child.js');
    const run = (): { exit: Promise<number | null>; kill: () => void; output: () => string } => {
      const proc = spawn(process.execPath, [child, gridFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
      return { exit: new Promise((resolve) => proc.on('close', (code) => resolve(code))), kill: () => proc.kill('SIGKILL'), output: () => output };
    };
    const first = run();
    let exited = false;
    void first.exit.then(() => (exited = true));
    for (let i = 0; i < 6000 && !exited && !fs.existsSync(progress); i++) await new Promise((r) => setTimeout(r, 50));
    expect(fs.existsSync(progress)).toBe(true);
    first.kill();
    expect(await first.exit).toBeNull();
    const killed = new ResultsStore(storeFile, { readonly: true });
    expect(killed.count()).toBe(0);
    killed.close();
    const second = run();
    const code = await second.exit;
    if (code !== 0) process.stderr.write(second.output());
    expect(code).toBe(0);
    // The resumed run started after the saved task (it did not learn task 1 again) and cleaned its progress up.
    expect(second.output()).not.toMatch(/task 1\/3 \S+ fit/);
    expect(fs.existsSync(progress)).toBe(false);
    const store = new ResultsStore(storeFile, { readonly: true });
    const [row] = store.rows();
    store.close();
    expect(row.key).toBe(uninterrupted.key);
    expect(row.continual!.matrix).toEqual(uninterrupted.continual!.matrix);
    expect(row.continual!.forgetting).toEqual(uninterrupted.continual!.forgetting);
  }, 600000);
});
