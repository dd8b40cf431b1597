/**
 * SemiREST (lib/methods/semirest.ts, native/train/semirest.cc): the position-constrained matching finds the nearest
 * bank entry only within the window around the same position and leaves a training image's own entries out; in the
 * supervised setting on tiny generated data a few epochs segment the unseen defects (pixel AUROC); a checkpoint
 * (transformer, AdamW state and bank) reloads to identical scores; runs without labelled anomalies, anomalies
 * without masks and a missing texture folder are refused before training; Ctrl-C stops training with ABORT_ERR and
 * keeps no model. The trained tests skip, with the reason printed, when the training addon is not built.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { binaryClassificationMetrics } from '../bindings/metrics';
import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Sample } from '../lib/datasets/types';
import { readMaskUnion } from '../lib/image/mask';
import { blockLabels, createDetector, PositionBank, readCheckpoint, SemiRest, writeCheckpoint } from '../lib/methods';
import { findMethod, settingRefusal } from '../lib/methods/registry';
import type { Prediction } from '../lib/methods/types';
import { Random } from '../lib/prng';
import { supervisedSplit } from '../lib/settings/supervised';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-semirest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) {
  process.stdout.write(`test/semirest.test.ts: skipping the SemiREST training tests: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
}
const withAddon = available ? test : test.skip;

describe('position-constrained matching', () => {
  // A 4 x 4 grid of 2-dim features, 2 bank images; bank image b at (y, x) holds (10 y + x, 100 b).
  const H = 4;
  const W = 4;
  const dims = 2;
  const cell = (b: number, y: number, x: number): [number, number] => [10 * y + x, 100 * b];
  const embeddings = (images: number, f: (i: number, y: number, x: number) => [number, number]): Float32Array => {
    const out = new Float32Array(images * H * W * dims);
    for (let i = 0; i < images; i++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) out.set(f(i, y, x), ((i * H + y) * W + x) * dims);
    return out;
  };
  const bankEmbeddings = embeddings(2, cell);

  test('a feature that exists only at another position is not matched there', async () => {
    // The query image is bank image 0 except at (0, 0), which holds bank image 0's (3, 3) feature.
    const query = embeddings(1, (_, y, x) => (y === 0 && x === 0 ? cell(0, 3, 3) : cell(0, y, x)));
    const local = PositionBank.fromEmbeddings(bankEmbeddings, 2, H, W, dims, 1);
    const r = await local.residuals(query, 1, null);
    // Within +-1 cell of (0, 0) the nearest entry of (33, 0) is image 0's (1, 1) = (11, 0): residual (22, 0).
    expect([r.matchPosition[0], r.matchImage[0]]).toEqual([1 * W + 1, 0]);
    expect(r.distances[0]).toBeCloseTo(22, 4);
    expect([r.residuals[0], r.residuals[H * W]]).toEqual([22, 0]);
    // Every other patch finds itself: zero residual.
    for (let p = 1; p < H * W; p++) {
      expect([r.matchPosition[p], r.matchImage[p]]).toEqual([p, 0]);
      expect(r.distances[p]).toBeLessThan(1e-3);
    }
    // A window that covers the whole grid is a global search: the same feature at (3, 3) gives a zero residual.
    const global = PositionBank.fromEmbeddings(bankEmbeddings, 2, H, W, dims, 3);
    const g = await global.residuals(query, 1, null);
    expect([g.matchPosition[0], g.matchImage[0], g.residuals[0], g.residuals[H * W]]).toEqual([3 * W + 3, 0, 0, 0]);
  });

  test("a training image is matched leave-one-out: its own entries are excluded", async () => {
    const bank = PositionBank.fromEmbeddings(bankEmbeddings, 2, H, W, dims, 1);
    const own = bankEmbeddings.subarray(0, H * W * dims);
    const kept = await bank.residuals(own, 1, null);
    expect(Array.from(kept.residuals).every((d) => d === 0)).toBe(true);
    const out = await bank.residuals(own, 1, [0]);
    // Image 1 differs by 100 in the second dimension everywhere: every patch matches image 1 at its own position.
    expect(Array.from(out.matchImage).every((i) => i === 1)).toBe(true);
    expect(Array.from(out.matchPosition)).toEqual(Array.from({ length: H * W }, (_, p) => p));
    expect(Array.from(out.residuals.subarray(H * W))).toEqual(new Array(H * W).fill(-100));
    await expect(PositionBank.fromEmbeddings(own.slice(), 1, H, W, dims, 1).residuals(own, 1, [0])).rejects.toThrow(
      'Expected at least 2 normal training images for SemiREST (training images are matched leave-one-out) but received 1',
    );
    await expect(bank.residuals(new Float32Array(3), 1, null)).rejects.toThrow(`Expected 1 x ${H * W} patch features of ${dims} dims`);
  });

  test('agrees with a plain reference search over the window on random data (non-square grid, exclusions)', async () => {
    const rng = new Random(7);
    const [images, gh, gw, c, radius, n] = [3, 5, 4, 6, 1, 2];
    const bankEmb = Float32Array.from({ length: images * gh * gw * c }, () => rng.normal());
    const queries = Float32Array.from({ length: n * gh * gw * c }, () => rng.normal());
    const exclude = [-1, 1];
    const bank = PositionBank.fromEmbeddings(bankEmb, images, gh, gw, c, radius);
    const r = await bank.residuals(queries, n, exclude);
    const P = gh * gw;
    for (let i = 0; i < n; i++) {
      for (let p = 0; p < P; p++) {
        const [y, x] = [Math.floor(p / gw), p % gw];
        let best = Infinity;
        let at = [-1, -1];
        for (let yy = Math.max(0, y - radius); yy <= Math.min(gh - 1, y + radius); yy++) {
          for (let xx = Math.max(0, x - radius); xx <= Math.min(gw - 1, x + radius); xx++) {
            for (let b = 0; b < images; b++) {
              if (b === exclude[i]) continue;
              let d = 0;
              for (let k = 0; k < c; k++) d += (queries[(i * P + p) * c + k] - bankEmb[(b * P + yy * gw + xx) * c + k]) ** 2;
              if (d < best) [best, at] = [d, [yy * gw + xx, b]];
            }
          }
        }
        expect([r.matchPosition[i * P + p], r.matchImage[i * P + p]]).toEqual(at);
        expect(r.distances[i * P + p]).toBeCloseTo(Math.sqrt(best), 4);
        for (let k = 0; k < c; k++) expect(r.residuals[(i * c + k) * P + p]).toBe(Math.fround(queries[(i * P + p) * c + k] - bankEmb[(at[1] * P + at[0]) * c + k]));
      }
    }
  });

  test('block labels: a block is anomalous when any of its pixels is', () => {
    const mask = new Float32Array(16 * 16);
    mask[3 * 16 + 9] = 1; // block (0, 1) of 8 x 8 pixels
    expect(Array.from(blockLabels(mask, 16, 2, 2))).toEqual([0, 1, 0, 0]);
  });
});

describe('SemiREST on generated data', () => {
  let root = '';
  let train: Sample[] = [];
  let testSet: Sample[] = [];
  let fitted: SemiRest;
  let first: Prediction;
  const small = { imageSize: 64, cropSize: 64, batchSize: 8, epochs: 5, trainThreads: 1, threads: 1, device: 'cpu' as const };

  beforeAll(async () => {
    root = path.join(tmp, 'mvtec');
    await synthesize('mvtec', root, { seed: 3, categories: 1, size: 64, train: 12, test: 24 });
    const [category] = await loadDataset('mvtec', root);
    const split = supervisedSplit(category, { seed: 0, anomalies: 4 });
    train = split.train.map((s) => s.sample);
    testSet = split.test.map((s) => s.sample);
  });

  test('the registry entry', () => {
    const e = findMethod('semirest')!;
    expect([e.label, e.trained, e.usesLabelledAnomalies, e.hasMaps, e.imageSize, e.cropSize, e.normalisation]).toEqual(['SemiREST', true, true, true, 256, 256, 'imagenet']);
    expect(e.options.map((o) => o.flag)).toEqual(['epochs', 'lr', 'texture-root', 'foreground']);
    expect(settingRefusal(e, 'vanilla')).toBe('SemiREST learns from labelled anomalies, which only the supervised setting provides: use --setting supervised (not vanilla)');
  });

  withAddon('a few epochs segment unseen defects (pixel AUROC), with progress', async () => {
    fitted = createDetector('semirest', small) as SemiRest;
    const stages = new Set<string>();
    await fitted.fit(train, { onProgress: (_d, _t, m) => stages.add((m ?? '').split(' ')[0]) });
    expect([...stages]).toEqual(['bank', 'residuals', 'epoch']);
    const stats = fitted.trainingStats()!;
    expect(stats.losses).toHaveLength(5);
    expect(stats.losses[4]).toBeLessThan(stats.losses[0]);
    // 12 normals + 12 synthetic + 4 x (1 + 2 augmented + 4 copy-pastes) = 52 maps.
    first = await fitted.predict(testSet);
    const pixels: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < testSet.length; i++) {
      const m = first.maps[i];
      const mask = testSet[i].maskPaths.length > 0 ? await readMaskUnion(testSet[i].maskPaths, m.width, m.height) : null;
      for (let j = 0; j < m.data.length; j++) {
        pixels.push(m.data[j]);
        labels.push(mask && mask.data[j] ? 1 : 0);
      }
    }
    const pixel = await binaryClassificationMetrics(Float64Array.from(pixels), Uint8Array.from(labels));
    // Measured 0.98 (OpenBLAS); the bound is 0.85.
    expect(pixel.auroc).toBeGreaterThanOrEqual(0.85);
    const image = await binaryClassificationMetrics(first.scores, Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0))));
    expect(image.auroc).toBeGreaterThanOrEqual(0.75);
    expect(Array.from(first.scores).every((s) => s >= 0 && s <= 1)).toBe(true);
  }, 30_000);

  withAddon('a checkpoint (transformer, AdamW state, bank) reloads to identical scores and maps', async () => {
    const file = path.join(tmp, 'semirest.imiad');
    await writeCheckpoint(file, { method: 'semirest', params: {}, state: fitted.saveState() });
    const state = (await readCheckpoint(file)).state;
    const fresh = createDetector('semirest', small) as SemiRest;
    await fresh.loadState(state);
    const again = await fresh.predict(testSet);
    expect(Array.from(again.scores)).toEqual(Array.from(first.scores));
    expect(Array.from(again.maps[0].data)).toEqual(Array.from(first.maps[0].data));
    const other = createDetector('semirest', { ...small, radius: 2 }) as SemiRest;
    await expect(other.loadState(state)).rejects.toThrow("Expected a SemiREST bank matched within radius 2 but the checkpoint's was fitted with radius 1");
  }, 20_000);

  withAddon('refusals: no labelled anomalies, an anomaly without a mask, a missing texture folder', async () => {
    const d = createDetector('semirest', small) as SemiRest;
    await expect(d.fit(train.filter((s) => s.label === 'normal'))).rejects.toThrow(/SemiREST learns from labelled anomalies .*--setting supervised/);
    const bare = { ...train.find((s) => s.label === 'anomaly')!, maskPaths: [] };
    await expect(d.fit([...train.filter((s) => s.label === 'normal'), bare])).rejects.toThrow(`${bare.path} has no ground-truth mask`);
    const missing = path.join(tmp, 'no-textures');
    await expect((createDetector('semirest', { ...small, textureRoot: missing }) as SemiRest).fit(train)).rejects.toThrow(`${missing} does not exist`);
    expect(() => d.saveState()).toThrow('SemiREST: call fit() before predict()');
    expect(() => createDetector('semirest', { ...small, dim: 10, heads: 3 })).toThrow("Expected SemiREST's dim (10) to be a multiple of heads (3)");
  });

  withAddon('Ctrl-C stops training with ABORT_ERR and keeps no model', async () => {
    const d = createDetector('semirest', { ...small, epochs: 50 }) as SemiRest;
    const controller = new AbortController();
    await expect(
      d.fit(train, {
        signal: controller.signal,
        onProgress: (_d, _t, m) => {
          if (m?.startsWith('epoch 2/')) controller.abort();
        },
      }),
    ).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(() => d.saveState()).toThrow('SemiREST: call fit() before predict()');
    await expect(d.predict(testSet)).rejects.toThrow('SemiREST: call fit() before predict()');
  }, 20_000);
});
