/**
 * CutPaste (lib/methods/cutpaste.ts, lib/image/cutpaste.ts, native/train/cutpaste.cc): the seeded views and
 * open-iad's learning-rate schedule; on tiny generated data it separates defects in the vanilla setting, the same
 * seed gives the same scores, a checkpoint reloads to identical scores; the PyTorch peer (bench/peers/cutpaste_torch.py)
 * trained on the same batches from the same weights gives the same 20-step loss trajectory and the same
 * Mahalanobis scores. Skips, saying why, without the training addon or /usr/bin/python3's torch + torchvision.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { peerLayoutEnv } from '../bench/common';
import { runCutPasteJob, writeCutPasteJob, type CutPasteJobOptions, type CutPasteRun } from '../bench/cutpaste';
import { binaryClassificationMetrics } from '../bindings/metrics';
import { resnetLayout } from '../bindings/train/layout';
import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Sample } from '../lib/datasets/types';
import { colorJitter, cutPasteViews } from '../lib/image/cutpaste';
import { loadBatch } from '../lib/image/pipeline';
import { createDetector, readCheckpoint, writeCheckpoint } from '../lib/methods';
import { CutPasteDetector, cutPasteLearningRate } from '../lib/methods/cutpaste';
import { Random } from '../lib/prng';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-cutpaste-'));
process.env.IMIAD_CACHE_DIR = path.join(tmp, 'cache');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) process.stdout.write(`test/cutpaste.test.ts: skipping the training tests: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
const withAddon = available ? test : test.skip;
const torchReady =
  fs.existsSync('/usr/bin/python3') &&
  spawnSync('/usr/bin/python3', ['-c', 'import torch, torchvision, sklearn'], { stdio: 'ignore' }).status === 0;
if (!torchReady) process.stdout.write('test/cutpaste.test.ts: skipping the PyTorch peer: /usr/bin/python3 lacks torch, torchvision or sklearn\n');
const withPeer = available && torchReady ? test : test.skip;

function image(size: number, seed: number): Float32Array {
  const rng = new Random(seed);
  const out = new Float32Array(3 * size * size);
  for (let i = 0; i < out.length; i++) out[i] = 0.3 + 0.4 * rng.next();
  return out;
}

describe('CutPaste views and schedule', () => {
  test('the views are seeded; cut-paste changes a rectangle of 2-15 % of the image, scar a thin rotated strip', () => {
    const size = 64;
    const src = image(size, 1);
    const copy = Float32Array.from(src);
    const a = cutPasteViews({ data: src, width: size, height: size }, new Random(5));
    const b = cutPasteViews({ data: src, width: size, height: size }, new Random(5));
    const c = cutPasteViews({ data: src, width: size, height: size }, new Random(6));
    expect(src).toEqual(copy);
    expect(a).toEqual(b);
    expect(a.normal).not.toEqual(c.normal);
    const changed = (v: Float32Array): { count: number; rows: number; cols: number } => {
      const rows = new Set<number>();
      const cols = new Set<number>();
      let count = 0;
      for (let i = 0; i < size * size; i++) {
        if ([0, 1, 2].some((ch) => v[ch * size * size + i] !== a.normal[ch * size * size + i])) {
          count += 1;
          rows.add(Math.floor(i / size));
          cols.add(i % size);
        }
      }
      return { count, rows: rows.size, cols: cols.size };
    };
    const cp = changed(a.cutPaste);
    expect(cp.count).toBeGreaterThan(0);
    expect(cp.count).toBeLessThanOrEqual(0.15 * size * size + 2 * size);
    expect(cp.rows * cp.cols).toBeLessThanOrEqual(0.16 * size * size + 2 * size); // one rectangle
    const scar = changed(a.scar);
    expect(scar.count).toBeGreaterThan(0);
    // At most a 16 x 25 strip (rotated: its bounding box is larger, its area is not).
    expect(scar.count).toBeLessThanOrEqual(16 * 25 + 8);
    for (const v of [a.normal, a.cutPaste, a.scar]) expect(v.every((x) => x >= 0 && x <= 1)).toBe(true);
  });

  test('colour jitter keeps a grey image grey under hue, and stays within [0, 1]', () => {
    const img = { data: new Float32Array(3 * 16).fill(0.5), width: 4, height: 4 };
    colorJitter(img, 0.1, new Random(1));
    for (let i = 0; i < 16; i++) {
      expect(img.data[i]).toBeCloseTo(img.data[16 + i], 6);
      expect(img.data[i]).toBeCloseTo(img.data[32 + i], 6);
    }
  });

  test("open-iad's schedule: CosineAnnealingWarmRestarts(T_0) stepped with the epoch after each batch", () => {
    // 3 steps per epoch, T_0 = 4: step 0 at the base rate, steps 1..3 at f(0) = base, step 4 at f(1), ...
    const lrs = Array.from({ length: 14 }, (_, k) => cutPasteLearningRate(1, k, 3, 4));
    const f = (e: number): number => (1 + Math.cos((Math.PI * (e % 4)) / 4)) / 2;
    expect(lrs).toEqual([1, 1, 1, 1, f(1), f(1), f(1), f(2), f(2), f(2), f(3), f(3), f(3), f(4)]);
    expect(f(4)).toBe(1); // the warm restart
  });
});

describe('CutPaste (libtorch)', () => {
  let train: Sample[] = [];
  let testSet: Sample[] = [];
  const small = { imageSize: 64, cropSize: 64, batchSize: 8, trainThreads: 1, device: 'cpu' as const };

  beforeAll(async () => {
    const root = path.join(tmp, 'mvtec');
    await synthesize('mvtec', root, { seed: 3, categories: 1, size: 64, train: 16, test: 16 });
    const [category] = await loadDataset('mvtec', root);
    train = category.samples.filter((s) => s.split === 'train');
    testSet = category.samples.filter((s) => s.split === 'test');
  });

  const auroc = async (scores: Float64Array): Promise<number> =>
    (await binaryClassificationMetrics(scores, Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0))))).auroc;

  withAddon('separates defects in the vanilla setting; same seed, same scores; a checkpoint reloads to identical scores', async () => {
    const params = { ...small, epochs: 4, lr: 1e-3 };
    const a = createDetector('cutpaste', params) as CutPasteDetector;
    const b = new CutPasteDetector(params);
    const progress: string[] = [];
    await a.fit(train, { onProgress: (_d, _t, detail) => progress.push(detail ?? '') });
    expect(progress).toHaveLength(8);
    expect(progress[7]).toMatch(/^epoch 4\/4 loss \d+\.\d{4} \d+\.\d img\/s$/);
    const stats = a.trainingStats()!;
    expect(stats.losses).toHaveLength(4);
    // A 3-way cross-entropy of the logits starts near ln 3 (the untrained head cannot tell the views apart).
    expect(Math.abs(stats.losses[0] - Math.log(3))).toBeLessThan(0.2);
    for (const l of stats.losses) expect(Number.isFinite(l)).toBe(true);
    const p = await a.predict(testSet);
    expect(p.maps).toEqual([]);
    const score = await auroc(p.scores);
    process.stdout.write(`CutPaste image AUROC on the generated category: ${score.toFixed(3)}\n`);
    expect(score).toBeGreaterThanOrEqual(0.85);
    await b.fit(train);
    expect(b.trainingStats()!.losses).toEqual(stats.losses);
    expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));
    // ResNet-18 (11,176,512) + head 512x512 + 512 + BN 1024 + 512x128 + 128 + BN 256 + out 128x3 + 3.
    expect(a.stateBytes()).toBe(4 * (11176512 + 262656 + 1024 + 65664 + 256 + 387));
    const file = path.join(tmp, 'cutpaste.imiad');
    await writeCheckpoint(file, { method: 'cutpaste', params: {}, state: a.saveState() });
    const c = new CutPasteDetector(params);
    await c.loadState((await readCheckpoint(file)).state);
    expect(Array.from((await c.predict(testSet)).scores)).toEqual(Array.from(p.scores));
    // A continued fit goes on from the loaded network and optimiser exactly as from the saved one.
    await a.fit(train.slice(0, 8), { continueTraining: true });
    await c.fit(train.slice(0, 8), { continueTraining: true });
    expect(c.fitCount).toBe(2);
    expect(c.trainingStats()!.losses).toEqual(a.trainingStats()!.losses);
  });

  withAddon('refuses a backbone that is not a ResNet-18, and too few images', async () => {
    expect(() => new CutPasteDetector({ backboneShape: 'wide_resnet50_2' })).toThrow(
      "Expected 'resnet18' (CutPaste fine-tunes a ResNet-18) for backboneShape but received wide_resnet50_2 of type string",
    );
    const wide = path.join(tmp, 'wide.onnx');
    const { defaultBackboneFile } = await import('../lib/backbone/builder');
    fs.copyFileSync(defaultBackboneFile({ shape: 'wide_resnet50_2' }), wide);
    const d = new CutPasteDetector({ ...small, backbone: wide, epochs: 1 });
    await expect(d.fit(train)).rejects.toMatchObject({ code: 'ERR_IMIAD_LAYOUT' });
    await expect(new CutPasteDetector({ ...small, epochs: 1 }).fit(train.slice(0, 1))).rejects.toThrow(
      'Expected at least 2 normal training images for CutPaste but received 1',
    );
    await expect(new CutPasteDetector(small).predict(testSet)).rejects.toThrow('CutPaste: call fit() before predict()');
  });

  withPeer('the PyTorch peer, from the same weights on the same batches: 20-step losses within 1e-4, scores within 1e-3', async () => {
    const size = 64;
    const load = async (samples: Sample[]): Promise<Float32Array> => (await loadBatch(samples.map((s) => s.path), { imageSize: size, cropSize: size })).data;
    const dir = path.join(tmp, 'peer');
    fs.mkdirSync(dir);
    const o: CutPasteJobOptions = {
      images: await load(train.slice(0, 8)),
      n: 8,
      size,
      batch: 4,
      steps: 20,
      stepsPerEpoch: 4,
      t0: 3,
      lr: 1e-4,
      threads: 1,
      seed: 1,
      evalImages: { data: await load(testSet.slice(0, 6)), n: 6 },
    };
    const job = await writeCutPasteJob(dir, o);
    const mine = await runCutPasteJob(job, o);
    const r = spawnSync('/usr/bin/python3', [path.join(__dirname, '..', 'bench', 'peers', 'cutpaste_torch.py'), dir], {
      encoding: 'utf8',
      maxBuffer: 1 << 26,
      env: { ...process.env, ...peerLayoutEnv(resnetLayout('cutpaste')) }, // the peer's ResNet-18 in imiad's memory layout: the same arithmetic
    });
    if (r.status !== 0) throw new Error(`the peer failed: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n');
    const theirs = JSON.parse(lines[lines.length - 1]) as CutPasteRun;
    expect(theirs.losses).toHaveLength(20);
    // The schedule moves (4 steps per epoch, T_0 = 3): both sides follow it.
    expect(new Set(job.lrs).size).toBeGreaterThan(2);
    const rel = (a: number, b: number): number => Math.abs(a - b) / Math.abs(b);
    const lossDiff = Math.max(...mine.losses.map((l, i) => rel(l, theirs.losses[i])));
    const scoreDiff = Math.max(...mine.scores!.map((s, i) => rel(s, theirs.scores![i])));
    process.stdout.write(`CutPaste vs PyTorch: max relative loss difference ${lossDiff.toExponential(2)}, scores ${scoreDiff.toExponential(2)}\n`);
    expect(mine.losses[19]).not.toBeCloseTo(mine.losses[0], 3);
    expect(lossDiff).toBeLessThanOrEqual(1e-4);
    expect(scoreDiff).toBeLessThanOrEqual(1e-3);
  });
});
