/**
 * `imiad run` end to end on tiny generated trees of every layout, for every detector (through the grid's executor;
 * results in the schema of lib/runner/schema.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { runCli } from './helpers/cli';
import { runRun } from '../lib/cli/run';
import { loadDataset } from '../lib/datasets';
import { synthesize, SYNTH_LAYOUTS } from '../lib/datasets/synth';
import { readAnomalyMap } from '../lib/metrics/maps';
import { readImageSize } from '../lib/image/decode';
import { METHOD_NAMES, TRAINED_METHODS } from '../lib/methods';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-run-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cli = runCli;

const EFFICIENCY_KEYS = ['inferenceMsPerImage', 'backboneMsPerImage', 'methodMsPerImage', 'backboneMsPerImageP95', 'methodMsPerImageP95', 'fitMs', 'memoryBytes', 'peakRssBytes', 'device'];

describe.each(SYNTH_LAYOUTS.map((l) => [l]))('%s', (layout) => {
  const root = path.join(tmp, layout);
  beforeAll(async () => {
    await synthesize(layout, root, { seed: 4, categories: 1, size: 48, train: 4, test: 6 });
  });

  // The trained detectors (STPM, RD4AD) run end to end in test/train.test.ts, with few epochs.
  test.each(METHOD_NAMES.filter((m) => !TRAINED_METHODS.includes(m)).map((m) => [m]))('%s', async (method) => {
    const { results, aborted } = await runRun({ dataset: layout, root, method, imageSize: '48' });
    expect(aborted).toBe(false);
    expect(results).toHaveLength(1);
    const [{ metrics: m, efficiency }] = results;
    expect(m.imageAUROC).toBeGreaterThanOrEqual(0);
    expect(m.imageAUROC).toBeLessThanOrEqual(1);
    expect(Object.keys(efficiency!).sort()).toEqual([...EFFICIENCY_KEYS].sort());
    expect(efficiency!.memoryBytes).toBeGreaterThan(0);
    expect(efficiency!.methodMsPerImageP95).toBeGreaterThanOrEqual(efficiency!.methodMsPerImage!);
    if (method === 'dne') {
      expect([m.pixelAUROC, m.pixelAP, m.pixelPRO]).toEqual([null, null, null]);
    } else {
      expect(m.pixelAUROC).toBeGreaterThan(0.5);
      if (layout !== 'loco') expect(m.pixelPRO).toBeGreaterThan(0);
    }
    const limits = ['0.01', '0.1', '0.3', '1.0'];
    if (layout === 'loco') {
      expect(typeof m.imageAUROCLogical).toBe('number');
      expect(typeof m.imageAUROCStructural).toBe('number');
      // LOCO reports sPRO at 0.05 and beside it the other limits of the official script; PRO does not apply.
      expect(m.pixelPRO).toBeNull();
      if (method === 'dne') expect(m.sPRO).toBeNull();
      else expect(Object.keys(m).filter((k) => k.startsWith('sPRO@'))).toEqual(limits.map((l) => `sPRO@${l}`));
    } else {
      expect([m.sPRO, m.imageAUROCLogical]).toEqual([null, null]);
    }
  });
});

describe('imiad run on the command line', () => {
  const root = path.join(tmp, 'cli-mvtec');
  beforeAll(async () => {
    await synthesize('mvtec', root, { seed: 5, categories: 2, size: 48, train: 4, test: 6 });
  });

  test('--json, --maps, --scores and the table', async () => {
    const json = path.join(tmp, 'out', 'run.json');
    const maps = path.join(tmp, 'out', 'maps');
    const scores = path.join(tmp, 'out', 'scores.csv');
    const r = await cli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'patchcore', '--image-size', '48', '--coreset', '0.5', '--reweight', '2',
      '--categories', 'disc', '--seed', '3', '--json', json, '--maps', maps, '--scores', scores]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^category\s+image AUROC\s+image AP\s+pixel AUROC\s+pixel AP\s+AU-PRO@0.3\s+fit s\s+backbone ms p50\s+method ms p50\/p95\s+state MB\n/);
    expect(r.stdout).toContain(`JSON written to ${json}`);
    const doc = JSON.parse(fs.readFileSync(json, 'utf8'));
    expect(doc.results.map((x: { category: string }) => x.category)).toEqual(['disc']);
    const disc = doc.results[0];
    expect(disc.params).toEqual({ imageSize: 48, cropSize: 48, coreset: 0.5, reweight: 2 });
    expect(disc.seed).toBe(3);
    expect(disc.files).toEqual({ scores: [scores], maps });
    const [category] = await loadDataset('mvtec', root, { categories: ['disc'] });
    const test = category.samples.filter((s) => s.split === 'test');
    const lines = fs.readFileSync(scores, 'utf8').trim().split('\n');
    expect(lines[0]).toBe('image,label,score');
    expect(lines).toHaveLength(test.length + 1);
    test.forEach((s, i) => {
      const [image, label, score] = lines[i + 1].split(',');
      expect(image).toBe(`test/${s.defectType}/${path.basename(s.path)}`);
      expect(label).toBe(s.label === 'anomaly' ? '1' : '0');
      expect(Number.isFinite(Number(score))).toBe(true);
    });
    for (const s of test) {
      const file = path.join(maps, 'disc', 'test', s.defectType, `${path.basename(s.path, path.extname(s.path))}.tiff`);
      const map = await readAnomalyMap(file);
      expect({ width: map.width, height: map.height }).toEqual(await readImageSize(s.path));
    }
    // The saved maps score the same pixel metrics through imiad evaluate.
    const ev = await cli(['evaluate', '--dataset', 'mvtec', '--root', root, '--maps', maps, '--categories', 'disc', '--json', path.join(tmp, 'out', 'ev.json')]);
    expect(ev.code).toBe(0);
    const evaluated = JSON.parse(fs.readFileSync(path.join(tmp, 'out', 'ev.json'), 'utf8'));
    expect(evaluated.results[0].metrics.pixelAUROC).toBeCloseTo(disc.metrics.pixelAUROC, 10);
    expect(evaluated.results[0].metrics.pixelPRO).toBeCloseTo(disc.metrics.pixelPRO, 10);
  });

  test('several categories write one scores file each', async () => {
    const scores = path.join(tmp, 'multi', 'scores.csv');
    const r = await cli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'dne', '--image-size', '48', '--scores', scores]);
    expect(r.code).toBe(0);
    expect(fs.readdirSync(path.dirname(scores)).sort()).toEqual(['scores.disc.csv', 'scores.woven.csv']);
    expect(r.stdout.split('\n')[2]).toMatch(/^disc\s+\d\.\d{4}\s+\d\.\d{4}\s+-\s+-\s+-/);
  });

  test('the folder layout (own folders of normal, anomalous and mask images)', async () => {
    const own = path.join(tmp, 'own');
    const src = path.join(root, 'disc');
    fs.cpSync(path.join(src, 'train', 'good'), path.join(own, 'normal'), { recursive: true });
    fs.cpSync(path.join(src, 'test', 'good'), path.join(own, 'test-normal'), { recursive: true });
    for (const defect of fs.readdirSync(path.join(src, 'test')).filter((d) => d !== 'good')) {
      fs.cpSync(path.join(src, 'test', defect), path.join(own, 'anomaly', defect), { recursive: true });
      fs.cpSync(path.join(src, 'ground_truth', defect), path.join(own, 'masks', defect), { recursive: true });
    }
    const json = path.join(tmp, 'own-out', 'run.json');
    const r = await cli(['run', '--dataset', 'folder', '--root', own, '--normal', 'normal', '--anomaly', 'anomaly', '--masks', 'masks',
      '--test-normal', 'test-normal', '--method', 'patchcore', '--image-size', '48', '--json', json]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const doc = JSON.parse(fs.readFileSync(json, 'utf8'));
    expect(doc.results.map((x: { category: string }) => x.category)).toEqual(['own']);
    expect(doc.results[0].metrics.pixelAUROC).toBeGreaterThan(0.5);
    const missing = await cli(['run', '--dataset', 'folder', '--root', own, '--method', 'dne']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('imiad: The folder layout needs --normal DIR and --anomaly DIR\n');
  });

  test('bad input exits with code 2 and one line', async () => {
    const bad = await cli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'nosuch']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('imiad: Expected one of patchcore, padim, spade, dne, stpm, rd4ad, cfa, cflow, csflow, fastflow, cutpaste, devnet, dra, bgad, prn, semirest, regad, draem, favae, igd, gcad for --method but received nosuch of type string\n');
    const layer = await cli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'padim', '--image-size', '48', '--layers', 'layer1,block9', '--categories', 'disc']);
    expect(layer.code).toBe(2);
    expect(layer.stderr).toMatch(/^imiad: .*block9/);
    const coreset = await cli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'padim', '--coreset', '0.2']);
    expect(coreset.code).toBe(2);
    expect(coreset.stderr).toBe('imiad: --coreset applies to --method patchcore, not padim\n');
  });
});
