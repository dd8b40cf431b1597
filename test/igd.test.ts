/**
 * IGD (native/train/igd.cc, lib/methods/igd.ts) on tiny generated data: it separates defects, the same seed gives
 * the same losses and scores, a checkpoint reloads to identical scores and maps and continues training exactly;
 * bad input (an image side the generator cannot make, a diverging loss, features of the wrong shape) is refused with
 * a clear error; and its loss trajectory over 20 steps matches the PyTorch peer written from the official code
 * (bench/peers/igd_torch.py) from the same weights and batches. The tests skip, with the reason printed, when the
 * training addon is not built, and the peer test when /usr/bin/python3 has no torch.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { binaryClassificationMetrics } from '../bindings/metrics';
import { trainAddonPath, trainingAvailable, TrainModel, type Nchw } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Category, Sample } from '../lib/datasets/types';
import { createDetector, Igd, readCheckpoint, writeCheckpoint } from '../lib/methods';
import { findMethod } from '../lib/methods/registry';
import { Random } from '../lib/prng';
import { runExperiment } from '../lib/runner/experiment';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-igd-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) process.stdout.write(`test/igd.test.ts: skipping: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
const withAddon = available ? test : test.skip;
const PYTHON = '/usr/bin/python3';
const torchReady = available && spawnSync(PYTHON, ['-c', 'import torch, numpy'], { stdio: 'ignore' }).status === 0;
if (available && !torchReady) process.stdout.write(`test/igd.test.ts: skipping the PyTorch peer comparison: ${PYTHON} lacks torch or numpy\n`);
const withPeer = torchReady ? test : test.skip;

let category: Category;
let train: Sample[] = [];
let testSet: Sample[] = [];
const small = { imageSize: 64, cropSize: 64, trainThreads: 1, threads: 1, device: 'cpu' as const, batchSize: 4 };

beforeAll(async () => {
  const root = path.join(tmp, 'mvtec');
  await synthesize('mvtec', root, { seed: 3, categories: 1, size: 64, train: 8, test: 10 });
  [category] = await loadDataset('mvtec', root);
  train = category.samples.filter((s) => s.split === 'train');
  testSet = category.samples.filter((s) => s.split === 'test');
});

async function auroc(scores: Float64Array | number[]): Promise<number> {
  const labels = Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0)));
  return (await binaryClassificationMetrics(Float64Array.from(scores), labels)).auroc;
}

describe('IGD', () => {
  withAddon('defects score higher; same seed, same losses and scores; a checkpoint reloads to identical scores and maps', async () => {
    const params = { ...small, epochs: 3 };
    const a = new Igd(params);
    const b = new Igd(params);
    const c = new Igd(params);
    try {
      const progress: Array<[number, number, string]> = [];
      await a.fit(train, { onProgress: (d, t, detail) => progress.push([d, t, detail ?? '']) });
      const stats = a.trainingStats()!;
      expect(stats.losses).toHaveLength(3);
      expect(stats.losses.every(Number.isFinite)).toBe(true);
      // 8 images in batches of 4: 2 steps per epoch.
      expect(progress.map(([d, t]) => [d, t])).toEqual([1, 2, 3, 4, 5, 6].map((d) => [d, 6]));
      expect(progress[5][2]).toMatch(/^epoch 3\/3 loss \d+\.\d{4} \d+\.\d img\/s$/);
      // Generator ~11 M at any side; the discriminator's LayerNorms shrink with the side (64 px: ~9.2 M in all).
      expect(a.parameterCount()).toBeGreaterThan(11e6);
      const p = await a.predict(testSet);
      expect(p.maps).toHaveLength(testSet.length);
      expect([p.maps[0].width, p.maps[0].height]).toEqual([64, 64]);
      // The official score: 0.5 reconstruction + 0.5 (1 - exp(-d / sigma)), each in [0, 1] here.
      for (const s of p.scores) expect(s).toBeGreaterThan(0), expect(s).toBeLessThan(1);
      // Generated defects separate with room to spare (all 10 test images ranked right on this machine).
      expect(await auroc(p.scores)).toBeGreaterThanOrEqual(0.84);
      expect(await auroc(p.maps.map((m) => Math.max(...m.data)))).toBeGreaterThanOrEqual(0.84);
      await b.fit(train);
      expect(b.trainingStats()!.losses).toEqual(stats.losses);
      const pb = await b.predict(testSet);
      expect(Array.from(pb.scores)).toEqual(Array.from(p.scores));
      const file = path.join(tmp, 'igd.imiad');
      const saved = a.saveState();
      expect(saved.arrays['w:c']).toHaveLength(128);
      expect((saved.arrays['w:sigma'] as Float32Array)[0]).toBeGreaterThanOrEqual(1);
      expect((saved.config.optimizerNames as string[])).toContain('exp_avg:discriminator.ln1.weight');
      await writeCheckpoint(file, { method: 'igd', params: {}, state: saved });
      await c.loadState((await readCheckpoint(file)).state);
      const pc = await c.predict(testSet);
      expect(Array.from(pc.scores)).toEqual(Array.from(p.scores));
      expect(Array.from(pc.maps[3].data)).toEqual(Array.from(p.maps[3].data));
    } finally {
      await Promise.all([a.dispose(), b.dispose(), c.dispose()]);
    }
  }, 600_000);

  withAddon('continueTraining goes on from the weights, optimiser state and descriptor that a checkpoint keeps', async () => {
    const params = { ...small, epochs: 1, refreshEvery: 1 };
    const a = new Igd(params);
    const b = new Igd(params);
    try {
      await a.fit(train);
      await b.loadState(a.saveState());
      await a.fit(train, { continueTraining: true });
      await b.fit(train, { continueTraining: true });
      expect([a.fitCount, b.fitCount]).toEqual([2, 2]);
      expect(b.trainingStats()!.losses).toEqual(a.trainingStats()!.losses);
      expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from((await a.predict(testSet)).scores));
    } finally {
      await Promise.all([a.dispose(), b.dispose()]);
    }
  }, 600_000);

  withAddon('an abort stops training between steps with ABORT_ERR and keeps no model', async () => {
    const d = new Igd({ ...small, epochs: 50 });
    const ac = new AbortController();
    try {
      let steps = 0;
      const err = await d
        .fit(train, {
          signal: ac.signal,
          onProgress: () => {
            steps += 1;
            ac.abort();
          },
        })
        .then(
          () => null,
          (e: Error & { code: string }) => e,
        );
      expect(err?.code).toBe('ABORT_ERR');
      expect(steps).toBe(1);
      expect(() => d.saveState()).toThrow('IGD: call fit() before predict()');
    } finally {
      await d.dispose();
    }
  });

  withAddon('an image side the generator cannot make is refused with the sides it accepts', () => {
    expect(() => new Igd({ ...small, imageSize: 96, cropSize: 96 })).toThrow(
      'Expected cropSize to be a multiple of 64 (64, 128, 192, 256, ...) for IGD, whose generator doubles a side of cropSize / 64 six times, but received 96',
    );
    expect(() => new Igd({ ...small, flip: 'yes' as unknown as boolean })).toThrow('Expected boolean for flip but received yes of type string');
  });

  withAddon('a loss that becomes NaN or infinite stops training, naming epoch and step; nothing can be saved', async () => {
    const d = new Igd({ ...small, epochs: 20, lr: 1e30 });
    try {
      const err = (await d.fit(train).then(
        () => null,
        (e: Error & { code: string }) => e,
      )) as (Error & { code: string }) | null;
      expect(err?.code).toBe('ERR_IMIAD_TRAINING_DIVERGED');
      expect(err?.message).toMatch(/^IGD's training loss became (NaN|Infinity|-Infinity) in epoch \d+, step [12] \(lower --lr\); the model was not kept$/);
      expect(() => d.saveState()).toThrow('IGD: call fit() before predict()');
    } finally {
      await d.dispose();
    }
  });

  withAddon('the engine checks the shapes it is handed and refuses to train before the descriptor exists', async () => {
    const m = new TrainModel({ kind: 'igd', channels: [8], seed: 0, threads: 1, lr: 1e-4, beta1: 0, beta2: 0.9, extra: { size: [64] } });
    const images: Nchw = { data: new Float32Array(2 * 3 * 64 * 64), shape: [2, 3, 64, 64] };
    const features: Nchw = { data: new Float32Array(2 * 8), shape: [2, 8, 1, 1] };
    await expect(m.step(images, [features])).rejects.toMatchObject({ code: 'ERR_IMIAD_STATE' });
    await expect(m.step({ data: new Float32Array(2 * 3 * 32 * 32), shape: [2, 3, 32, 32] }, [features])).rejects.toMatchObject({
      code: 'ERR_IMIAD_DIMS',
      message: "Expected IGD's images as [2, 3, 64, 64] beside their features",
    });
    await expect(m.scores([features])).rejects.toMatchObject({ code: 'ERR_IMIAD_DIMS', message: "Expected IGD's images as [2, 3, 64, 64] beside their features" });
    expect(() => m.configure('fit', [0, 0])).toThrow("Expected IGD's setting fit = [steps >= 1, fit index >= 0] but received fit");
    expect(() => new TrainModel({ kind: 'igd', channels: [8], seed: 0, threads: 1, lr: 1e-4, extra: { size: [100] } })).toThrow(
      'Expected an IGD image side that is a multiple of 64 (64, 128, 256, ...) but received 100',
    );
  });

  withAddon('the descriptor: c = mean latent (|c_i| < 0.1 pushed to 0.1), sigma around the centre from before the pass', async () => {
    const channels = 8;
    const n = 6;
    const rng = new Random(4);
    const features = Float32Array.from({ length: n * channels }, () => rng.normal());
    const m = new TrainModel({ kind: 'igd', channels: [channels], seed: 1, threads: 1, lr: 1e-3, beta1: 0, beta2: 0.9, extra: { size: [64] } });
    m.configure('fit', [10, 0]);
    const batchesOf = [[0, 1, 2, 3], [4, 5]];
    const pass = async (): Promise<void> => {
      for (const [j, b] of batchesOf.entries()) {
        const f = new Float32Array(b.length * channels);
        b.forEach((k, i) => f.set(features.subarray(k * channels, (k + 1) * channels), i * channels));
        await m.calibrate([{ data: f, shape: [b.length, channels, 1, 1] }], j === 0);
      }
    };
    const get = (name: string): Float32Array => {
      const st = m.state();
      return st.arrays[st.names.indexOf(name)];
    };
    // The latents of the current encoder head, in float64.
    const latents = (): number[][] => {
      const w = get('generator.ln11.weight');
      const bias = get('generator.ln11.bias');
      return Array.from({ length: n }, (_, i) => Array.from({ length: 128 }, (_, o) => bias[o] + Array.from({ length: channels }, (_, k) => w[o * channels + k] * features[i * channels + k]).reduce((a, x) => a + x, 0)));
    };
    const centre = (z: number[][]): number[] =>
      z[0].map((_, o) => {
        const v = z.reduce((a, row) => a + row[o], 0) / n;
        return Math.abs(v) < 0.1 && v !== 0 ? Math.sign(v) * 0.1 : v;
      });
    const sigmaAround = (z: number[][], c: ArrayLike<number>): number =>
      batchesOf.map((b) => Math.max(1, b.reduce((a, i) => a + z[i].reduce((d, v, o) => d + (v - c[o]) ** 2, 0), 0) / b.length)).reduce((a, x) => a + x, 0) / batchesOf.length;
    await pass();
    const z0 = latents();
    const c0 = centre(z0);
    get('c').forEach((v, o) => expect(v).toBeCloseTo(c0[o], 5));
    expect(get('sigma')[0]).toBe(0);
    await pass();
    expect(get('sigma')[0]).toBeCloseTo(sigmaAround(z0, c0), 4);
    // One step moves the encoder head; a refresh pass takes sigma around the old centre, then the new centre.
    const images: Nchw = { data: Float32Array.from({ length: 2 * 3 * 64 * 64 }, () => rng.normal()), shape: [2, 3, 64, 64] };
    await m.step(images, [{ data: features.slice(0, 2 * channels), shape: [2, channels, 1, 1] }]);
    const z1 = latents();
    expect(z1[0][0]).not.toBe(z0[0][0]);
    await pass();
    expect(get('sigma')[0]).toBeCloseTo(sigmaAround(z1, c0), 4);
    const c1 = centre(z1);
    get('c').forEach((v, o) => expect(v).toBeCloseTo(c1[o], 5));
  });

  withPeer('the loss trajectory over 20 steps matches the PyTorch peer from the same weights and batches', async () => {
    const side = 64;
    const channels = 16;
    const n = 12;
    const rng = new Random(11);
    const images = Float32Array.from({ length: n * 3 * side * side }, () => rng.normal());
    // Smooth images (so that MS-SSIM has structure): a running average along the rows.
    for (let i = 1; i < images.length; i++) if (i % side !== 0) images[i] = 0.7 * images[i - 1] + 0.3 * images[i];
    const features = Float32Array.from({ length: n * channels }, () => Math.abs(rng.normal()));
    const steps = 20;
    const model = new TrainModel({ kind: 'igd', channels: [channels], seed: 5, threads: 1, lr: 1e-4, beta1: 0, beta2: 0.9, extra: { size: [side] } });
    model.configure('fit', [steps, 0]);
    const calibration = [0, 4, 8].map((s) => [s, s + 1, s + 2, s + 3]);
    const gather = (idx: number[]): [Nchw, Nchw] => {
      const im = new Float32Array(idx.length * 3 * side * side);
      const f = new Float32Array(idx.length * channels);
      idx.forEach((k, j) => {
        im.set(images.subarray(k * 3 * side * side, (k + 1) * 3 * side * side), j * 3 * side * side);
        f.set(features.subarray(k * channels, (k + 1) * channels), j * channels);
      });
      return [
        { data: im, shape: [idx.length, 3, side, side] },
        { data: f, shape: [idx.length, channels, 1, 1] },
      ];
    };
    const state = model.state();
    for (let pass = 0; pass < 2; pass++) {
      for (const [j, b] of calibration.entries()) await model.calibrate([gather(b)[1]], j === 0);
    }
    const order = rng.fork('batches');
    const batchList = Array.from({ length: steps }, () => order.shuffle(Array.from({ length: n }, (_, i) => i)).slice(0, 4));
    const losses: number[] = [];
    for (const b of batchList) {
      const [im, f] = gather(b);
      losses.push(await model.step(im, [f]));
    }
    const weights = path.join(tmp, 'peer-weights.bin');
    fs.writeFileSync(weights, Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
    fs.writeFileSync(path.join(tmp, 'peer-images.bin'), Buffer.from(images.buffer));
    fs.writeFileSync(path.join(tmp, 'peer-features.bin'), Buffer.from(features.buffer));
    const job = {
      side,
      channels,
      lr: 1e-4,
      steps,
      seed: 5,
      threads: 1,
      names: state.names,
      shapes: state.shapes,
      weights,
      images: path.join(tmp, 'peer-images.bin'),
      features: path.join(tmp, 'peer-features.bin'),
      calibration,
      batches: batchList,
      epochs: steps,
    };
    fs.writeFileSync(path.join(tmp, 'peer.json'), JSON.stringify(job));
    const r = spawnSync(PYTHON, [path.join(__dirname, '..', 'bench', 'peers', 'igd_torch.py'), path.join(tmp, 'peer.json')], { encoding: 'utf8' });
    expect(r.stderr.split('\n').filter((l) => /Error|Traceback/.test(l))).toEqual([]);
    const peer = JSON.parse(r.stdout.trim().split('\n').pop()!) as { losses: number[]; c: number[]; sigma: number };
    expect(peer.losses).toHaveLength(steps);
    const c = model.state();
    const saved = c.arrays[c.names.indexOf('c')];
    const sigma = c.arrays[c.names.indexOf('sigma')][0];
    expect(Math.abs(sigma - peer.sigma) / peer.sigma).toBeLessThan(1e-5);
    saved.forEach((v, i) => expect(Math.abs(v - peer.c[i])).toBeLessThan(1e-5));
    const rel = losses.map((l, i) => Math.abs(l - peer.losses[i]) / Math.abs(peer.losses[i]));
    // The same computation in the same order (docs/detectors-igd.md, "Fidelity"): every step's loss is PyTorch's to
    // the bit on this machine; the bound leaves room only for a BLAS that rounds differently between the processes.
    expect(Math.max(...rel)).toBeLessThan(1e-6);
    // The trajectory moves: the comparison is not of 20 equal numbers.
    expect(Math.max(...losses) - Math.min(...losses)).toBeGreaterThan(1e-3);
  }, 600_000);

  withAddon('imiad run --method igd: the experiment path with pixel metrics; a saved run reloads to the same metrics', async () => {
    const file = path.join(tmp, 'run-igd.imiad');
    const base = { dataset: 'mvtec' as const, root: category.root, category, method: 'igd', params: { ...small, epochs: 1 } };
    const r = await runExperiment({ ...base, saveCheckpoint: file });
    expect(r.metrics.pixel_auroc).not.toBeNull();
    expect(r.efficiency.train_seconds).toBeGreaterThan(0);
    const loaded = await runExperiment({ ...base, loadCheckpoint: file });
    expect(loaded.metrics.image_auroc).toBe(r.metrics.image_auroc);
    expect(loaded.metrics.pixel_auroc).toBe(r.metrics.pixel_auroc);
  }, 600_000);

  withAddon('the registry entry and createDetector give the Table V defaults', () => {
    expect(findMethod('igd')).toMatchObject({ trained: true, hasMaps: true, imageSize: 256, cropSize: 256, normalisation: 'imagenet', continual: 'sequential' });
    const d = createDetector('igd', { device: 'cpu' }) as Igd;
    expect([d.epochs, d.lr, d.params.batchSize, d.params.cropSize, d.sigma, d.flip, d.refreshEvery]).toEqual([256, 1e-4, 16, 256, 4, true, 10]);
    expect(d.params.layers).toEqual(['layer4']);
  });
});
