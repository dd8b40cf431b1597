/**
 * DRAEM (native/train/draem.cc, lib/methods/draem.ts): on tiny generated data it lowers its loss and separates
 * defects; the same seed gives the same losses and scores; a checkpoint reloads to identical scores; continued fits
 * go on with Adam's state; bad input (texture folder, image size, a diverging loss) is refused with a clear error;
 * `imiad run --method draem` works on the synthetic layouts; the loss trajectory agrees with the official code run by
 * PyTorch (bench/peers/draem_torch.py) from the same weights on the same batches. Networks are narrowed (widths) and
 * images are 32 px to keep this test short; the defaults are the official sizes.
 * The tests skip, with the reason printed, when the training addon (or, for the peer, python3's torch) is missing.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { maxRelativeDiff } from '../bench/common';
import { runDraemJob, runDraemPeer, writeDraemJob } from '../bench/draem';
import { binaryClassificationMetrics } from '../bindings/metrics';
import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { runRun } from '../lib/cli/run';
import { runExperiment } from '../lib/runner/experiment';
import { loadDataset } from '../lib/datasets';
import { synthesize, SYNTH_LAYOUTS } from '../lib/datasets/synth';
import type { Category, Sample } from '../lib/datasets/types';
import { Draem, draemLearningRate, pooledMax, readCheckpoint, writeCheckpoint } from '../lib/methods';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-draem-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) process.stdout.write(`test/draem.test.ts: skipping the DRAEM tests: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
const withAddon = available ? test : test.skip;
const peer = fs.existsSync('/usr/bin/python3') && spawnSync('/usr/bin/python3', ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
if (available && !peer) process.stdout.write('test/draem.test.ts: skipping the PyTorch comparison: /usr/bin/python3 lacks torch (apt-get install python3-torch)\n');
const withPeer = available && peer ? test : test.skip;

let category: Category;
let train: Sample[] = [];
let testSet: Sample[] = [];
const tiny = { imageSize: 32, widths: [8, 4] as [number, number], trainThreads: 1, batchSize: 8, lr: 2e-3 };

beforeAll(async () => {
  const root = path.join(tmp, 'mvtec');
  await synthesize('mvtec', root, { seed: 3, categories: 1, size: 32, train: 16, test: 20 });
  [category] = await loadDataset('mvtec', root);
  train = category.samples.filter((s) => s.split === 'train');
  testSet = category.samples.filter((s) => s.split === 'test');
});

async function auroc(scores: Float64Array): Promise<number> {
  const labels = Uint8Array.from(testSet.map((s) => (s.label === 'anomaly' ? 1 : 0)));
  return (await binaryClassificationMetrics(scores, labels)).auroc;
}

describe('DRAEM helpers', () => {
  test('MultiStepLR at 80 % and 90 % of the epochs, gamma 0.2', () => {
    expect([0, 559, 560, 629, 630, 699].map((e) => draemLearningRate(1e-4, e, 700) / 1e-4)).toEqual([1, 1, 0.2, 0.2, 0.2 * 0.2, 0.2 * 0.2]);
    // Milestones that are not whole numbers take effect after the next whole epoch (2.4 -> 3, 2.7 -> 3).
    expect([0, 1, 2].map((e) => draemLearningRate(1, e, 3))).toEqual([1, 1, 1]);
    expect([7, 8, 9].map((e) => draemLearningRate(1, e, 10))).toEqual([1, 0.2, 0.2 * 0.2]);
  });

  test('the image score is the maximum of the 21 x 21 average-pooled map (zero padding counted)', () => {
    const side = 32;
    const map = new Float32Array(side * side);
    map[0] = 441; // a corner: the window centred there covers 11 x 11 of the image, the padding counts as zeros
    expect(pooledMax(map, side, 21)).toBeCloseTo(1, 12);
    map.fill(1);
    expect(pooledMax(map, side, 21)).toBeCloseTo(1, 12); // the centre's window lies inside
    expect(pooledMax(map, 8, 21)).toBeCloseTo(64 / 441, 12); // an image smaller than the window
  });
});

describe('DRAEM', () => {
  withAddon('the loss falls and defects score higher; same seed, same losses and scores; a reload scores identically', async () => {
    const params = { ...tiny, epochs: 40 };
    const a = new Draem(params);
    const b = new Draem(params);
    const c = new Draem(params);
    const progress: string[] = [];
    await a.fit(train, { onProgress: (_d, _t, detail) => progress.push(detail ?? '') });
    const stats = a.trainingStats()!;
    expect(stats.losses).toHaveLength(40);
    expect(stats.losses[39]).toBeLessThan(stats.losses[0] * 0.7);
    expect(progress).toHaveLength(80);
    expect(progress[79]).toMatch(/^epoch 40\/40 loss \d+\.\d{4} \d+\.\d img\/s$/);
    expect(a.parameterCount()).toBeGreaterThan(0);
    expect(a.stateBytes()).toBe(a.parameterCount() * 4);
    const p = await a.predict(testSet);
    expect(p.maps[0].width).toBe(32);
    expect(p.maps.every((m) => m.data.every((v) => v >= 0 && v <= 1))).toBe(true);
    expect(await auroc(p.scores)).toBeGreaterThanOrEqual(0.85);
    await b.fit(train);
    expect(b.trainingStats()!.losses).toEqual(stats.losses);
    expect(Array.from((await b.predict(testSet)).scores)).toEqual(Array.from(p.scores));
    const file = path.join(tmp, 'draem.imiad');
    await writeCheckpoint(file, { method: 'draem', params: {}, state: a.saveState() });
    await c.loadState((await readCheckpoint(file)).state);
    const again = await c.predict(testSet);
    expect(Array.from(again.scores)).toEqual(Array.from(p.scores));
    expect(Array.from(again.maps[3].data)).toEqual(Array.from(p.maps[3].data));
  });

  withAddon('continueTraining goes on with Adam’s state, which a checkpoint keeps; a checkpoint of other widths is refused', async () => {
    const params = { ...tiny, epochs: 1 };
    const a = new Draem(params);
    const b = new Draem(params);
    await a.fit(train);
    const once = Array.from((await a.predict(testSet)).scores);
    const saved = a.saveState();
    expect((saved.config.optimizerNames as string[])).toContain('exp_avg:recon.encoder.block1.0.weight');
    await b.loadState(saved);
    await a.fit(train, { continueTraining: true });
    await b.fit(train, { continueTraining: true });
    expect([a.fitCount, b.fitCount]).toEqual([2, 2]);
    const continued = Array.from((await a.predict(testSet)).scores);
    expect(continued).not.toEqual(once);
    expect(Array.from((await b.predict(testSet)).scores)).toEqual(continued);
    await expect(new Draem({ ...params, widths: [8, 8] }).loadState(saved)).rejects.toMatchObject({
      code: 'ERR_IMIAD_CHECKPOINT',
      message: "Expected DRAEM networks of widths 8, 8 but the checkpoint's have 8, 4",
    });
  });

  withAddon('a texture folder that is missing, empty or undecodable is refused before training, naming it', async () => {
    const steps: number[] = [];
    const onProgress = (d: number): number => steps.push(d);
    const missing = path.join(tmp, 'no-dtd');
    await expect(new Draem({ ...tiny, epochs: 1, textureRoot: missing }).fit(train, { onProgress })).rejects.toMatchObject({
      code: 'ERR_IMIAD_FILE',
      message: `Expected --texture-root (textureRoot) to be a folder of texture images but ${missing} does not exist`,
    });
    const empty = path.join(tmp, 'empty-dtd');
    fs.mkdirSync(empty);
    await expect(new Draem({ ...tiny, epochs: 1, textureRoot: empty }).fit(train, { onProgress })).rejects.toMatchObject({ code: 'ERR_IMIAD_EMPTY', message: expect.stringContaining(empty) });
    const broken = path.join(tmp, 'broken-dtd');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'a.jpg'), 'not a jpeg');
    await expect(new Draem({ ...tiny, epochs: 1, textureRoot: broken }).fit(train, { onProgress })).rejects.toMatchObject({ code: 'ERR_IMIAD_IMAGE', message: expect.stringContaining(broken) });
    expect(steps).toEqual([]);
    // A folder of images trains: here the test images of the same dataset stand in for DTD.
    const d = new Draem({ ...tiny, epochs: 1, textureRoot: path.join(category.root, 'test') });
    await d.fit(train, { onProgress });
    expect(steps).toEqual([1, 2]);
  });

  withAddon('sizes the U-Net cannot take are refused; a diverging loss names epoch and step and leaves nothing to save', async () => {
    expect(() => new Draem({ imageSize: 48 })).toThrow("Expected DRAEM's input side (cropSize, else imageSize) to be a multiple of 32 (its U-Net pools 5 times) but received 48");
    expect(() => new Draem({ widths: [0, 4] as unknown as [number, number] })).toThrow('Expected two integers between 1 and 4096 (reconstructive, discriminative base widths) for widths');
    const d = new Draem({ ...tiny, epochs: 5, lr: 1e30 });
    let message = '';
    await d.fit(train).catch((err: Error & { code: string }) => {
      expect(err.code).toBe('ERR_IMIAD_TRAINING_DIVERGED');
      message = err.message;
    });
    expect(message).toMatch(/^DRAEM's training loss became (NaN|Infinity|-Infinity) in epoch \d, step [12] \(lower --lr\); the model was not kept$/);
    expect(() => d.saveState()).toThrow('DRAEM: call fit() before predict()');
  });

  withAddon('DRAEM runs on every synthetic layout (LOCO: with sPRO); imiad run --method draem with its defaults and --texture-root', async () => {
    for (const layout of SYNTH_LAYOUTS) {
      const root = path.join(tmp, `layout-${layout}`);
      await synthesize(layout, root, { seed: 1, categories: 1, size: 32, train: 4, test: 4 });
      const [cat] = await loadDataset(layout, root);
      const r = await runExperiment({ dataset: layout, root: cat.root, category: cat, method: 'draem', params: { ...tiny, epochs: 1, batchSize: 4 } });
      expect(r.metrics.image_auroc).toBeGreaterThanOrEqual(0);
      if (layout === 'loco') expect(Object.values(r.metrics.spro!.mean).every((v) => v >= 0 && v <= 1)).toBe(true);
      else expect(r.metrics.pixel_auroc).toBeGreaterThanOrEqual(0);
    }
    // The command line, at the official widths (97.4 M parameters; 32 px keeps it short).
    const r = await runRun({ dataset: 'mvtec', root: path.dirname(category.root), method: 'draem', imageSize: '32', epochs: '1', textureRoot: path.join(category.root, 'test') });
    expect(r.aborted).toBe(false);
    expect(r.results).toHaveLength(1);
    expect(r.results[0].params).toMatchObject({ textureRoot: path.join(category.root, 'test'), epochs: 1, imageSize: 32 });
    expect(r.results[0].metrics.imageAUROC).toBeGreaterThanOrEqual(0);
    expect(r.results[0].metrics.pixelAUROC).toBeGreaterThanOrEqual(0);
  }, 900_000);
});

describe('the PyTorch peer (official code)', () => {
  withPeer('from the same weights on the same synthetic batches, the 20-step loss trajectories agree to 1e-4', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'peer-'));
    const job = await writeDraemJob(dir, { size: 32, batch: 4, steps: 20, widths: [16, 8], seed: 1, threads: 1 });
    const ours = await runDraemJob(job);
    const theirs = runDraemPeer(job);
    expect(ours.losses).toHaveLength(20);
    expect(theirs.losses).toHaveLength(20);
    expect(ours.losses[19]).toBeLessThan(ours.losses[0]);
    expect(maxRelativeDiff(ours.losses, theirs.losses)).toBeLessThanOrEqual(1e-4);
  }, 600_000);
});
