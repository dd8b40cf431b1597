/**
 * RegAD (lib/methods/regad.ts, native/train/regad.cc) on tiny generated data: meta-trained on the other synthetic
 * categories, then given K = 2 shots of the target, it separates the defects; the same seed gives the same scores; a
 * checkpoint reloads to identical scores; the few-shot setting hands it the other categories and records them; a
 * dataset of one category is refused. Its meta-training step agrees with the official code's (PyTorch peer,
 * bench/peers/regad_torch.py) over 20 steps. Skipped, with the reason printed, without the training addon (and the
 * peer comparison without python3-torch).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { maxRelativeDiff } from '../bench/common';
import { type PeerResult, prepareRegadRun, runRegadSteps } from '../bench/regad';
import { peerAvailable, peerLayoutEnv, peerPython } from '../bench/common';
import { binaryClassificationMetrics } from '../bindings/metrics';
import { resnetLayout } from '../bindings/train/layout';
import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Category, Sample } from '../lib/datasets/types';
import { readCheckpoint, writeCheckpoint } from '../lib/methods';
import { metaTrainingItems, Regad } from '../lib/methods/regad';
import { findMethod } from '../lib/methods/registry';
import type { MetaTrainCategory } from '../lib/methods/types';
import { Random } from '../lib/prng';
import { reportData, tableIX } from '../lib/report';
import { runExperiment } from '../lib/runner/experiment';
import { expandGrid } from '../lib/runner/grid';
import { categorySplit, fewshotSplit, manifestOf } from '../lib/settings';
import { makeRow } from './helpers/rows';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-regad-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) process.stdout.write(`test/regad.test.ts: skipping the RegAD tests: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
const withAddon = available ? test : test.skip;
const havePeer = available && peerAvailable(['torch', 'torchvision', 'numpy']);
if (available && !havePeer) process.stdout.write('test/regad.test.ts: skipping the PyTorch peer comparison: /usr/bin/python3 cannot import torch and torchvision\n');
const withPeer = havePeer ? test : test.skip;

let root: string;
let categories: Category[];
let target: Category;
let support: Sample[];
let testSet: Sample[];
let meta: MetaTrainCategory[];
const small = { imageSize: 64, cropSize: 64, trainThreads: 1, threads: 1, device: 'cpu' as const, epochs: 3, batchSize: 8, lr: 0.01 };

beforeAll(async () => {
  root = path.join(tmp, 'mvtec');
  await synthesize('mvtec', root, { seed: 5, categories: 3, size: 64, train: 10, test: 16 });
  categories = await loadDataset('mvtec', root);
  target = categories[0];
  const split = fewshotSplit(target, { seed: 1, shots: 2, metaFrom: categories });
  support = split.train.map((s) => s.sample);
  testSet = split.test.map((s) => s.sample);
  meta = split.meta!.map((m) => ({ category: m.category, samples: m.samples.map((s) => s.sample) }));
});

async function auroc(scores: Float64Array): Promise<number> {
  const labels = Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0)));
  return (await binaryClassificationMetrics(scores, labels)).auroc;
}

describe('few-shot split and meta-training items', () => {
  test('the few-shot split hands a meta-training detector every other category and records them in the manifest', () => {
    const split = fewshotSplit(target, { seed: 1, shots: 2, metaFrom: categories });
    expect(split.train).toHaveLength(2);
    expect(split.meta!.map((m) => m.category)).toEqual(categories.slice(1).map((c) => c.name));
    expect(split.meta!.every((m) => m.samples.length === 10 && m.samples.every((s) => s.sample.label === 'normal' && s.sample.split === 'train'))).toBe(true);
    const manifest = manifestOf([split])[target.name];
    expect(manifest.info.metaCategories).toEqual(categories.slice(1).map((c) => c.name));
    expect(manifest.info.metaImages).toBe(20);
    // The shots (the support set) are the seed's draw, as for every other detector.
    expect(manifest.train.map((e) => e.path)).toEqual(fewshotSplit(target, { seed: 1, shots: 2 }).train.map((s) => s.entry.path));
    expect(fewshotSplit(target, { seed: 1, shots: 2 }).meta).toBeUndefined();
  });

  test('a dataset of one category is refused, naming the category', () => {
    expect(() => fewshotSplit(target, { seed: 1, shots: 2, metaFrom: [target] })).toThrow(
      expect.objectContaining({ code: 'ERR_IMIAD_SETTING', message: expect.stringContaining(`category ${target.name} (${target.root}) has none beside it`) }),
    );
    expect(() => categorySplit({ name: 'vanilla' }, target, 0, { metaFrom: categories })).toThrow(/a meta-training detector such as RegAD is a few-shot detector/);
  });

  test('items: every image of each category is a query once per epoch, supports come from its own category and differ from it', () => {
    const sizes = [5, 3];
    const items = metaTrainingItems(sizes, 2, 2, new Random(3));
    expect(items.map((i) => i.queries.length).sort()).toEqual([1, 1, 2, 2, 2]);
    expect(items.flatMap((i) => i.queries).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    for (const item of items) {
      const ofFirst = item.queries[0] < 5;
      expect(item.queries.every((q) => q < 5 === ofFirst)).toBe(true);
      expect(item.supports).toHaveLength(item.queries.length * 2);
      item.queries.forEach((q, j) => {
        for (const s of item.supports.slice(2 * j, 2 * j + 2)) {
          expect(s).not.toBe(q);
          expect(s < 5).toBe(ofFirst);
        }
      });
    }
    expect(metaTrainingItems(sizes, 2, 2, new Random(3))).toEqual(items);
  });

  test('the registry marks RegAD as meta-training, [0, 1] inputs at 224 px', () => {
    expect(findMethod('regad')).toMatchObject({ label: 'RegAD', trained: true, metaTraining: true, normalisation: 'unit', imageSize: 224, cropSize: 224 });
  });

  test('Table IX notes the meta-trained method', async () => {
    const setting = { name: 'fewshot' as const, shots: 2, augment: null, augmentCount: 0 };
    const info = { setting: 'fewshot' as const, seed: 0, shots: 2 };
    const rows = [
      makeRow({ method: 'regad', setting, metrics: { imageAUROC: 0.8 }, manifest: { bottle: { train: [], test: [], info: { ...info, metaCategories: ['cable'] } } } }),
      makeRow({ method: 'patchcore', setting, metrics: { imageAUROC: 0.7 }, manifest: { bottle: { train: [], test: [], info } } }),
    ];
    const [t] = tableIX(reportData(rows));
    expect(t.rows.map((r) => r[1])).toEqual([expect.objectContaining({ text: 'patchcore' }), expect.objectContaining({ text: 'regad' })]);
    expect(t.notes).toEqual(["Meta-trained on the dataset's other categories, then adapted to the K shots without training on them: regad."]);
  });
});

describe('RegAD', () => {
  withAddon('meta-trained on the other categories, K = 2 shots separate the defects; same seed, same scores; a reload scores identically', async () => {
    const a = new Regad(small);
    const b = new Regad(small);
    const c = new Regad(small);
    const progress: string[] = [];
    await a.fit(support, { metaTrain: meta, onProgress: (_d, _t, detail) => progress.push(detail ?? '') });
    const stats = a.trainingStats()!;
    expect(stats.losses).toHaveLength(3);
    stats.losses.forEach((l) => expect(l).toBeGreaterThanOrEqual(-1));
    // 2 categories x ceil(10 / 8) items x 3 epochs.
    expect(progress).toHaveLength(12);
    expect(progress[11]).toMatch(/^epoch 3\/3 loss -?\d+\.\d{4} \d+\.\d img\/s$/);
    const p = await a.predict(testSet);
    expect(p.maps[0].width).toBe(64);
    const value = await auroc(p.scores);
    process.stdout.write(`RegAD K = 2 image AUROC on the synthetic target category: ${value.toFixed(3)}\n`);
    expect(value).toBeGreaterThanOrEqual(0.75);

    await b.fit(support, { metaTrain: meta });
    expect(b.trainingStats()!.losses).toEqual(stats.losses);
    expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));

    const file = path.join(tmp, 'regad.imiad');
    await writeCheckpoint(file, { method: 'regad', params: {}, state: a.saveState() });
    await c.loadState((await readCheckpoint(file)).state);
    const after = await c.predict(testSet);
    expect(Array.from(after.scores)).toEqual(Array.from(p.scores));
    expect(Array.from(after.maps[3].data)).toEqual(Array.from(p.maps[3].data));
  }, 600_000);

  withAddon('refuses to fit without the other categories, and bad sizes', async () => {
    const r = new Regad(small);
    await expect(r.fit(support)).rejects.toMatchObject({ code: 'ERR_IMIAD_SETTING', message: expect.stringContaining("RegAD meta-trains on the dataset's other categories") });
    await expect(r.fit(support, { metaTrain: [{ category: 'x', samples: support.slice(0, 1) }] })).rejects.toThrow(
      'RegAD\'s meta-training category x has 1 normal training image(s): each query needs another image of its category as support',
    );
    expect(() => new Regad({ ...small, cropSize: 56, imageSize: 56 })).toThrow('Expected a multiple of 16 (RegAD concatenates layers 1..3 at strides 4, 8, 16) for cropSize but received 56 of type number');
    await expect(r.predict(testSet)).rejects.toThrow('RegAD: call fit() before predict()');
  });

  withAddon('runExperiment on a one-category dataset is refused; the grid hands the other categories over', async () => {
    const one = path.join(tmp, 'one');
    await synthesize('mvtec', one, { seed: 6, categories: 1, size: 64, train: 4, test: 4 });
    const [only] = await loadDataset('mvtec', one);
    await expect(
      runExperiment({ dataset: 'mvtec', root: one, category: only, method: 'regad', params: small, trainSamples: only.samples.filter((s) => s.split === 'train').slice(0, 2), bootstrap: false }),
    ).rejects.toMatchObject({ code: 'ERR_IMIAD_SETTING' });
    const loader = (_d: string, r: string, o: { categories?: string[] }): Promise<Category[]> => loadDataset('mvtec', r, o);
    const grid = await expandGrid(
      {
        store: path.join(tmp, 'store.sqlite'),
        concurrency: 1,
        datasets: [{ name: 'mvtec', root, categories: [target.name] }],
        settings: [{ name: 'fewshot', shots: 2, augment: null, augmentCount: 0 }, { name: 'vanilla' }],
        methods: [{ name: 'regad', params: {}, grid: {} }],
        seeds: [0],
      },
      loader,
      () => tmp,
    );
    expect(grid.experiments).toHaveLength(1);
    expect(grid.experiments[0].split!.meta!.map((m) => m.category)).toEqual(categories.slice(1).map((c) => c.name));
    expect(grid.invalid).toHaveLength(1);
    expect(grid.invalid[0].reason).toContain('a meta-training detector such as RegAD is a few-shot detector');
  });

  withPeer('the support Gaussian and the maps equal the official test() (float64 covariance inverses), with rotated and scaled STNs', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'maps-'));
    const side = 32;
    const { model } = await prepareRegadRun({ size: side, batch: 1, shots: 1, steps: 0, lr: 0.01, threads: 1, seed: 4 }, dir);
    // STNs that rotate and scale (the fc's bias is theta while its weight is zero): the inverse warps matter.
    const state = model.state();
    const thetas: Record<string, number[]> = { 'stn1.fc.2.bias': [0.3, 0.9, 1.1], 'stn2.fc.2.bias': [-0.2, 1.2, 0.8], 'stn3.fc.2.bias': [0.5, 1.0, 0.7] };
    for (const [name, theta] of Object.entries(thetas)) state.arrays[state.names.indexOf(name)].set(theta);
    model.loadState(state);
    fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
    const rng = new Random(9);
    const images = (n: number): Float32Array => Float32Array.from({ length: n * 3 * side * side }, () => rng.next());
    const support = images(2);
    const test = images(3);
    fs.writeFileSync(path.join(dir, 'support.bin'), Buffer.from(support.buffer));
    fs.writeFileSync(path.join(dir, 'test.bin'), Buffer.from(test.buffer));
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify({ ...meta, shots: 2, tests: 3 }));
    await model.calibrate([{ data: support, shape: [2, 3, side, side] }], true);
    const mine = await model.maps({ data: test, shape: [3, 3, side, side] }, [], side / 4);
    const r = spawnSync(peerPython(), [path.join(__dirname, '..', 'bench', 'peers', 'regad_maps_torch.py'), dir, '1'], { encoding: 'utf8', env: { ...process.env, ...peerLayoutEnv(resnetLayout('regad')) } });
    expect(r.stderr.split('\n').filter((l) => /Error|Traceback/.test(l))).toEqual([]);
    const official = (JSON.parse(r.stdout.trim().split('\n').pop()!) as { maps: number[][][] }).maps.flat(2);
    expect(mine.length).toBe(official.length);
    const rel = maxRelativeDiff(Array.from(mine), official);
    process.stdout.write(`RegAD maps vs the official test(): max relative difference ${rel.toExponential(2)}\n`);
    expect(rel).toBeLessThanOrEqual(1e-4);
  }, 300_000);

  withPeer('20 meta-training steps agree with the official code (PyTorch) to 1e-4 relative', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'peer-'));
    const { model, batches } = await prepareRegadRun({ size: 32, batch: 4, shots: 2, steps: 20, lr: 0.01, threads: 1, seed: 2 }, dir);
    const mine = await runRegadSteps(model, batches);
    // runPeer resolves bench/peers from dist/bench; this test runs from the sources.
    const r = spawnSync(peerPython(), [path.join(__dirname, '..', 'bench', 'peers', 'regad_torch.py'), dir, '1'], { encoding: 'utf8', env: { ...process.env, ...peerLayoutEnv(resnetLayout('regad')) } });
    expect(r.stderr.split('\n').filter((l) => /Error|Traceback/.test(l))).toEqual([]);
    const peer = JSON.parse(r.stdout.trim().split('\n').pop()!) as PeerResult;
    process.stdout.write(`RegAD losses imiad ${mine.losses.map((l) => l.toFixed(6)).join(' ')}\nRegAD losses torch ${peer.losses.map((l) => l.toFixed(6)).join(' ')}\n`);
    expect(mine.losses[19]).not.toBe(mine.losses[0]);
    expect(maxRelativeDiff(mine.losses, peer.losses)).toBeLessThanOrEqual(1e-4);
  }, 300_000);
});
