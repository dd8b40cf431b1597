/**
 * End to end on data written by `imiad synth`: `imiad splits` for every setting, augmented copies and heatmap PNGs
 * from manifest entries, `imiad grid --dry-run`, and `imiad report` on a store filled by a grid run.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { Command } from 'commander';

import { buildProgram } from '../lib/cli';
import { registerGrid } from '../lib/cli/grid';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { decodeImage } from '../lib/image/decode';
import { readGridConfig } from '../lib/runner/config';
import { expandGrid, runGrid } from '../lib/runner/grid';
import { saveHeatmaps, selectHeatmapSamples } from '../lib/runner/heatmaps';
import { ResultsStore } from '../lib/runner/store';
import type { ExperimentExecutor } from '../lib/runner/types';
import { entryImage } from '../lib/settings/augment';
import type { SettingManifest } from '../lib/settings/types';
import { fewshotSplit, noisySplit } from '../lib/settings';
import { trainingSamples } from '../lib/runner/samples';
import { fakeMetrics } from './fixtures/fake-executor';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-splits-'));
const root = path.join(tmp, 'mvtec');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await synthesize('mvtec', root, { size: 64, train: 12, test: 24, seed: 3 });
});

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((stdout += String(s)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((stderr += String(s)), true));
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await buildProgram().parseAsync(['node', 'imiad', ...args]);
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { code, stdout, stderr };
}

async function splits(...args: string[]): Promise<SettingManifest> {
  const file = path.join(tmp, `m-${Math.random().toString(36).slice(2)}.json`);
  const r = await cli('splits', '--dataset', 'mvtec', '--root', root, '--json', file, ...args);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

test('imiad splits: supervised moves masked anomalies out of test, by seed', async () => {
  const categories = await loadDataset('mvtec', root);
  const m = await splits('--setting', 'supervised', '--anomalies', '4', '--seed', '1');
  expect(Object.keys(m)).toEqual(categories.map((c) => c.name));
  for (const c of categories) {
    const byPath = new Map(c.samples.map((s) => [s.path, s]));
    const moved = m[c.name].train.filter((e) => e.label === 'anomaly');
    expect(moved).toHaveLength(4);
    for (const e of moved) {
      expect(byPath.get(e.path)!.split).toBe('test');
      expect(byPath.get(e.path)!.maskPaths.every((p) => fs.existsSync(p))).toBe(true);
      expect(m[c.name].test.some((t) => t.path === e.path)).toBe(false);
    }
    expect(m[c.name].test).toHaveLength(c.samples.filter((s) => s.split === 'test').length - 4);
  }
  expect(await splits('--setting', 'supervised', '--anomalies', '4', '--seed', '1')).toEqual(m);
  expect(await splits('--setting', 'supervised', '--anomalies', '4', '--seed', '2')).not.toEqual(m);
});

test('imiad splits: noisy, fewshot with augmentation, continual; bad flags exit 2', async () => {
  const noisy = await splits('--setting', 'noisy', '--noise', '0.2');
  for (const c of Object.values(noisy)) {
    expect(c.info.noiseCount).toBe(3); // m = 12: round(0.2 * 12 / 0.8) = 3
    expect(c.train.filter((e) => e.trueLabel === 'anomaly' && e.label === 'normal')).toHaveLength(3);
  }
  const fewshot = await splits('--setting', 'fewshot', '--shots', '2', '--augment', 'rotation', '--augment-count', '2');
  const first = Object.values(fewshot)[0];
  expect(first.train).toHaveLength(6);
  const copy = first.train[1];
  expect(copy.augment?.kind).toBe('rotation');
  const [original, augmented] = await Promise.all([decodeImage(copy.path), entryImage(copy)]);
  expect([augmented.width, augmented.height]).toEqual([original.width, original.height]);
  expect(Buffer.from(augmented.data).equals(Buffer.from(original.data))).toBe(false);
  expect(Buffer.from((await entryImage(copy)).data).equals(Buffer.from(augmented.data))).toBe(true);

  // The detector's view: augmented copies written as PNG files, the same pixels as entryImage.
  const [category] = await loadDataset('mvtec', root);
  const split = fewshotSplit(category, { shots: 2, augment: 'rotation', augmentCount: 2 });
  const train = await trainingSamples(split, path.join(tmp, 'augmented'));
  expect(train).toHaveLength(6);
  expect(train[0].path).toBe(split.train[0].entry.path);
  expect(train[1].path).toMatch(/augmented\/.+-rotation-[0-9a-f]+\.png$/);
  expect(Buffer.from((await decodeImage(train[1].path)).data).equals(Buffer.from((await entryImage(split.train[1].entry)).data))).toBe(true);
  const noisyTrain = await trainingSamples(noisySplit(category, { noise: 0.2 }), tmp);
  expect(noisyTrain.filter((s) => s.split === 'test').every((s) => s.label === 'normal' && s.maskPaths.length === 0)).toBe(true);

  const file = path.join(tmp, 'continual.json');
  const r = await cli('splits', '--dataset', 'mvtec', '--root', root, '--setting', 'continual', '--json', file);
  expect(r.code).toBe(0);
  const continual = JSON.parse(fs.readFileSync(file, 'utf8')) as SettingManifest[];
  expect(continual.map((t) => Object.keys(t)[0])).toEqual(Object.keys(noisy));

  const bad = await cli('splits', '--dataset', 'mvtec', '--root', root, '--setting', 'fewshot', '--shots', 'two', '--json', file);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toBe('imiad: Expected an integer for --shots but received two of type string\n');
});

test('heatmap PNGs from a split, and grid --dry-run / run / report on the synthetic data', async () => {
  const [category] = await loadDataset('mvtec', root);
  const test = category.samples.filter((s) => s.split === 'test');
  const chosen = selectHeatmapSamples(test);
  expect(chosen.map((s) => s.label)).toEqual(['anomaly', 'anomaly', 'anomaly']);
  expect(new Set(chosen.map((s) => s.defectType)).size).toBe(3);
  const storeDir = path.join(tmp, 'store');
  const items = await Promise.all(
    chosen.map(async (sample) => {
      const img = await decodeImage(sample.path);
      const data = new Float32Array(img.width * img.height).map((_, i) => i % img.width);
      return { sample, map: { data, width: img.width, height: img.height } };
    }),
  );
  const records = await saveHeatmaps(path.join(storeDir, 'heatmaps', 'k'), storeDir, items, { size: 32 });
  expect(records[0]).toEqual({ sample: chosen[0].path, defectType: chosen[0].defectType, image: 'heatmaps/k/0-image.png', mask: 'heatmaps/k/0-mask.png', overlay: 'heatmaps/k/0-overlay.png' });
  const overlay = await sharp(path.join(storeDir, records[0].overlay)).raw().toBuffer({ resolveWithObject: true });
  expect([overlay.info.width, overlay.info.height]).toEqual([32, 32]);
  // Low scores (left) are blue in the jet overlay, high scores (right) red.
  expect(overlay.data[2]).toBeGreaterThan(overlay.data[0]);
  expect(overlay.data[31 * 3]).toBeGreaterThan(overlay.data[31 * 3 + 2]);

  const grid = path.join(tmp, 'grid.yaml');
  fs.writeFileSync(grid, `store: store/results.db\ndatasets:\n  - { name: mvtec, root: mvtec }\nmethods: [patchcore, padim]\nsettings:\n  - vanilla\n  - { name: fewshot, shots: [1, 2] }\n`);
  const dry = await cli('grid', grid, '--dry-run');
  expect(dry.code).toBe(0);
  expect(dry.stdout.trim().split('\n')).toHaveLength(2 * 2 * 3);
  expect(dry.stdout).toContain('to run   mvtec/');
  // Without an executor (registerGrid(program)) only --dry-run works; lib/cli.ts registers the real one (test/demo.test.ts).
  const bare = new Command();
  registerGrid(bare);
  const quiet = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  process.exitCode = 0;
  try {
    await bare.parseAsync(['node', 'imiad', 'grid', grid]);
  } finally {
    quiet.mockRestore();
  }
  expect(process.exitCode).toBe(2);
  process.exitCode = 0;

  const config = readGridConfig(grid);
  const store = new ResultsStore(config.store);
  const { experiments } = await expandGrid(config, loadDataset, (k) => store.heatmapDir(k));
  const executor: ExperimentExecutor = async (exp) => ({
    metrics: fakeMetrics(exp.key),
    efficiency: { inferenceMsPerImage: exp.config.method === 'padim' ? 5 : 20, memoryBytes: exp.config.method === 'padim' ? 1e6 : 4e6 },
    heatmaps: exp.config.setting.name === 'vanilla' ? await saveHeatmaps(exp.heatmapDir, path.dirname(store.file), items, { size: 32 }) : [],
  });
  expect((await runGrid(experiments, store, executor)).done).toBe(12);
  store.close();
  const again = await cli('grid', grid, '--dry-run', '--json');
  expect(JSON.parse(again.stdout).experiments.every((e: { stored: boolean }) => e.stored)).toBe(true);

  const out = path.join(tmp, 'report');
  const rep = await cli('report', '--store', config.store, '--out', out);
  expect(rep.code).toBe(0);
  expect(rep.stdout).toContain('**Table VI.**');
  expect(rep.stdout).toContain(`Report: ${path.join(out, 'index.html')}`);
  for (const f of ['fig2-mvtec', 'fig3-mvtec', 'fig4-mvtec']) expect(fs.existsSync(path.join(out, 'figures', `${f}.png`))).toBe(true);
  const missing = await cli('report', '--store', path.join(tmp, 'nope.db'), '--out', out);
  expect(missing.code).toBe(2);
  expect(missing.stderr).toBe(`imiad: Cannot open the results store ${path.join(tmp, 'nope.db')}: no such file\n`);
});
