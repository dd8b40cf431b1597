/**
 * The supervised detectors on a fine-tuned ResNet-18 (DevNet, DRA: native/train/devnet.cc, dra.cc,
 * lib/methods/deviation.ts): in the supervised setting on tiny generated data they separate defects they have not
 * seen, the same seed gives the same scores, a checkpoint reloads to identical scores; without labelled anomalies
 * they refuse (API and command line) naming `--setting supervised`; their balanced batches and CutMix are what the
 * official code draws; and, where /usr/bin/python3 has torch and torchvision, 20 training steps give the same losses
 * as the PyTorch peers written from the official code (bench/peers/devnet_torch.py, dra_torch.py), to 1e-4.
 * The tests skip, with the reason printed, when the training addon is not built.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { maxRelativeDiff, peerLayoutEnv } from '../bench/common';
import { trainDeviationJob, writeDeviationJob, type DeviationRun } from '../bench/deviation';
import { binaryClassificationMetrics } from '../bindings/metrics';
import { resnetLayout } from '../bindings/train/layout';
import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Category, Sample } from '../lib/datasets/types';
import { cutMix, rotateNearest } from '../lib/image/cutmix';
import { createDetector, DevNet, Dra, readCheckpoint, writeCheckpoint } from '../lib/methods';
import type { DeviationDetector } from '../lib/methods/deviation';
import { findMethod } from '../lib/methods/registry';
import type { Detector } from '../lib/methods/types';
import { Random } from '../lib/prng';
import { gridConfig } from '../lib/runner/config';
import { expandGrid } from '../lib/runner/grid';
import { supervisedSplit } from '../lib/settings/supervised';
import { runCli } from './helpers/cli';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-deviation-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) {
  process.stdout.write(`test/deviation.test.ts: skipping the DevNet/DRA tests: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
}
const withAddon = available ? test : test.skip;
const peerPython = '/usr/bin/python3';
const torchAvailable = fs.existsSync(peerPython) && spawnSync(peerPython, ['-c', 'import torch, torchvision, numpy'], { stdio: 'ignore' }).status === 0;
if (available && !torchAvailable) {
  process.stdout.write(`test/deviation.test.ts: skipping the PyTorch peer comparison: ${peerPython} cannot import torch, torchvision and numpy (apt-get install python3-torch python3-torchvision)\n`);
}
const withPeer = available && torchAvailable ? test : test.skip;

let category: Category;
let root = '';
let train: Sample[] = [];
let testSet: Sample[] = [];
// 64 px (two scales: 64 and 32, layer4 2 x 2 and 1 x 1), batch 6, 5 steps per epoch.
const small = { imageSize: 64, cropSize: 64, batchSize: 6, stepsPerEpoch: 5, trainThreads: 1, device: 'cpu' as const };

beforeAll(async () => {
  root = path.join(tmp, 'mvtec');
  await synthesize('mvtec', root, { seed: 3, categories: 1, size: 64, train: 12, test: 24 });
  [category] = await loadDataset('mvtec', root);
  // The supervised setting with 4 labelled anomalies: 12 normal + 8 anomalous test images remain.
  const split = supervisedSplit(category, { seed: 0, anomalies: 4 });
  train = split.train.map((s) => s.sample);
  testSet = split.test.map((s) => s.sample);
});

async function auroc(scores: Float64Array): Promise<number> {
  const labels = Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0)));
  return (await binaryClassificationMetrics(scores, labels)).auroc;
}

/** Saves `fitted`'s state through the file format, loads it into `fresh`, and expects identical scores. */
async function roundTrip(method: string, fitted: Detector, fresh: Detector, before: Float64Array): Promise<void> {
  const file = path.join(tmp, `${method}.imiad`);
  await writeCheckpoint(file, { method, params: {}, state: fitted.saveState!() });
  await fresh.loadState!((await readCheckpoint(file)).state);
  const after = await fresh.predict(testSet);
  expect(Array.from(after.scores)).toEqual(Array.from(before));
}

/** ResNet-18 conv1 .. layer4 (torchvision, without the classifier). */
const RESNET18_PARAMETERS = 11_176_512;

describe.each([
  ['devnet', (p: object) => new DevNet(p), 513],
  // holistic 512 x 256 + 256 + 257; seen and pseudo 513 each; composite 3x3 conv 512 -> 512 with bias, BN, 1x1 conv.
  ['dra', (p: object) => new Dra(p), 512 * 256 + 256 + 257 + 513 + 513 + (512 * 512 * 9 + 512 + 1024 + 513)],
] as Array<[string, (p: object) => DeviationDetector, number]>)('%s', (method, make, headParameters) => {
  withAddon('trains backbone and heads on the labelled anomalies: unseen defects score higher, same seed same scores, a reload scores identically', async () => {
    const params = { ...small, epochs: 3 };
    const a = make(params);
    const b = make(params);
    const c = make(params);
    const progress: string[] = [];
    await a.fit(train, { onProgress: (_d, _t, detail) => progress.push(detail ?? '') });
    const stats = a.trainingStats()!;
    expect(stats.epochs).toBe(3);
    expect(stats.losses).toHaveLength(3);
    expect(stats.losses[2]).toBeLessThan(stats.losses[0]);
    expect(progress).toHaveLength(15);
    expect(progress[14]).toMatch(/^epoch 3\/3 loss \d+\.\d{4} \d+\.\d img\/s$/);
    // Every parameter trains: the backbone and the heads (open-iad's ports hand only the backbone to Adam).
    expect(a.parameterCount()).toBe(RESNET18_PARAMETERS + headParameters);
    const saved = a.saveState();
    const optimizerNames = saved.config.optimizerNames as string[];
    const headWeight = method === 'devnet' ? 'conv.weight' : 'composite_head.scoring.weight';
    expect(optimizerNames).toContain(`exp_avg:${headWeight}`);
    expect(optimizerNames).toContain('exp_avg:backbone.layer4.1.conv2.weight');
    // StepLR's position: 15 steps done.
    expect(Array.from(saved.arrays['w:schedule_steps'] as Float32Array)).toEqual([15]);
    const p = await a.predict(testSet);
    expect(p.maps).toEqual([]);
    expect(p.scores).toHaveLength(testSet.length);
    expect(await auroc(p.scores)).toBeGreaterThanOrEqual(0.75);
    await b.fit(train);
    expect(b.trainingStats()!.losses).toEqual(stats.losses);
    expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));
    await roundTrip(method, a, c, p.scores);
  });

  withAddon('refuses to train without labelled anomalies, naming the supervised setting', async () => {
    const d = make(small);
    await expect(d.fit(train.filter((s) => s.label === 'normal'))).rejects.toMatchObject({
      code: 'ERR_IMIAD_EMPTY',
      message: `${findMethod(method)!.label} learns from labelled anomalies but the training set has none: run it in the supervised setting (--setting supervised), which moves 10 labelled anomalous test images into training`,
    });
    expect(() => d.saveState()).toThrow(`${findMethod(method)!.label}: call fit() before predict()`);
  });
});

describe('the registry and the command line', () => {
  test('DevNet and DRA are trained, use labelled anomalies and score images only', () => {
    for (const name of ['devnet', 'dra']) {
      const e = findMethod(name)!;
      expect([e.trained, e.usesLabelledAnomalies, e.hasMaps, e.imageSize, e.cropSize, e.normalisation]).toEqual([true, true, false, 448, 448, 'imagenet']);
    }
  });

  withAddon('bad parameters are refused at construction', () => {
    expect(() => createDetector('devnet', { device: 'cpu', cropSize: 96, imageSize: 96 })).toThrow(
      'Expected multiple of 64 (two input scales, each divisible by 32) for cropSize but received 96 of type number',
    );
    expect(() => createDetector('dra', { device: 'cpu', backboneShape: 'wide_resnet50_2' })).toThrow("Expected 'resnet18' (the network fine-tuned) for backboneShape");
    expect(() => createDetector('dra', { device: 'cpu', layers: ['layer3'] })).toThrow("Expected ['layer4'] (DRA scores the fine-tuned ResNet-18's layer4) for layers");
    expect(() => createDetector('devnet', { device: 'cpu', batchSize: 1 })).toThrow('for batchSize');
  });

  test('the grid skips DevNet and DRA outside the supervised setting, with the reason', async () => {
    const config = gridConfig({ datasets: [{ name: 'mvtec', root }], methods: ['devnet', 'patchcore'], settings: [{ name: 'vanilla' }, { name: 'supervised', anomalies: 4 }] });
    const { experiments, invalid } = await expandGrid(config, (n, r, o) => loadDataset(n, r, o), (k) => k);
    expect(experiments.map((e) => `${e.config.method} ${e.config.setting.name}`)).toEqual(['patchcore vanilla', 'devnet supervised', 'patchcore supervised']);
    expect(invalid.map((b) => [b.config.method, b.config.setting.name, b.reason])).toEqual([
      ['devnet', 'vanilla', 'DevNet learns from labelled anomalies, which only the supervised setting provides: use --setting supervised (not vanilla)'],
    ]);
  });

  withAddon('imiad run refuses DevNet and DRA outside the supervised setting (exit 2) and runs them in it', async () => {
    for (const [method, setting] of [['devnet', 'vanilla'], ['dra', 'noisy']]) {
      const extra = setting === 'noisy' ? ['--noise', '0.1'] : [];
      const r = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', method, '--setting', setting, ...extra, '--quiet']);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${findMethod(method)!.label} learns from labelled anomalies, which only the supervised setting provides: use --setting supervised (not ${setting})`);
    }
    const json = path.join(tmp, 'devnet-run.json');
    const r = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'devnet', '--setting', 'supervised', '--anomalies', '4', '--image-size', '64', '--epochs', '1', '--batch-size', '4', '--device', 'cpu', '--quiet', '--json', json]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [result] = JSON.parse(fs.readFileSync(json, 'utf8')).results;
    expect(result.setting).toEqual({ name: 'supervised', anomalies: 4 });
    expect(result.metrics.imageAUROC).toBeGreaterThanOrEqual(0.75);
    expect(result.metrics.pixelAUROC ?? null).toBeNull();
  });
});

describe('balanced batches and pseudo-anomalies', () => {
  const square = (side: number, f: (x: number, y: number) => [number, number, number]): { data: Uint8Array; width: number; height: number } => {
    const data = new Uint8Array(side * side * 3);
    for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) data.set(f(x, y), (y * side + x) * 3);
    return { data, width: side, height: side };
  };

  test("rotation is PIL's Image.rotate(angle, NEAREST): counter-clockwise, black outside", () => {
    const img = square(4, (x, y) => [x * 10, y * 10, 7]);
    const channel = (r: { data: Uint8Array }, c: number): number[][] => [0, 1, 2, 3].map((y) => [0, 1, 2, 3].map((x) => r.data[(y * 4 + x) * 3 + c]));
    // Counter-clockwise: the top row of the result is the original's right column, top to bottom.
    expect(channel(rotateNearest(img, 90), 0)[0]).toEqual([30, 30, 30, 30]);
    expect(channel(rotateNearest(img, 90), 1)[0]).toEqual([0, 10, 20, 30]);
    // PIL 9 (python3-pil): Image.fromarray(img).rotate(30, resample=Image.NEAREST).
    const r = rotateNearest(img, 30);
    expect(channel(r, 0)).toEqual([[0, 20, 30, 0], [0, 10, 20, 30], [0, 10, 20, 30], [0, 0, 10, 0]]);
    expect(channel(r, 1)).toEqual([[0, 0, 0, 0], [0, 10, 10, 20], [10, 20, 20, 30], [0, 30, 30, 0]]);
    const o = rotateNearest(square(16, () => [200, 200, 200]), 45);
    expect(Array.from(o.data.subarray(0, 3))).toEqual([0, 0, 0]);
    expect(Array.from(o.data.subarray((8 * 16 + 8) * 3, (8 * 16 + 8) * 3 + 3))).toEqual([200, 200, 200]);
  });

  test('CutMix pastes a 2-15 % patch of aspect 0.3-3.3 elsewhere, the rest untouched', () => {
    const side = 64;
    const img = square(side, (x, y) => [(x * 4) & 255, (y * 4) & 255, (x + y) & 255]);
    for (let seed = 0; seed < 20; seed++) {
      const { image, boxes } = cutMix(img, new Random(seed));
      const area = boxes.width * boxes.height;
      expect(area).toBeGreaterThanOrEqual(0.02 * side * side - 2 * side);
      expect(area).toBeLessThanOrEqual(0.15 * side * side + 2 * side);
      expect(boxes.width / boxes.height).toBeGreaterThan(0.25);
      expect(boxes.width / boxes.height).toBeLessThan(4);
      let changedOutside = 0;
      for (let y = 0; y < side; y++) {
        for (let x = 0; x < side; x++) {
          const inside = x >= boxes.to[0] && x < boxes.to[0] + boxes.width && y >= boxes.to[1] && y < boxes.to[1] + boxes.height;
          const o = (y * side + x) * 3;
          if (!inside && (image.data[o] !== img.data[o] || image.data[o + 1] !== img.data[o + 1])) changedOutside++;
        }
      }
      expect(changedOutside).toBe(0);
    }
    // The same seed, the same pseudo-anomaly.
    expect(cutMix(img, new Random(5)).image.data).toEqual(cutMix(img, new Random(5)).image.data);
  });

  withAddon('every batch holds the official shares: DevNet 1/2 normal, DRA 2/3 normal (half pseudo) after 5 references', async () => {
    const normals = train.filter((s) => s.label === 'normal');
    const anomalies = train.filter((s) => s.label === 'anomaly');
    const devnet = new DevNet({ ...small, batchSize: 48 });
    const dra = new Dra({ ...small, batchSize: 48 });
    const d = await devnet.trainingBatches(await devnet.decode(normals), await devnet.decode(anomalies), new Random(1)).next();
    expect(d.images.shape).toEqual([48, 3, 64, 64]);
    expect(Array.from(d.labels.data)).toEqual([...Array(24).fill(0), ...Array(24).fill(1)]);
    expect(d.reference.shape).toEqual([1, 1, 1, 5000]);
    const source = dra.trainingBatches(await dra.decode(normals), await dra.decode(anomalies), new Random(1));
    let pseudo = 0;
    for (let i = 0; i < 4; i++) {
      const b = await source.next();
      expect(b.images.shape).toEqual([53, 3, 64, 64]);
      expect(b.reference.shape).toEqual([4, 1, 1, 5000]);
      const labels = Array.from(b.labels.data);
      expect(labels.slice(32)).toEqual(Array(16).fill(1));
      expect(labels.slice(0, 32).every((l) => l === 0 || l === 2)).toBe(true);
      pseudo += labels.filter((l) => l === 2).length;
      // The reference draws are N(0, 1).
      const r = b.reference.data;
      const mean = r.reduce((s, v) => s + v, 0) / r.length;
      expect(Math.abs(mean)).toBeLessThan(0.05);
    }
    // About half of the 128 normal slots became CutMix pseudo-anomalies.
    expect(pseudo).toBeGreaterThan(40);
    expect(pseudo).toBeLessThan(88);
  });
});

describe('fidelity to the official code', () => {
  withPeer.each(['devnet', 'dra'] as const)('%s: 20 training steps give the PyTorch peer\'s losses to 1e-4 (same state, same batches)', async (method) => {
    const dir = path.join(tmp, `peer-${method}`);
    fs.mkdirSync(dir, { recursive: true });
    const job = await writeDeviationJob(dir, { method, size: 64, batch: 4, steps: 20, epochs: 1, threads: 1, train: 8, anomalies: 4 });
    const mine = await trainDeviationJob(job);
    const script = path.join(__dirname, '..', 'bench', 'peers', `${method}_torch.py`);
    // The peer's ResNet-18 in imiad's memory layout (bench/peers/layout.py): the same arithmetic.
    const r = spawnSync(peerPython, [script, job], { encoding: 'utf8', maxBuffer: 1 << 28, env: { ...process.env, ...peerLayoutEnv(resnetLayout(method)) } });
    expect(r.stderr.includes('Traceback') ? r.stderr : '').toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const peer = JSON.parse(lines[lines.length - 1]) as DeviationRun;
    expect(mine.losses).toHaveLength(20);
    expect(peer.losses).toHaveLength(20);
    expect(maxRelativeDiff(mine.losses, peer.losses)).toBeLessThanOrEqual(1e-4);
    // The losses move: these are 20 real optimiser steps, not a constant.
    expect(Math.min(...mine.losses)).toBeLessThan(mine.losses[0]);
  });
});
