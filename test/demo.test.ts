/**
 * `imiad demo` end to end (with --small: the same grid on smaller images), the grid executor behind it (continual
 * matrix and notes through `imiad run --setting ... --store`), and the folded forgetting measure.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { runCli } from './helpers/cli';
import { DEMO_DATA, DEMO_METHODS } from '../lib/cli/demo';
import { forgettingMeasure, forgettingMeasureWithGaps } from '../lib/metrics';
import { ResultsStore } from '../lib/runner/store';
import { NOTE_CONTINUAL_STATISTICS, NOTE_IGNORES_LABELLED_ANOMALIES, NOTE_MEMORY_BANK_ACCUMULATES } from '../lib/runner/types';
import type { Category } from '../lib/datasets/types';
import { fewshotSplit, settingLabel } from '../lib/settings';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-demo-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cli = runCli;

describe('imiad demo', () => {
  const out = path.join(tmp, 'demo');
  let first: { code: number; stdout: string; stderr: string };

  beforeAll(async () => {
    first = await cli(['demo', '--out', out, '--small']);
  }, 600000);

  it('npm run demo runs the default demo (./imiad-demo, the default sizes)', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8'));
    expect(pkg.scripts.demo).toMatch(/node dist\/lib\/cli\.js demo$/);
    expect(DEMO_DATA).toEqual({ categories: 3, size: 128, train: 20, test: 20, seed: 0 });
  });

  it('stores every method x setting x category with metrics, manifests and heatmaps', () => {
    expect(first.stderr).not.toMatch(/failed/);
    expect(first.code).toBe(0);
    const store = new ResultsStore(path.join(out, 'results-small.db'), { readonly: true });
    const rows = store.rows();
    store.close();
    expect(rows).toHaveLength(2 * 3 * 6);
    const combos = rows.map((r) => `${r.config.method} ${settingLabel(r.config.setting)} ${r.config.category}`).sort();
    expect(new Set(combos).size).toBe(36);
    expect([...new Set(rows.map((r) => r.config.method))].sort()).toEqual([...DEMO_METHODS].sort());
    expect([...new Set(rows.map((r) => settingLabel(r.config.setting)))].sort()).toEqual(['fewshot-1', 'fewshot-2', 'fewshot-2-rotation2', 'fewshot-4', 'noisy-0.1', 'vanilla']);
    for (const r of rows) {
      for (const m of ['imageAUROC', 'imageAP', 'pixelAUROC', 'pixelAP', 'pixelPRO']) {
        expect(r.metrics[m]).toBeGreaterThanOrEqual(0);
        expect(r.metrics[m]).toBeLessThanOrEqual(1);
      }
      expect(r.efficiency.inferenceMsPerImage).toBeGreaterThan(0);
      expect(r.efficiency.memoryBytes).toBeGreaterThan(0);
      // The image AUROC's bootstrap interval over the test images (seeded by the experiment's seed) contains it.
      const interval = r.intervals!.imageAUROC;
      expect(interval).toMatchObject({ estimate: r.metrics.imageAUROC, resamples: 1000, level: 0.95, seed: 0 });
      expect(interval.low).toBeLessThanOrEqual(r.metrics.imageAUROC!);
      expect(interval.high).toBeGreaterThanOrEqual(r.metrics.imageAUROC!);
      expect(r.heatmaps.length).toBeGreaterThan(0);
      for (const h of r.heatmaps) expect(fs.existsSync(path.join(out, h.overlay))).toBe(true);
      const manifest = r.manifest as Record<string, { train: { label: string; trueLabel?: string; augment?: unknown }[] }>;
      const train = manifest[r.config.category].train;
      if (r.config.setting.name === 'fewshot' && r.config.setting.augment) {
        // 2 shots, each followed by 2 rotated copies (written as PNGs for the detector).
        expect(train).toHaveLength(6);
        expect(train.filter((e) => e.augment)).toHaveLength(4);
      } else if (r.config.setting.name === 'fewshot') {
        expect(train).toHaveLength(r.config.setting.shots);
      }
      if (r.config.setting.name === 'noisy') expect(train.some((e) => e.label === 'normal' && e.trueLabel === 'anomaly')).toBe(true);
    }
    expect(fs.readdirSync(path.join(out, 'augmented')).length).toBe(2);
  });

  it('writes the report and prints the main table and its path', () => {
    const html = path.join(out, 'report-small', 'index.html');
    expect(fs.existsSync(html)).toBe(true);
    const page = fs.readFileSync(html, 'utf8');
    for (const t of ['Table VI', 'Table IX', 'Table X', 'Fig. 2', 'Fig. 3', 'Fig. 4']) expect(page).toContain(t);
    expect(page).toContain('<svg');
    expect(fs.existsSync(path.join(out, 'report-small', 'tables', 'table-VI.csv'))).toBe(true);
    // Two categories are two blocks: a statistics table and a CD diagram per setting.
    for (const setting of ['vanilla', 'fewshot-1', 'noisy-0.1']) {
      expect(page).toContain(`<table id="table-stats-${setting}"`);
      expect(page).toContain(`<figure id="fig-cd-${setting}">`);
      expect(fs.existsSync(path.join(out, 'report-small', 'figures', `fig-cd-${setting}.png`))).toBe(true);
    }
    expect(first.stdout).toMatch(/^vanilla imageAUROC: average ranks .+ over 2 blocks; Friedman p = /m);
    expect(first.stdout).toContain('**Table VI.**');
    expect(first.stdout).toContain('| Dataset | Metric | padim | patchcore | spade |');
    expect(first.stdout).toMatch(/^patchcore +\d\.\d{3} \/ \d\.\d{3}/m);
    expect(first.stdout).toContain('36 experiments in');
    expect(first.stdout).toContain(`Report: ${html}`);
  });

  it('a rerun skips every stored experiment and writes the same table', async () => {
    const again = await cli(['demo', '--out', out, '--small']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('(0 run now, 36 already stored)');
    const table = (s: string): string => s.slice(s.indexOf('**Table VI.**'), s.indexOf('36 experiments in'));
    expect(table(again.stdout)).toBe(table(first.stdout));
  }, 300000);

  it('imiad run --setting continual --store keeps one detector over the tasks and stores the matrix and FM', async () => {
    const data = path.join(out, 'data-small');
    const db = path.join(tmp, 'continual.db');
    for (const method of ['patchcore', 'padim']) {
      const r = await cli(['run', '--dataset', 'mvtec', '--root', data, '--method', method, '--image-size', '64', '--setting', 'continual', '--store', db]);
      expect(r.stderr).not.toMatch(/imiad:/);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/continual/);
    }
    const store = new ResultsStore(db, { readonly: true });
    const rows = store.rows();
    store.close();
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      const c = row.continual!;
      expect(c.tasks).toHaveLength(2);
      const T = c.matrix.imageAUROC;
      expect(T[0][1]).toBeNull();
      expect(typeof T[0][0]).toBe('number');
      expect(typeof T[1][0]).toBe('number');
      expect(typeof T[1][1]).toBe('number');
      expect(c.forgetting.imageAUROC).toBeCloseTo((T[0][0] as number) - (T[1][0] as number), 12);
      expect(row.metrics.imageAUROC).toBeCloseTo(((T[1][0] as number) + (T[1][1] as number)) / 2, 12);
    }
    expect(rows.find((r) => r.config.method === 'patchcore')!.notes).toEqual([NOTE_MEMORY_BANK_ACCUMULATES]);
    expect(rows.find((r) => r.config.method === 'padim')!.notes).toEqual([NOTE_CONTINUAL_STATISTICS]);
    // The same command again runs nothing and shows the stored row.
    const again = await cli(['run', '--dataset', 'mvtec', '--root', data, '--method', 'patchcore', '--image-size', '64', '--setting', 'continual', '--store', db]);
    expect(again.code).toBe(0);
    const store2 = new ResultsStore(db, { readonly: true });
    expect(store2.rows()).toHaveLength(2);
    store2.close();
  }, 300000);

  it('imiad grid runs a grid file through the real executor', async () => {
    const data = path.join(out, 'data-small');
    const grid = path.join(tmp, 'grid.yaml');
    fs.writeFileSync(grid, `store: grid.db\ndatasets:\n  - { name: mvtec, root: ${JSON.stringify(data)}, categories: [disc] }\nmethods:\n  - { name: patchcore, params: { imageSize: 64 } }\n  - { name: dne, params: { imageSize: 64 } }\nsettings: [vanilla]\n`);
    const r = await cli(['grid', grid, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).summary).toMatchObject({ done: 2, skipped: 0, failed: [] });
    const store = new ResultsStore(path.join(tmp, 'grid.db'), { readonly: true });
    const rows = store.rows();
    store.close();
    const dne = rows.find((x) => x.config.method === 'dne')!;
    // DNE scores images only: pixel metrics are null and there are no heatmaps.
    expect(dne.metrics.pixelAUROC).toBeNull();
    expect(dne.heatmaps).toEqual([]);
    expect(rows.find((x) => x.config.method === 'patchcore')!.metrics.pixelAUROC).toBeGreaterThan(0.5);
    const again = await cli(['grid', grid, '--json']);
    expect(JSON.parse(again.stdout).summary).toMatchObject({ done: 0, skipped: 2 });
    // The stored rows are the results either way.
    expect(JSON.parse(again.stdout).results).toEqual(JSON.parse(r.stdout).results);
  }, 300000);

  it('imiad run --setting supervised notes that the detector ignores the labelled anomalies', async () => {
    const data = path.join(out, 'data-small');
    const json = path.join(tmp, 'supervised.json');
    const r = await cli(['run', '--dataset', 'mvtec', '--root', data, '--method', 'spade', '--image-size', '64', '--setting', 'supervised', '--anomalies', '1', '--categories', 'disc', '--json', json]);
    expect(r.code).toBe(0);
    const [disc] = JSON.parse(fs.readFileSync(json, 'utf8')).results;
    expect(disc.category).toBe('disc');
    expect(disc.setting).toEqual({ name: 'supervised', anomalies: 1 });
    expect(disc.notes).toEqual([NOTE_IGNORES_LABELLED_ANOMALIES]);
    expect(disc.metrics.imageAUROC).toBeGreaterThanOrEqual(0);
    expect(r.stdout).toContain(`note: disc supervised-1: ${NOTE_IGNORES_LABELLED_ANOMALIES}`);
  }, 300000);
});

describe('few-shot augmented copies', () => {
  it('do not depend on where the dataset lies (the store key leaves the root out)', () => {
    const at = (root: string): Category => ({
      name: 'disc',
      root,
      samples: ['000', '001', '002'].map((s) => ({ path: path.join(root, 'train', 'good', `${s}.png`), maskPaths: [], label: 'normal' as const, defectType: 'good', split: 'train' as const })),
    });
    const seeds = (root: string): number[] => fewshotSplit(at(root), { shots: 2, seed: 3, augment: 'rotation', augmentCount: 2 }).train.flatMap((x) => (x.entry.augment ? [x.entry.augment.seed] : []));
    expect(seeds('/data/a/disc')).toEqual(seeds('/elsewhere/b/disc'));
    expect(new Set(seeds('/data/a/disc')).size).toBe(4);
  });
});

describe('one forgetting measure', () => {
  it('the gap-tolerant form equals the strict one on a full matrix', () => {
    const T = [[0.9], [0.8, 0.95], [0.7, 0.9, 0.99]];
    const strict = forgettingMeasure(T);
    const gaps = forgettingMeasureWithGaps(T);
    expect(gaps.perTask).toEqual(strict.perTask);
    expect(gaps.mean).toBe(strict.mean);
    expect(forgettingMeasureWithGaps([[0.9, null], [null, 0.8]])).toEqual({ perTask: [null], mean: null });
  });
});
