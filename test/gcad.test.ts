/**
 * GCAD (native/train/gcad.cc, lib/methods/gcad.ts) on tiny generated MVTec LOCO AD data: it trains with the
 * validation split's normals for its map statistics (a seeded held-out slice without one), separates defects, the
 * same seed gives the same scores, a checkpoint reloads to identical scores and continues training exactly,
 * `imiad run` reports sPRO; progress, abort, a diverging loss and bad parameters behave as documented; the PyTorch
 * peer (bench/peers/gcad_torch.py) reproduces the loss trajectory. The tests skip, with the reason printed, when the
 * training addon is not built (the peer test: when /usr/bin/python3 cannot import torch).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { maxRelativeDiff } from '../bench/common';
import { runImiadJob, writeGcadJob } from '../bench/gcad';
import { peerAvailable, peerPython } from '../bench/common';
import type { GcadRunResult } from '../bench/gcad';
import { binaryClassificationMetrics } from '../bindings/metrics';
import { trainAddon, trainAddonPath, trainingAvailable, TrainModel, type Nchw } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Category, Sample } from '../lib/datasets/types';
import { createDetector, readCheckpoint, writeCheckpoint } from '../lib/methods';
import { Gcad } from '../lib/methods/gcad';
import { findMethod } from '../lib/methods/registry';
import { Random } from '../lib/prng';
import { reportData, tableVII, toMarkdown } from '../lib/report';
import { ResultsStore } from '../lib/runner/store';
import { runCli } from './helpers/cli';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-gcad-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) process.stdout.write(`test/gcad.test.ts: skipping the GCAD tests: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
const withAddon = available ? test : test.skip;
const peer = available && peerAvailable(['torch', 'numpy']);
if (available && !peer) process.stdout.write('test/gcad.test.ts: skipping the PyTorch peer comparison: /usr/bin/python3 cannot import torch (apt-get install python3-torch)\n');
const withPeer = peer ? test : test.skip;

let category: Category;
let train: Sample[] = [];
let validation: Sample[] = [];
let testSet: Sample[] = [];
const small = { imageSize: 64, cropSize: 64, trainThreads: 1, threads: 1, device: 'cpu' as const, batchSize: 4, lr: 1e-3 };

beforeAll(async () => {
  const root = path.join(tmp, 'loco');
  await synthesize('loco', root, { seed: 3, categories: 1, size: 64, train: 12, test: 16 });
  [category] = await loadDataset('loco', root);
  train = category.samples.filter((s) => s.split === 'train');
  validation = category.samples.filter((s) => s.split === 'validation');
  testSet = category.samples.filter((s) => s.split === 'test');
});

async function auroc(scores: Float64Array): Promise<number> {
  const labels = Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0)));
  return (await binaryClassificationMetrics(scores, labels)).auroc;
}

describe('GCAD', () => {
  test('is registered as a trained LOCO-capable detector with maps, ImageNet input and 256 px', () => {
    expect(findMethod('gcad')).toMatchObject({ label: 'GCAD', trained: true, hasMaps: true, imageSize: 256, cropSize: 256, normalisation: 'imagenet', continual: 'sequential' });
  });

  withAddon('trains with the validation split, separates defects, same seed same scores, a checkpoint reloads and continues exactly', async () => {
    const params = { ...small, epochs: 8 };
    const a = new Gcad(params);
    const b = new Gcad(params);
    const c = new Gcad(params);
    try {
      const progress: Array<[number, number, string | undefined]> = [];
      await a.fit(train, { validation, onProgress: (done, total, detail) => progress.push([done, total, detail]) });
      // 12 images in batches of 4: 3 steps per epoch; every step reports its epoch, the running loss and the rate.
      expect(progress.length).toBe(24);
      expect(progress[23].slice(0, 2)).toEqual([24, 24]);
      expect(progress[0][2]).toMatch(/^epoch 1\/8 loss \d+\.\d{4} \d+\.\d img\/s$/);
      expect(a.validationSource).toEqual({ kind: 'validation split', images: validation.length });
      const losses = a.trainingStats()!.losses;
      expect(losses).toHaveLength(8);
      expect(losses[7]).toBeLessThan(0.8 * losses[0]);
      const p = await a.predict(testSet);
      expect(p.maps).toHaveLength(testSet.length);
      // LOCO's images are wider than high: the maps come back at the original size.
      expect(p.maps[0]).toMatchObject({ width: 102, height: 64 });
      // Observed 0.98 on this data; the bound leaves room for another BLAS.
      expect(await auroc(p.scores)).toBeGreaterThanOrEqual(0.8);
      expect(a.parameterCount()).toBeGreaterThan(1e6);
      expect(a.stateBytes()).toBeGreaterThan(4 * a.parameterCount());

      await b.fit(train, { validation });
      expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));

      const file = path.join(tmp, 'gcad.imiad');
      await writeCheckpoint(file, { method: 'gcad', params, state: a.saveState() });
      await c.loadState((await readCheckpoint(file)).state);
      expect(c.validationSource).toEqual(a.validationSource);
      const reloaded = await c.predict(testSet);
      expect(Array.from(reloaded.scores)).toEqual(Array.from(p.scores));
      expect(Array.from(reloaded.maps[3].data)).toEqual(Array.from(p.maps[3].data));

      // The continual setting's next task: the loaded detector continues as the saved one does (weights, Adam state).
      await a.fit(train.slice(0, 8), { continueTraining: true, validation });
      await c.fit(train.slice(0, 8), { continueTraining: true, validation });
      expect([a.fitCount, c.fitCount]).toEqual([2, 2]);
      const continued = Array.from((await a.predict(testSet)).scores);
      expect(continued).not.toEqual(Array.from(p.scores));
      expect(Array.from((await c.predict(testSet)).scores)).toEqual(continued);
    } finally {
      await Promise.all([a.dispose(), b.dispose(), c.dispose()]);
    }
  });

  withAddon('without a validation split, a seeded slice of the training normals is held out and not trained on', async () => {
    // 12 normals, 10 %: one image held out; batches of 11 then make one step per epoch (two with all 12).
    const d = new Gcad({ ...small, epochs: 2, batchSize: 11 });
    try {
      let total = 0;
      await d.fit(train, { onProgress: (_done, t) => (total = t) });
      expect(total).toBe(2);
      expect(d.validationSource).toEqual({ kind: 'held-out training normals', images: 1 });
      await d.fit(train, { validation: [], onProgress: (_done, t) => (total = t) });
      expect(d.validationSource).toEqual({ kind: 'held-out training normals', images: 1 });
      const one = new Gcad({ ...small, epochs: 1 });
      try {
        // A single training image serves as both.
        await one.fit(train.slice(0, 1));
        expect(one.validationSource).toEqual({ kind: 'held-out training normals', images: 1 });
        expect((await one.predict(testSet.slice(0, 2))).scores.every(Number.isFinite)).toBe(true);
      } finally {
        await one.dispose();
      }
    } finally {
      await d.dispose();
    }
  });

  withAddon('imiad run on the LOCO layout reports image AUROC and sPRO per anomaly type; --load scores identically', async () => {
    const model = path.join(tmp, 'run-gcad.imiad');
    const args = ['run', '--dataset', 'loco', '--root', path.dirname(category.root), '--method', 'gcad', '--image-size', '64', '--epochs', '1', '--batch-size', '4', '--device', 'cpu', '--quiet'];
    const store = path.join(tmp, 'gcad-results.db');
    const fitted = await runCli([...args, '--save', model, '--store', store, '--json']);
    expect(fitted.stderr).toBe('');
    expect(fitted.code).toBe(0);
    const out = JSON.parse(fitted.stdout) as { results: Array<{ metrics: Record<string, number | null>; efficiency: Record<string, number | null> }> };
    const m = out.results[0].metrics;
    for (const key of ['imageAUROC', 'imageAUROCLogical', 'imageAUROCStructural', 'sPRO', 'sPROLogical', 'sPROStructural', 'pixelAUROC']) {
      expect(typeof m[key]).toBe('number');
    }
    expect(out.results[0].efficiency.trainMs).toBeGreaterThan(0);
    expect(out.results[0].efficiency.memoryBytes).toBeGreaterThan(4e6);
    const loaded = await runCli([...args, '--load', model, '--json']);
    expect(loaded.code).toBe(0);
    const again = (JSON.parse(loaded.stdout) as typeof out).results[0].metrics;
    expect(again.imageAUROC).toBe(m.imageAUROC);
    expect(again.sPRO).toBe(m.sPRO);
    expect(again.pixelAUROC).toBe(m.pixelAUROC);
    // The stored row becomes GCAD's row of Table VII (image AUROC and sPRO, logical / structural / mean).
    const results = new ResultsStore(store, { readonly: true });
    try {
      const md = toMarkdown(tableVII(reportData(results.rows()))!);
      const f = (v: number | null): string => (v as number).toFixed(3);
      const mean = ((m.imageAUROCLogical as number) + (m.imageAUROCStructural as number)) / 2;
      expect(md).toMatch(new RegExp(`\\| gcad \\| [*<u>]*${f(m.imageAUROCLogical)}[*</u>]* \\| [*<u>]*${f(m.imageAUROCStructural)}[*</u>]* \\| [*<u>]*${f(mean)}`));
      expect(md).toContain(f(m.sPRO));
    } finally {
      results.close();
    }
  });

  withAddon('training stops cleanly on abort and reports progress until then', async () => {
    const d = new Gcad({ ...small, epochs: 1000 });
    const ac = new AbortController();
    let steps = 0;
    try {
      await expect(
        d.fit(train, {
          validation,
          signal: ac.signal,
          onProgress: (done) => {
            steps = done;
            if (done === 2) ac.abort();
          },
        }),
      ).rejects.toMatchObject({ code: 'ABORT_ERR' });
      expect(steps).toBe(2);
      await expect(d.predict(testSet)).rejects.toMatchObject({ code: 'ERR_IMIAD_STATE', message: 'GCAD: call fit() before predict()' });
    } finally {
      await d.dispose();
    }
  });

  withAddon('a loss that becomes NaN or infinite stops training, naming epoch and step; nothing can be saved', async () => {
    const d = new Gcad({ ...small, epochs: 50, lr: 1e12 });
    try {
      let message = '';
      await d.fit(train, { validation }).catch((err: Error & { code: string }) => {
        expect(err.code).toBe('ERR_IMIAD_TRAINING_DIVERGED');
        message = err.message;
      });
      expect(message).toMatch(/^GCAD's training loss became (NaN|Infinity|-Infinity) in epoch \d+, step [123] \(lower --lr\); the model was not kept$/);
      expect(() => d.saveState()).toThrow('GCAD: call fit() before predict()');
    } finally {
      await d.dispose();
    }
  });

  withAddon('bad parameters and misshaped input are refused with the argument named', async () => {
    expect(() => createDetector('gcad', { imageSize: 24, device: 'cpu' })).toThrow(
      'Expected integer of at least 32 (the global encoder halves the crop five times) for cropSize but received 24 of type number',
    );
    expect(() => new Gcad({ validationFraction: 1 })).toThrow('Expected number between 0 and 1 (exclusive) for validationFraction but received 1 of type number');
    expect(() => new Gcad({ bottleneck: 0 })).toThrow('Expected integer between 1 and 4096 for bottleneck but received 0 of type number');
    expect(() => new Gcad({ weightDecay: -1 })).toThrow('Expected number >= 0 for weightDecay but received -1 of type number');
    const d = new Gcad({ ...small, epochs: 1 });
    try {
      await expect(d.fit(train, { validation: 'validation' as unknown as Sample[] })).rejects.toThrow('Expected array of samples for validation but received validation of type string');
    } finally {
      await d.dispose();
    }
    const m = new TrainModel({ kind: 'gcad', channels: [8], seed: 0, threads: 1, lr: 1e-3, extra: { image: [32, 32], grid: [4, 4], bottleneck: [8] } });
    const teacher: Nchw[] = [{ data: new Float32Array(2 * 8 * 4 * 4).fill(0.5), shape: [2, 8, 4, 4] }];
    const images: Nchw = { data: new Float32Array(2 * 3 * 32 * 32).fill(0.1), shape: [2, 3, 32, 32] };
    await expect(m.step(images, teacher)).rejects.toMatchObject({ code: 'ERR_IMIAD_STATE', message: "GCAD's teacher statistics are missing: calibrate on the training images first" });
    await m.calibrateStage('teacher', null, teacher, true);
    await expect(m.step({ ...images, shape: [2, 3, 16, 64] }, teacher)).rejects.toMatchObject({ code: 'ERR_IMIAD_DIMS', message: "Expected GCAD's image batch [2, 3, 32, 32] (the teacher's images)" });
    await expect(m.maps(images, teacher, 32)).rejects.toMatchObject({ code: 'ERR_IMIAD_STATE', message: "GCAD's map statistics are missing: calibrate on normal validation images first" });
    await expect(m.calibrateStage('nope', images, teacher, true)).rejects.toMatchObject({ code: 'ERR_IMIAD_ARGUMENT', message: "Expected GCAD's calibration stage 'teacher' or 'maps' but received nope" });
    expect(() => new TrainModel({ kind: 'gcad', channels: [8], seed: 0, threads: 1, lr: 1e-3, extra: { image: [16, 16], grid: [2, 2] } })).toThrow(
      'Expected GCAD images of at least 32 x 32 pixels (the global encoder halves them five times) but received 16 x 16',
    );
    // Constant teacher features: every standard deviation is 0, so they are taken as 1 (no division by zero).
    expect(Number.isFinite(await m.step(images, teacher))).toBe(true);
  });

  withAddon("--device: 'cuda' without a CUDA libtorch is ERR_IMIAD_CUDA_UNAVAILABLE, 'auto' trains on the CPU, others are refused", () => {
    const addon = trainAddon();
    if (addon.cudaAvailable) {
      expect(new Gcad({ ...small, device: 'cuda' }).trainDevice).toBe('cuda');
      return;
    }
    const reason = addon.cudaBuilt ? "the training addon's libtorch sees no GPU" : 'the training addon was built against a libtorch without CUDA';
    expect(() => new Gcad({ ...small, device: 'cuda' })).toThrow(`CUDA was requested (device: 'cuda') but is unavailable: ${reason}`);
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(new Gcad({ ...small, device: 'auto' }).trainDevice).toBe('cpu');
    } finally {
      spy.mockRestore();
    }
    expect(() => new Gcad({ ...small, device: 'gpu' as 'cpu' })).toThrow("Expected one of 'auto', 'cpu', 'cuda' for device but received gpu of type string");
  });

  withPeer('the PyTorch peer, from the same weights on the same batches, gives the same 20 losses and statistics', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'peer-'));
    const rng = new Random(5);
    const size = 64;
    const shapes = [
      [32, 8, 8],
      [64, 4, 4],
    ];
    const data = (n: number): { n: number; images: Float32Array; teacher: Float32Array[] } => ({
      n,
      images: Float32Array.from({ length: n * 3 * size * size }, () => rng.normal()),
      teacher: shapes.map(([c, h, w]) => Float32Array.from({ length: n * c * h * w }, () => Math.max(0, rng.normal() + 0.3))),
    });
    // 16 images, 5 epochs of 4 shuffled batches of 4: 20 steps.
    const epochs = Array.from({ length: 5 }, () => {
      const o = rng.shuffle(Array.from({ length: 16 }, (_, i) => i));
      return [0, 1, 2, 3].map((k) => o.slice(4 * k, 4 * k + 4));
    });
    const job = await writeGcadJob(dir, { threads: 1, lr: 1e-4, weightDecay: 1e-5, bottleneck: 64, image: [size, size], grid: [8, 8], shapes, epochs, train: data(16), validation: data(4) });
    const mine = await runImiadJob(job);
    // bench/common's runPeer resolves the script from dist/; here it is run from the source tree.
    const r = spawnSync(peerPython(), [path.join(__dirname, '..', 'bench', 'peers', 'gcad_torch.py'), job], { encoding: 'utf8', maxBuffer: 1 << 28 });
    expect(r.stderr).toBe('');
    const theirs = JSON.parse(r.stdout.trim().split('\n').pop() as string) as GcadRunResult;
    expect(mine.losses).toHaveLength(20);
    expect(theirs.losses).toHaveLength(20);
    expect(maxRelativeDiff(mine.losses, theirs.losses)).toBeLessThanOrEqual(1e-4);
    // The loss moves over the 20 steps (the comparison is not of 20 equal numbers).
    expect(Math.abs(mine.losses[19] - mine.losses[0])).toBeGreaterThan(1e-3);
    expect(theirs.teacher_std_max_rel_diff).toBeLessThanOrEqual(1e-5);
    expect(theirs.teacher_mean_max_abs_diff).toBeLessThanOrEqual(1e-5);
    expect(maxRelativeDiff(mine.map_mean!, theirs.map_mean!)).toBeLessThanOrEqual(1e-4);
    expect(maxRelativeDiff(mine.map_std!, theirs.map_std!)).toBeLessThanOrEqual(1e-4);
  });
});
