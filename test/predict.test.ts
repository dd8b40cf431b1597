/**
 * `imiad predict` and `loadDetector`: the decision threshold a checkpoint carries (F1-optimal on the saving run's
 * labelled test images, else the 0.99 quantile of training-normal scores), the rows, maps and overlays per image,
 * and the errors that name the checkpoint and the option.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { runCli } from './helpers/cli';
import { loadDetector } from '../lib/methods/load';
import { readCheckpoint, writeCheckpoint } from '../lib/methods/checkpoint';
import { decodeTiff } from '../lib/metrics/maps';
import { f1OptimalThreshold, NORMAL_QUANTILE, quantileThreshold } from '../lib/metrics/threshold';
import { decisionFor } from '../lib/runner/experiment';
import { createDetector } from '../lib/methods';
import { loadDataset } from '../lib/datasets';
import { predictInputs } from '../lib/cli/predict';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-predict-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('decision thresholds', () => {
  it('F1-optimal: the score at which F1 over the labelled images is highest, higher threshold on ties', () => {
    // Scores descending: 0.9 (a), 0.8 (n), 0.7 (a), 0.6 (a), 0.2 (n). At 0.6: TP 3, FP 1, FN 0 -> F1 = 6/7.
    const r = f1OptimalThreshold([0.2, 0.9, 0.6, 0.8, 0.7], [0, 1, 1, 0, 1]);
    expect(r).toEqual({ threshold: 0.6, source: 'f1-optimal', images: 5, f1: 6 / 7 });
    // Tied scores fall on one side together: {0.5 a, 0.5 n} then 0.1 n. At 0.5: F1 = 2/3; at 0.1: 2/4.
    expect(f1OptimalThreshold([0.5, 0.5, 0.1], [1, 0, 0]).threshold).toBe(0.5);
    // Perfect separation: the lowest anomaly score.
    expect(f1OptimalThreshold([1, 2, 10, 11], [0, 0, 1, 1])).toMatchObject({ threshold: 10, f1: 1 });
  });

  it('refuses one-kind labels and non-finite scores with clear messages', () => {
    expect(() => f1OptimalThreshold([1, 2], [0, 0])).toThrow('Expected normal and anomalous images for the F1-optimal threshold but received one kind only');
    expect(() => f1OptimalThreshold([1, NaN], [0, 1])).toThrow('Expected finite scores for the F1-optimal threshold but score 1 is NaN');
  });

  it('normal quantile: numpy.quantile with linear interpolation', () => {
    // numpy.quantile([1, 2, 3, 4, 10], 0.99) = 4 + 0.96 * 6 = 9.76
    expect(quantileThreshold([10, 1, 3, 2, 4]).threshold).toBeCloseTo(9.76, 12);
    expect(quantileThreshold([10, 1, 3, 2, 4], 0.5).threshold).toBe(3);
    expect(quantileThreshold([7]).threshold).toBe(7);
    expect(NORMAL_QUANTILE).toBe(0.99);
  });
});

describe('imiad run --save, then imiad predict', () => {
  const root = path.join(tmp, 'data');
  const model = path.join(tmp, 'woven.imiad');
  const scores = path.join(tmp, 'scores.csv');

  beforeAll(async () => {
    const s = await runCli(['synth', '--layout', 'mvtec', '--out', root, '--categories', '1', '--size', '48', '--train', '6', '--test', '8']);
    expect(s.code).toBe(0);
    const r = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'patchcore', '--image-size', '48', '--device', 'cpu', '--quiet', '--save', model, '--scores', scores]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('stores the F1-optimal threshold of the saving run\'s test scores in the checkpoint', async () => {
    const rows = fs.readFileSync(scores, 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
    const expected = f1OptimalThreshold(rows.map((r) => Number(r[2])), rows.map((r) => Number(r[1])));
    const c = await readCheckpoint(model);
    expect(c.decision).toEqual(expected);
    expect(c.decision?.images).toBe(8);
  });

  it('writes one row per image, float32 maps and overlays at the image size; decisions follow the threshold', async () => {
    const out = path.join(tmp, 'pred');
    const input = path.join(root, 'woven', 'test');
    const r = await runCli(['predict', '--load', model, '--input', input, '--out', out, '--batch-size', '3', '--quiet']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const threshold = (await readCheckpoint(model)).decision!.threshold;
    const csv = fs.readFileSync(path.join(out, 'predictions.csv'), 'utf8');
    expect(r.stdout).toBe(csv);
    const lines = csv.trim().split('\n');
    expect(lines[0]).toBe('path,score,decision');
    expect(lines).toHaveLength(9);
    const inputs = predictInputs([input]);
    expect(lines.slice(1).map((l) => l.split(',')[0])).toEqual(inputs.map((i) => i.file));
    // The scores are those of the saving run (same detector, same images).
    const runScores = new Map(fs.readFileSync(scores, 'utf8').trim().split('\n').slice(1).map((l) => [l.split(',')[0], Number(l.split(',')[2])]));
    for (const l of lines.slice(1)) {
      const [file, score, decision] = l.split(',');
      expect(Number(score)).toBeCloseTo(runScores.get(path.relative(path.join(root, 'woven'), file))!, 4);
      expect(decision).toBe(Number(score) >= threshold ? 'anomaly' : 'normal');
    }
    for (const { rel } of inputs) {
      const map = decodeTiff(fs.readFileSync(path.join(out, 'maps', `${rel}.tiff`)), rel);
      expect([map.width, map.height]).toEqual([48, 48]);
      const meta = await sharp(path.join(out, 'overlays', `${rel}.png`)).metadata();
      expect([meta.width, meta.height, meta.channels]).toEqual([48, 48, 3]);
    }
  });

  it('--json prints the JSON to stdout; --threshold overrides the checkpoint\'s', async () => {
    const img = path.join(root, 'woven', 'test', 'good', '000.png');
    const r = await runCli(['predict', '--load', model, '--input', img, '--json', '--threshold', '-1', '--quiet']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ checkpoint: model, method: 'patchcore', threshold: -1, threshold_source: 'option', images: 1, anomalies: 1 });
    expect(j.predictions).toEqual([{ path: img, score: expect.any(Number), decision: 'anomaly' }]);
  });

  it('loadDetector(path).predict(images) gives the same scores and decisions as the command', async () => {
    const d = await loadDetector(model);
    try {
      const files = predictInputs([path.join(root, 'woven', 'test')]).map((i) => i.file);
      const p = await d.predict(files);
      const csv = fs.readFileSync(path.join(tmp, 'pred', 'predictions.csv'), 'utf8').trim().split('\n').slice(1);
      expect(p.map((x) => `${x.path},${x.score},${x.decision}`)).toEqual(csv);
      expect(p[0].map?.width).toBe(48);
      await expect(d.predict([])).rejects.toThrow('Expected non-empty array of image file paths for images but received Array(0) of type object');
      await expect(d.predict([path.join(tmp, 'none.png')])).rejects.toThrow(`Image ${path.join(tmp, 'none.png')} does not exist or is not a file`);
    } finally {
      await d.dispose();
    }
  });

  it('errors name the checkpoint and the option', async () => {
    const img = path.join(root, 'woven', 'test', 'good', '000.png');
    // A checkpoint saved without a threshold (an older imiad).
    const c = await readCheckpoint(model);
    const old = path.join(tmp, 'old.imiad');
    await writeCheckpoint(old, { method: c.method, params: c.params, state: c.state });
    let r = await runCli(['predict', '--load', old, '--input', img, '--device', 'cpu']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`imiad: Checkpoint ${old} holds no decision threshold (saved by an older imiad): pass --threshold T\n`);
    r = await runCli(['predict', '--load', path.join(tmp, 'missing.imiad'), '--input', img]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^imiad: Cannot read the checkpoint .*missing\.imiad: ENOENT/);
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    r = await runCli(['predict', '--load', model, '--input', empty]);
    expect(r.stderr).toBe(`imiad: Expected images (png, jpg, jpeg, bmp, tif, tiff) in --input folder ${empty} but found none\n`);
    r = await runCli(['predict', '--load', model, '--input', img, '--threshold', 'x']);
    expect(r.stderr).toBe('imiad: Expected finite number for --threshold but received x of type string\n');
    // A saved detector given differently prepared images: the message names the checkpoint and the options.
    // (Saved at the default 256 -> 224, loaded with --image-size 48.)
    const defaults = path.join(tmp, 'default-size.imiad');
    r = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'patchcore', '--coreset', '0.05', '--quiet', '--save', defaults]);
    expect(r.code).toBe(0);
    r = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'patchcore', '--image-size', '48', '--load', defaults, '--quiet']);
    expect(r.code).toBe(2);
    // imiad run compares the command with the checkpoint's header before reading any image (lib/cli/run.ts).
    expect(r.stderr).toBe(
      `imiad: Checkpoint ${defaults} was fitted with patchcore's default imageSize but the command sets --image-size 48; leave it out to use the checkpoint's\n`,
    );
  });
});

describe('a checkpoint saved without labelled test images', () => {
  it('carries the 0.99 quantile of the training-normal scores', async () => {
    const root = path.join(tmp, 'data2');
    await runCli(['synth', '--layout', 'mvtec', '--out', root, '--categories', '1', '--size', '40', '--train', '5', '--test', '4']);
    const [category] = await loadDataset('mvtec', root);
    const train = category.samples.filter((s) => s.split === 'train');
    const normalTest = category.samples.filter((s) => s.split === 'test' && s.label === 'normal');
    const detector = createDetector('dne', { imageSize: 40 });
    try {
      await detector.fit(train);
      const trainScores = (await detector.predict(train)).scores;
      const testScores = (await detector.predict(normalTest)).scores;
      const decision = await decisionFor(detector, normalTest, testScores, train);
      expect(decision).toEqual(quantileThreshold(trainScores));
      expect(decision).toMatchObject({ source: 'normal-quantile', quantile: 0.99, images: 5 });
      // With both kinds among the test images: F1-optimal on them.
      const test = category.samples.filter((s) => s.split === 'test');
      const scores = (await detector.predict(test)).scores;
      expect(await decisionFor(detector, test, scores, train)).toEqual(f1OptimalThreshold(scores, test.map((s) => (s.label === 'anomaly' ? 1 : 0))));
    } finally {
      await detector.dispose?.();
    }
  });
});
