/**
 * The trained heads on frozen features (FastFlow and CFlow: native/train/flows.cc; CFA: feature_heads.cc): on tiny
 * generated data
 * they lower their loss and separate defects, the same seed gives the same scores, a checkpoint reloads to identical
 * scores; bad input (image size, tap names, a diverging loss, CUDA on a CPU libtorch) is refused with a clear error.
 * The tests skip, with the reason printed, when the training addon is not built.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { binaryClassificationMetrics } from '../bindings/metrics';
import { trainAddon, trainAddonPath, trainingAvailable, TrainModel, type Nchw } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Category, Sample } from '../lib/datasets/types';
import { Cfa, CFA_LAYERS, CFlow, createDetector, CsFlow, FastFlow, readCheckpoint, writeCheckpoint } from '../lib/methods';
import { findMethod } from '../lib/methods/registry';
import type { Detector } from '../lib/methods/types';
import { runExperiment } from '../lib/runner/experiment';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-heads-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) {
  process.stdout.write(`test/heads.test.ts: skipping the flow tests: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
}
const withAddon = available ? test : test.skip;

let category: Category;
let train: Sample[] = [];
let testSet: Sample[] = [];
const small = { imageSize: 64, cropSize: 64, trainThreads: 1, threads: 1, device: 'cpu' as const };

beforeAll(async () => {
  const root = path.join(tmp, 'mvtec');
  await synthesize('mvtec', root, { seed: 3, categories: 1, size: 64, train: 8, test: 10 });
  [category] = await loadDataset('mvtec', root);
  train = category.samples.filter((s) => s.split === 'train');
  testSet = category.samples.filter((s) => s.split === 'test');
});

async function auroc(scores: Float64Array): Promise<number> {
  const labels = Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0)));
  return (await binaryClassificationMetrics(scores, labels)).auroc;
}

/** Saves `fitted`'s state through the file format, loads it into `fresh`, and expects identical scores and maps. */
async function roundTrip(method: string, fitted: Detector, fresh: Detector, before: Float64Array): Promise<void> {
  const file = path.join(tmp, `${method}.imiad`);
  await writeCheckpoint(file, { method, params: {}, state: fitted.saveState!() });
  await fresh.loadState!((await readCheckpoint(file)).state);
  const after = await fresh.predict(testSet);
  expect(Array.from(after.scores)).toEqual(Array.from(before));
}

describe('FastFlow', () => {
  withAddon('the loss falls, defects score higher, same seed same scores, a reload scores identically', async () => {
    const params = { ...small, epochs: 3, batchSize: 4 };
    const a = new FastFlow(params);
    const b = new FastFlow(params);
    const c = new FastFlow(params);
    try {
      const progress: string[] = [];
      await a.fit(train, { onProgress: (_d, _t, detail) => progress.push(detail ?? '') });
      const stats = a.trainingStats()!;
      expect(stats.losses).toHaveLength(3);
      expect(stats.losses[2]).toBeLessThan(stats.losses[0]);
      expect(progress).toHaveLength(6);
      expect(progress[5]).toMatch(/^epoch 3\/3 loss -?\d+\.\d{4} \d+\.\d img\/s$/);
      // ResNet-18 taps 64/128/256 channels; 8 blocks each; LayerNorms [c, 16, 16], [c, 8, 8], [c, 4, 4].
      expect(a.parameterCount()).toBeGreaterThan(0);
      expect(a.stateBytes()).toBeGreaterThan(a.parameterCount() * 4 - 1);
      const p = await a.predict(testSet);
      expect(p.maps[0].width).toBe(64);
      expect(Math.max(...p.maps[0].data)).toBeLessThanOrEqual(0);
      expect(await auroc(p.scores)).toBeGreaterThanOrEqual(0.8);
      await b.fit(train);
      expect(b.trainingStats()!.losses).toEqual(stats.losses);
      expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));
      await roundTrip('fastflow', a, c, p.scores);
    } finally {
      await Promise.all([a.dispose(), b.dispose(), c.dispose()]);
    }
  });

  withAddon('fit() starts fresh; continueTraining goes on with the optimiser state, which a checkpoint keeps', async () => {
    const params = { ...small, epochs: 1, batchSize: 4 };
    const a = new FastFlow(params);
    const b = new FastFlow(params);
    try {
      await a.fit(train);
      const once = Array.from((await a.predict(testSet)).scores);
      await a.fit(train);
      expect(a.fitCount).toBe(1);
      expect(Array.from((await a.predict(testSet)).scores)).toEqual(once);
      const saved = a.saveState();
      expect((saved.config.optimizerNames as string[]).some((n) => n.startsWith('exp_avg:flows.0.0.subnet.0.weight'))).toBe(true);
      await b.loadState(saved);
      await a.fit(train, { continueTraining: true });
      await b.fit(train, { continueTraining: true });
      expect([a.fitCount, b.fitCount]).toEqual([2, 2]);
      const continued = Array.from((await a.predict(testSet)).scores);
      expect(continued).not.toEqual(once);
      expect(Array.from((await b.predict(testSet)).scores)).toEqual(continued);
    } finally {
      await Promise.all([a.dispose(), b.dispose()]);
    }
  });

  withAddon('an image size the LayerNorm cannot take is refused before training, with sizes it accepts', () => {
    expect(() => new FastFlow({ ...small, imageSize: 72, cropSize: 72 })).toThrow(
      "Expected a multiple of 16 (FastFlow's LayerNorm fixes the feature sides to s/4, s/8, s/16; e.g. 64 or 80) for cropSize but received 72 of type number",
    );
    try {
      new FastFlow({ imageSize: 250, device: 'cpu' });
    } catch (err) {
      expect((err as { code: string }).code).toBe('ERR_IMIAD_RANGE');
      expect((err as Error).message).toContain('e.g. 240 or 256');
    }
    expect.assertions(3);
  });

  withAddon('a loss that becomes NaN or infinite stops training, naming epoch and step; nothing can be saved', async () => {
    const d = new FastFlow({ ...small, epochs: 50, batchSize: 4, lr: 1e12 });
    try {
      let message = '';
      await d.fit(train).catch((err: Error & { code: string }) => {
        expect(err.code).toBe('ERR_IMIAD_TRAINING_DIVERGED');
        message = err.message;
      });
      expect(message).toMatch(/^FastFlow's training loss became (NaN|Infinity|-Infinity) in epoch \d+, step [12] \(lower --lr\); the model was not kept$/);
      expect(() => d.saveState()).toThrow('FastFlow: call fit() before predict()');
    } finally {
      await d.dispose();
    }
  });

  withAddon('a tap name that does not exist lists the candidates', async () => {
    const d = new FastFlow({ ...small, layers: ['layer1', 'layer2', 'nope'] });
    try {
      await expect(d.fit(train)).rejects.toMatchObject({ code: 'ERR_IMIAD_LAYER', message: expect.stringMatching(/^Unknown layer 'nope': .*candidates: .*layer3/) });
    } finally {
      await d.dispose();
    }
  });
});

describe('CFlow', () => {
  withAddon('the loss falls, defects score higher, same seed same scores, a reload scores identically', async () => {
    const params = { ...small, backboneShape: 'resnet18' as const, epochs: 1, subEpochs: 3, batchSize: 4, fibers: 64, lr: 1e-3 };
    const a = new CFlow(params);
    const b = new CFlow(params);
    const c = new CFlow(params);
    try {
      await a.fit(train);
      const stats = a.trainingStats()!;
      expect(stats.epochs).toBe(3);
      expect(stats.losses[2]).toBeLessThan(stats.losses[0]);
      const p = await a.predict(testSet);
      expect(p.maps[0].width).toBe(64);
      expect(await auroc(p.scores)).toBeGreaterThanOrEqual(0.8);
      await b.fit(train);
      expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));
      await roundTrip('cflow', a, c, p.scores);
    } finally {
      await Promise.all([a.dispose(), b.dispose(), c.dispose()]);
    }
  });

  withAddon('the normalising maxima are fixed on the training normals: a training image scores near the floor', async () => {
    const d = new CFlow({ ...small, backboneShape: 'resnet18', epochs: 1, subEpochs: 1, batchSize: 4, fibers: 64 });
    try {
      await d.fit(train);
      const p = await d.predict(train);
      // map = levels - sum_l exp(log p_l / C - max over training) >= 0 on every training pixel.
      for (const m of p.maps) expect(Math.min(...m.data)).toBeGreaterThanOrEqual(0);
      const state = d.saveState();
      const max = state.arrays['w:level_max'] as Float32Array;
      expect(max).toHaveLength(3);
      expect(Array.from(max).every(Number.isFinite)).toBe(true);
    } finally {
      await d.dispose();
    }
  });
});

describe('CS-Flow', () => {
  withAddon('three input scales; the loss falls, defects score higher, same seed same scores, a reload scores identically', async () => {
    const params = { ...small, layers: ['layer3'], hidden: 32, epochs: 3, batchSize: 4 };
    const a = new CsFlow(params);
    const b = new CsFlow(params);
    const c = new CsFlow(params);
    try {
      await a.fit(train);
      const stats = a.trainingStats()!;
      expect(stats.losses[2]).toBeLessThan(stats.losses[0]);
      const p = await a.predict(testSet);
      expect(p.maps[0].width).toBe(64);
      // The image score is mean z^2, not the map's maximum (a product of per-scale means).
      expect(p.scores[0]).not.toBeCloseTo(Math.max(...p.maps[0].data), 6);
      expect(await auroc(p.scores)).toBeGreaterThanOrEqual(0.8);
      await b.fit(train);
      expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));
      await roundTrip('csflow', a, c, p.scores);
    } finally {
      await Promise.all([a.dispose(), b.dispose(), c.dispose()]);
    }
  });

  withAddon('a crop whose scales do not halve the tapped sides exactly is refused before training', () => {
    expect(() => new CsFlow({ ...small, layers: ['layer3'], imageSize: 96, cropSize: 96 })).toThrow(
      "Expected a multiple of 64 (CS-Flow's three scales must halve the layer3 sides exactly; e.g. 64 or 128) for cropSize but received 96 of type number",
    );
    expect(() => new CsFlow({ device: 'cpu', imageSize: 700 })).toThrow('e.g. 640 or 768');
  });
});

describe('CFA', () => {
  withAddon('pre-activation taps; the loss falls, defects score higher, same seed same scores, a reload scores identically', async () => {
    const params = { ...small, epochs: 3, batchSize: 4 };
    const a = new Cfa(params);
    const b = new Cfa(params);
    const c = new Cfa(params);
    try {
      expect(a.params.layers).toEqual(['/layer1/layer1.1/Add', '/layer2/layer2.1/Add', '/layer3/layer3.1/Add']);
      await a.fit(train);
      const stats = a.trainingStats()!;
      expect(stats.losses[2]).toBeLessThan(stats.losses[0]);
      // The bank: one centre per layer-1 position (16 x 16 at 64 px) of 64 + 128 + 256 channels.
      const bank = a.saveState().arrays['w:memory_bank'];
      expect(bank).toHaveLength(16 * 16 * 448);
      const p = await a.predict(testSet);
      expect(p.maps[0].width).toBe(64);
      expect(await auroc(p.scores)).toBeGreaterThanOrEqual(0.8);
      await b.fit(train);
      expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));
      await roundTrip('cfa', a, c, p.scores);
    } finally {
      await Promise.all([a.dispose(), b.dispose(), c.dispose()]);
    }
  });

  test('the WRN-50-2 taps are the last blocks of layers 1..3', () => {
    expect(CFA_LAYERS.wide_resnet50_2).toEqual(['/layer1/layer1.2/Add', '/layer2/layer2.3/Add', '/layer3/layer3.5/Add']);
  });
});

describe('the training device', () => {
  withAddon("'cuda' without a CUDA libtorch is ERR_IMIAD_CUDA_UNAVAILABLE; 'auto' falls back (notice only where CUDA was built)", () => {
    const addon = trainAddon();
    if (addon.cudaAvailable) {
      process.stdout.write('test/heads.test.ts: this libtorch has CUDA and a GPU; the fallback test does not apply\n');
      return;
    }
    const reason = addon.cudaBuilt ? "the training addon's libtorch sees no GPU" : 'the training addon was built against a libtorch without CUDA';
    expect(() => new FastFlow({ ...small, device: 'cuda' })).toThrow(`CUDA was requested (device: 'cuda') but is unavailable: ${reason}`);
    try {
      new CFlow({ ...small, device: 'cuda' });
    } catch (err) {
      expect((err as { code: string }).code).toBe('ERR_IMIAD_CUDA_UNAVAILABLE');
    }
    const writes: string[] = [];
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
      writes.push(String(s));
      return true;
    });
    try {
      expect(new FastFlow({ ...small, device: 'auto' }).trainDevice).toBe('cpu');
      expect(new FastFlow({ ...small, device: undefined }).trainDevice).toBe('cpu');
    } finally {
      spy.mockRestore();
    }
    // A CPU-only libtorch (Debian's) has no other device: a plain run prints nothing; a CUDA build without a GPU
    // prints the usual notice once.
    const notices = writes.filter((w) => w.includes('running on the CPU'));
    expect(notices).toEqual(addon.cudaBuilt ? [`imiad: CUDA is unavailable (${reason}); running on the CPU\n`] : []);
    expect(() => new FastFlow({ ...small, device: 'gpu' as 'cpu' })).toThrow("Expected one of 'auto', 'cpu', 'cuda' for device but received gpu of type string");
  });
});

describe('imiad run', () => {
  withAddon('each method runs through the experiment path with pixel metrics; a saved run reloads to the same metrics', async () => {
    for (const method of ['cfa', 'cflow', 'fastflow']) {
      const file = path.join(tmp, `run-${method}.imiad`);
      const params = { ...small, backboneShape: 'resnet18', epochs: 1, batchSize: 4, ...(method === 'cflow' ? { subEpochs: 1, fibers: 64 } : {}) };
      const base = { dataset: 'mvtec' as const, root: category.root, category, method, params };
      const r = await runExperiment({ ...base, saveCheckpoint: file });
      expect(r.metrics.pixel_auroc).not.toBeNull();
      expect(r.efficiency.train_seconds).toBeGreaterThan(0);
      const loaded = await runExperiment({ ...base, loadCheckpoint: file });
      expect(loaded.metrics.image_auroc).toBe(r.metrics.image_auroc);
      expect(loaded.metrics.pixel_auroc).toBe(r.metrics.pixel_auroc);
    }
  });
});

describe('the registry', () => {
  test('CFA, CFlow and FastFlow are registered trained detectors with maps and the Table V image size', () => {
    for (const name of ['cfa', 'cflow', 'fastflow']) {
      const e = findMethod(name)!;
      expect(e).toMatchObject({ trained: true, hasMaps: true, imageSize: 256, cropSize: 256, usesLabelledAnomalies: false });
    }
  });

  withAddon('createDetector builds them with the defaults of METHODS.md', () => {
    const f = createDetector('fastflow', { device: 'cpu' }) as FastFlow;
    expect([f.epochs, f.lr, f.params.batchSize, f.params.cropSize, f.blocks, f.clamp, f.sigma]).toEqual([500, 1e-3, 32, 256, 8, 2, 0]);
    expect(f.params.layers).toEqual(['layer1', 'layer2', 'layer3']);
    const c = createDetector('cflow', { device: 'cpu' }) as CFlow;
    expect([c.epochs, c.subEpochs, c.lr, c.params.batchSize, c.params.cropSize, c.fibers, c.condition]).toEqual([25, 8, 2e-4, 32, 256, 256, 128]);
    expect(c.params.layers).toEqual(['layer2', 'layer3', 'layer4']);
    expect(c.params.backboneShape).toBe('wide_resnet50_2');
    const a = createDetector('cfa', { device: 'cpu' }) as Cfa;
    expect([a.epochs, a.lr, a.params.batchSize, a.params.cropSize, a.sigma]).toEqual([50, 1e-3, 4, 256, 4]);
    expect(a.params.backboneShape).toBe('resnet18');
    const s = createDetector('csflow', { device: 'cpu' }) as CsFlow;
    expect([s.epochs, s.lr, s.params.batchSize, s.params.cropSize, s.blocks, s.hidden, s.sigma]).toEqual([240, 2e-4, 16, 768, 4, 1024, 0]);
    expect(s.params.layers).toEqual(['layer4']);
  });

  withAddon('the engine rejects features of the wrong shape with a clear error', async () => {
    const m = new TrainModel({ kind: 'fastflow', channels: [4, 8, 16], seed: 0, threads: 1, lr: 1e-3, extra: { sides: [8, 8, 4, 4, 2, 2] } });
    const f: Nchw[] = [
      [4, 8, 8],
      [8, 4, 4],
      [16, 2, 3],
    ].map(([c, h, w]) => ({ data: new Float32Array(2 * c * h * w).fill(0.5), shape: [2, c, h, w] }));
    await expect(m.step(null, f)).rejects.toMatchObject({ code: 'ERR_IMIAD_DIMS', message: 'Expected feature level 3 with 16 channels of 2 x 2 but received 16 channels of 2 x 3' });
  });
});
