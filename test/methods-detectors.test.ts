/** The detectors: separation of synthetic defects, determinism, PatchCore's re-weighting, errors. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { binaryClassificationMetrics } from '../bindings/metrics';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Sample } from '../lib/datasets/types';
import { createDetector, Dne, Padim, padimChannelCount, padimChannelSubset, PatchCore, PatchCoreScorer, reweightFactor } from '../lib/methods';
import type { Detector } from '../lib/methods/types';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-methods-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let train: Sample[] = [];
let testSet: Sample[] = [];
const small = { imageSize: 64, cropSize: 64 };

beforeAll(async () => {
  const root = path.join(tmp, 'mvtec');
  await synthesize('mvtec', root, { seed: 3, categories: 1, size: 64, train: 8, test: 10 });
  const [category] = await loadDataset('mvtec', root);
  train = category.samples.filter((s) => s.split === 'train');
  testSet = category.samples.filter((s) => s.split === 'test');
});

async function fitPredict(d: Detector): Promise<Awaited<ReturnType<Detector['predict']>>> {
  try {
    await d.fit(train);
    return await d.predict(testSet);
  } finally {
    await d.dispose?.();
  }
}

describe.each([['patchcore'], ['padim'], ['spade'], ['dne']])('%s', (method) => {
  test('separates synthetic defects from normal images, deterministically', async () => {
    const a = await fitPredict(createDetector(method, { ...small, seed: 5 }));
    const labels = Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0)));
    const { auroc } = await binaryClassificationMetrics(a.scores, labels);
    expect(auroc).toBeGreaterThanOrEqual(0.9);
    expect(a.scores).toHaveLength(testSet.length);
    if (method === 'dne') {
      expect(a.maps).toEqual([]);
    } else {
      expect(a.maps).toHaveLength(testSet.length);
      // Maps at the original image size (64 x 64 here).
      expect(a.maps.every((m) => m.width === 64 && m.height === 64 && m.data.length === 64 * 64)).toBe(true);
    }
    const b = await fitPredict(createDetector(method, { ...small, seed: 5 }));
    expect(Array.from(b.scores)).toEqual(Array.from(a.scores));
    b.maps.forEach((m, i) => expect(Buffer.from(m.data.buffer).equals(Buffer.from(a.maps[i].data.buffer))).toBe(true));
  });
});

test('PatchCore keeps floor(10 %) of the patches in one contiguous bank, chosen by the seed', async () => {
  const p = new PatchCore({ ...small, seed: 1 });
  await p.fit(train);
  const bank = p.memoryBank;
  expect(bank).not.toBeNull();
  // 64 px crop -> layer2 grid 8 x 8 = 64 patches per image, 8 images, 1024 dims.
  expect(bank?.dims).toBe(1024);
  expect(bank?.rows).toBe(Math.floor(8 * 64 * 0.1));
  expect(bank?.bank).toBeInstanceOf(Float32Array);
  expect(bank?.bank.length).toBe((bank?.rows ?? 0) * 1024);
  expect(p.stateBytes()).toBeGreaterThanOrEqual(bank?.bank.byteLength ?? Infinity);
  const q = new PatchCore({ ...small, seed: 2 });
  await q.fit(train);
  expect(Buffer.from(q.memoryBank?.bank.buffer as ArrayBuffer).equals(Buffer.from(bank?.bank.buffer as ArrayBuffer))).toBe(false);
  await p.dispose();
  await q.dispose();
});

describe('PatchCore re-weighting (IM-IAD Eq. 3, PatchCore Eq. 7)', () => {
  // Bank rows: m0 (0,0), m1 (1,0), m2 (0,1), m3 (5,5). Test patches: (0.1, 0) and (3, 3).
  const bank = Float32Array.from([0, 0, 1, 0, 0, 1, 5, 5]);
  const patches = Float32Array.from([0.1, 0, 3, 3]);
  // The anomalous patch (3,3): m* = m3 at distance sqrt(8), s* = 8 (squared, as the reference's faiss scores).
  const dStar = Math.sqrt(8);
  const dM1 = Math.sqrt(4 + 9);

  test('b = 1 is the plain maximum of the squared nearest distances', async () => {
    const s = await new PatchCoreScorer(bank, 2, 1).score(patches, 1, 2);
    expect(s.patchScores[0]).toBeCloseTo(0.01, 6);
    expect(s.patchScores[1]).toBeCloseTo(8, 5);
    expect(s.imageScores[0]).toBeCloseTo(8, 5);
  });

  test('b = 2 and b = 3 weight s* by 1 - exp(d*) / sum over the b neighbours of m*', async () => {
    // Neighbours of m3 in the bank: m3 (0), then m1 and m2 (both sqrt(41)); the tie goes to the smaller index, m1.
    const s2 = await new PatchCoreScorer(bank, 2, 2).score(patches, 1, 2);
    const w2 = 1 - Math.exp(dStar) / (Math.exp(dStar) + Math.exp(dM1));
    expect(s2.imageScores[0]).toBeCloseTo(w2 * 8, 5);
    const s3 = await new PatchCoreScorer(bank, 2, 3).score(patches, 1, 2);
    const w3 = 1 - Math.exp(dStar) / (Math.exp(dStar) + 2 * Math.exp(dM1));
    expect(s3.imageScores[0]).toBeCloseTo(w3 * 8, 5);
    // Patch scores (the map) are not re-weighted.
    expect(Array.from(s3.patchScores)).toEqual(Array.from(s2.patchScores));
  });

  test('b larger than the bank uses the whole bank; the factor is stable for large distances', async () => {
    const s9 = await new PatchCoreScorer(bank, 2, 9).score(patches, 1, 2);
    const dM0 = Math.sqrt(18);
    const w = 1 - Math.exp(dStar) / (Math.exp(dStar) + 2 * Math.exp(dM1) + Math.exp(dM0));
    expect(s9.imageScores[0]).toBeCloseTo(w * 8, 5);
    expect(reweightFactor(1000, [1000, 1001])).toBeCloseTo(1 - 1 / (1 + Math.E), 12);
  });

  test('--reweight reaches the scorer through the detector', async () => {
    const plain = await fitPredict(new PatchCore({ ...small, reweight: 1 }));
    const weighted = await fitPredict(new PatchCore({ ...small, reweight: 3 }));
    for (let i = 0; i < testSet.length; i++) {
      expect(weighted.scores[i]).toBeLessThan(plain.scores[i]);
      expect(weighted.scores[i]).toBeGreaterThan(0);
    }
  });
});

describe('errors', () => {
  test('a bad layer name lists the candidates', async () => {
    const p = new PatchCore({ ...small, layers: ['layer2', 'layer9'] });
    await expect(p.fit(train)).rejects.toMatchObject({ code: 'ERR_IMIAD_LAYER', message: expect.stringContaining('layer9') });
    await expect(p.fit(train)).rejects.toMatchObject({ message: expect.stringContaining('layer3') });
  });

  test('patch features that do not match the bank', async () => {
    const scorer = new PatchCoreScorer(new Float32Array(8), 4);
    await expect(scorer.score(new Float32Array(6), 1, 2)).rejects.toMatchObject({
      code: 'ERR_IMIAD_DIMS',
      message:
        "Expected length of embeddings to be n * positions * 4 (8) but received 6 of type number: the patch features do not match the memory bank's 4 dims",
    });
  });

  test('PaDiM needs the finest layer first', async () => {
    const p = new Padim({ ...small, layers: ['layer3', 'layer1'] });
    await expect(p.fit(train)).rejects.toMatchObject({
      code: 'ERR_IMIAD_DIMS',
      message: "PaDiM concatenates at the first layer's grid (4x4) but layer 'layer1' is finer (16x16); list the finest layer first",
    });
    await p.dispose();
  });

  test('a memory bank over the budget says how many bytes it needs', async () => {
    const p = new PatchCore({ ...small, memoryBudgetBytes: 1000 });
    await expect(p.fit(train)).rejects.toMatchObject({
      code: 'ERR_IMIAD_MEMORY',
      message: "PatchCore's patch features (8 images x 64 patches x 1024 dims) needs 2097152 bytes but the memory budget is 1000 bytes (set memoryBudgetBytes to allow it)",
    });
    await p.dispose();
  });

  test('predict before fit, unknown methods and bad parameters', async () => {
    await expect(new PatchCore(small).predict(testSet)).rejects.toMatchObject({ code: 'ERR_IMIAD_STATE', message: 'PatchCore: call fit() before predict()' });
    expect(() => createDetector('nosuchmethod')).toThrow(
      "Expected one of 'patchcore', 'padim', 'spade', 'dne', 'stpm', 'rd4ad', 'cfa', 'cflow', 'csflow', 'fastflow', 'cutpaste', 'devnet', 'dra', 'bgad', 'prn', 'semirest', 'regad', 'draem', 'favae', 'igd', 'gcad' for method but received nosuchmethod of type string",
    );
    expect(() => new PatchCore({ coreset: 0 })).toThrow('Expected number in (0, 1] for coreset but received 0 of type number');
    expect(() => new PatchCore({ reweight: 0 })).toThrow('Expected integer between 1 and 1024 for reweight but received 0 of type number');
  });
});

test('PaDiM channel subsets: 100 of a ResNet-18-sized, 550 of a WRN-50-2-sized concatenation, by seed', () => {
  expect(padimChannelCount(64 + 128 + 256)).toBe(100);
  expect(padimChannelCount(256 + 512 + 1024)).toBe(550);
  expect(padimChannelCount(40)).toBe(40);
  const a = padimChannelSubset(448, 100, 7);
  expect(new Set(a).size).toBe(100);
  expect(Math.max(...a)).toBeLessThan(448);
  expect(Array.from(padimChannelSubset(448, 100, 7))).toEqual(Array.from(a));
  expect(Array.from(padimChannelSubset(448, 100, 8))).not.toEqual(Array.from(a));
});

test('DNE keeps one Gaussian per task and scores by the nearest task', async () => {
  const d = new Dne(small);
  await d.fit(train.slice(0, 4));
  const one = await d.predict(testSet);
  const bytes = d.stateBytes();
  await d.fit(train.slice(4), { continueTraining: true });
  expect(d.taskCount).toBe(2);
  expect(d.stateBytes()).toBe(2 * bytes);
  const two = await d.predict(testSet);
  for (let i = 0; i < testSet.length; i++) expect(two.scores[i]).toBeLessThanOrEqual(one.scores[i] + 1e-9);
  await d.dispose();
});

test('PatchCore with accumulate appends the coreset of each fit to the bank (continual)', async () => {
  const p = new PatchCore({ ...small, accumulate: true });
  await p.fit(train.slice(0, 4));
  const first = p.memoryBank?.bank.slice() as Float32Array;
  await p.fit(train.slice(4));
  const both = p.memoryBank?.bank as Float32Array;
  // 4 images x 64 patches x 10 % = 25 rows per fit.
  expect(p.memoryBank?.rows).toBe(50);
  expect(Array.from(both.subarray(0, first.length))).toEqual(Array.from(first));
  const q = new PatchCore(small);
  await q.fit(train.slice(0, 4));
  await q.fit(train.slice(4));
  expect(q.memoryBank?.rows).toBe(25);
  await p.dispose();
  await q.dispose();
});

test('an aborted signal stops fit and predict with ABORT_ERR', async () => {
  const controller = new AbortController();
  controller.abort();
  const p = new PatchCore(small);
  await expect(p.fit(train, { signal: controller.signal })).rejects.toMatchObject({ code: 'ABORT_ERR' });
  await p.fit(train);
  await expect(p.predict(testSet, { signal: controller.signal })).rejects.toMatchObject({ code: 'ABORT_ERR' });
  await p.dispose();
});
