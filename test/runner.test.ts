import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { gridConfig, parseGridConfig } from '../lib/runner/config';
import { expandGrid, runGrid, type CategoryLoader } from '../lib/runner/grid';
import { canonicalJson, experimentKey } from '../lib/runner/key';
import { metricsFromEvaluation, metricsFromLocoEvaluation } from '../lib/runner/metrics';
import { ResultsStore } from '../lib/runner/store';
import type { ExperimentConfig, ExperimentExecutor } from '../lib/runner/types';
import { settingSpec } from '../lib/settings';
import { makeCategory } from './helpers/categories';
import { fakeMetrics } from './fixtures/fake-executor';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-runner-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const categories = ['bottle', 'cable', 'screw'].map((n) => makeCategory(n, { train: 12, testGood: 5, defects: { a: 8, b: 8 } }));
const loader: CategoryLoader = async (_name, _root, opts) => (opts.categories ? categories.filter((c) => opts.categories!.includes(c.name)) : categories);
const fake: ExperimentExecutor = async (exp) => ({ metrics: fakeMetrics(exp.key), efficiency: { inferenceMsPerImage: 2, memoryBytes: 100 } });

const config: ExperimentConfig = { dataset: 'mvtec', category: 'bottle', method: 'patchcore', params: { coreset: 0.1, layers: ['layer2', 'layer3'] }, setting: settingSpec('vanilla'), seed: 0 };

describe('experiment key', () => {
  test('independent of key order, dependent on every field and the code version', () => {
    const reordered = { seed: 0, setting: { name: 'vanilla' }, params: { layers: ['layer2', 'layer3'], coreset: 0.1 }, method: 'patchcore', category: 'bottle', dataset: 'mvtec' } as ExperimentConfig;
    expect(canonicalJson(reordered)).toBe(canonicalJson(config));
    expect(experimentKey(reordered, '1.0.0')).toBe(experimentKey(config, '1.0.0'));
    expect(experimentKey(config, '1.0.1')).not.toBe(experimentKey(config, '1.0.0'));
    expect(experimentKey({ ...config, seed: 1 }, '1.0.0')).not.toBe(experimentKey(config, '1.0.0'));
    expect(experimentKey({ ...config, params: { coreset: 0.01, layers: ['layer2', 'layer3'] } }, '1.0.0')).not.toBe(experimentKey(config, '1.0.0'));
    expect(experimentKey(config, '1.0.0')).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('grid file', () => {
  test('YAML: lists under a method grid and setting options are swept', async () => {
    const yaml = `
store: out/results.db
concurrency: 2
datasets:
  - { name: mvtec, root: data, categories: [bottle, screw] }
methods:
  - name: patchcore
    params: { layers: [layer2, layer3] }
    grid: { coreset: [0.01, 0.1] }
  - padim
settings:
  - vanilla
  - { name: fewshot, shots: [1, 2, 4, 8], augment: [null, rotation] }
  - { name: noisy, noise: [0.05, 0.1] }
  - { name: continual, order: [screw, bottle] }
seeds: [0, 1]
`;
    const grid = parseGridConfig(yaml, '/cfg/grid.yaml');
    expect(grid.store).toBe('/cfg/out/results.db');
    expect(grid.datasets[0].root).toBe('/cfg/data');
    expect(grid.settings).toHaveLength(1 + 8 + 2 + 1);
    expect(grid.settings[2]).toEqual({ name: 'fewshot', shots: 1, augment: 'rotation', augmentCount: 4 });
    expect(grid.settings[11]).toEqual({ name: 'continual', order: ['screw', 'bottle'], joint: false });
    const { experiments, invalid } = await expandGrid(grid, loader, (k) => `/h/${k}`);
    // 3 method variants x 2 seeds x (11 per-category settings x 2 categories + 1 continual).
    expect(experiments).toHaveLength(3 * 2 * (11 * 2 + 1));
    expect(invalid).toEqual([]);
    expect(new Set(experiments.map((e) => e.key)).size).toBe(experiments.length);
    const continual = experiments.find((e) => e.config.setting.name === 'continual')!;
    expect(continual.config.category).toBe('screw+bottle');
    expect(continual.tasks!.map((t) => t.category)).toEqual(['screw', 'bottle']);
    expect(experiments[0].config.params).toEqual({ layers: ['layer2', 'layer3'], coreset: 0.01 });
  });
  test('a grid built in code', () => {
    const grid = gridConfig({ datasets: [{ name: 'mvtec', root: 'synth' }], methods: ['patchcore'], settings: [{ name: 'noisy', noise: [0.1, 0.2] }] }, '/demo');
    expect(grid.datasets[0].root).toBe('/demo/synth');
    expect(grid.settings).toEqual([{ name: 'noisy', noise: 0.1 }, { name: 'noisy', noise: 0.2 }]);
    expect(grid.seeds).toEqual([0]);
    expect(grid.concurrency).toBe(1);
    expect(() => gridConfig([], '/demo')).toThrow('Grid file <inline grid>: expected an object with datasets, methods and settings');
  });
  test('errors name the file', () => {
    expect(() => parseGridConfig('{"datasets": []}', 'g.json')).toThrow("Grid file g.json: 'datasets' must be a non-empty list");
    expect(() => parseGridConfig('{"datasets":[{"name":"mvtec","root":"."}],"methods":["x"],"settings":[{"name":"noisy","ratio":0.1}]}', 'g.json')).toThrow(
      "Grid file g.json: settings[0] has an unknown option 'ratio'",
    );
  });
  test('an impossible split is reported, not run', async () => {
    const grid = parseGridConfig(JSON.stringify({ datasets: [{ name: 'mvtec', root: '/d' }], methods: ['m'], settings: [{ name: 'supervised', anomalies: 16 }] }), 'g.json');
    const { experiments, invalid } = await expandGrid(grid, loader, (k) => k);
    expect(experiments).toEqual([]);
    expect(invalid.map((i) => i.reason)).toEqual(
      categories.map((c) => `Category ${c.name} (/data/${c.name}) has 16 anomalous test images, 16 with masks: cannot move 16 into training and keep at least one for testing`),
    );
  });
});

describe('results store and grid run', () => {
  test('insert-or-ignore, skips what is stored, records failures without rows, continual matrix with FM', async () => {
    const file = path.join(tmp, 'store1', 'results.db');
    const store = new ResultsStore(file);
    const grid = parseGridConfig(JSON.stringify({ datasets: [{ name: 'mvtec', root: '/d' }], methods: ['patchcore', 'broken'], settings: ['vanilla', 'continual'] }), 'g.json');
    const { experiments } = await expandGrid(grid, loader, (k) => store.heatmapDir(k));
    expect(experiments).toHaveLength(2 * (3 + 1));
    const executor: ExperimentExecutor = async (exp) => {
      if (exp.config.method === 'broken') throw new Error('no such detector');
      if (exp.tasks) {
        const m = [[0.9, null, null], [0.8, 0.95, null], [0.7, 0.9, 0.99]];
        return { metrics: {}, efficiency: { inferenceMsPerImage: 1, memoryBytes: 1 }, continual: { tasks: exp.tasks.map((t) => t.category), matrix: { imageAUROC: m } } };
      }
      return fake(exp, { signal: new AbortController().signal });
    };
    const first = await runGrid(experiments.slice(0, 3), store, executor);
    expect(first).toEqual({ skipped: 0, done: 3, failed: [], notRun: 0, aborted: false });
    const second = await runGrid(experiments, store, executor);
    expect(second.skipped).toBe(3);
    expect(second.done).toBe(1);
    expect(second.failed.map((f) => [f.experiment, f.error])).toEqual([
      ['mvtec/bottle broken vanilla seed 0', 'no such detector'],
      ['mvtec/cable broken vanilla seed 0', 'no such detector'],
      ['mvtec/screw broken vanilla seed 0', 'no such detector'],
      ['mvtec/bottle+cable+screw broken continual seed 0', 'no such detector'],
    ]);
    expect(store.count()).toBe(4);
    const rows = store.rows();
    const cont = rows.find((r) => r.config.setting.name === 'continual')!;
    expect(cont.continual!.forgetting.imageAUROC).toBeCloseTo((0.2 + 0.05) / 2, 12);
    expect(cont.metrics.imageAUROC).toBeCloseTo((0.7 + 0.9 + 0.99) / 3, 12);
    expect(Array.isArray(cont.manifest)).toBe(true);
    const van = rows.find((r) => r.config.category === 'cable')!;
    expect(van.metrics).toEqual(fakeMetrics(van.key));
    expect((van.manifest as Record<string, { train: unknown[] }>).cable.train).toHaveLength(12);
    expect(van.machine.cores).toBe(os.cpus().length);
    expect(store.insert(van)).toBe(false);
    expect(store.count()).toBe(4);
    store.close();
  });

  const child = path.join(__dirname, 'fixtures', 'grid-child.js');
  function startChild(file: string, sleepMs: number, concurrency: number): { proc: ChildProcess; lines: string[]; exit: Promise<number | null> } {
    const proc = spawn(process.execPath, [child, file, String(sleepMs), String(concurrency)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let buf = '';
    let err = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      lines.push(...parts);
    });
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exit = new Promise<number | null>((resolve) => proc.on('close', (code) => {
      if (err) process.stderr.write(err);
      resolve(code);
    }));
    return { proc, lines, exit };
  }
  async function until(cond: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < 600; i++) {
      if (cond()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  test('resume after kill -9: no lost or duplicated rows', async () => {
    const file = path.join(tmp, 'kill', 'results.db');
    const first = startChild(file, 300, 2);
    await until(() => first.lines.filter((l) => l.startsWith('finished')).length >= 4, 'four finished experiments');
    first.proc.kill('SIGKILL');
    expect(await first.exit).toBeNull();
    const printed = first.lines.filter((l) => l.startsWith('finished')).map((l) => l.split(' ')[1]);
    const afterKill = new ResultsStore(file, { readonly: true });
    const rowsAfterKill = afterKill.rows();
    afterKill.close();
    // Every experiment reported finished is stored (a row may also be committed just before the kill, unreported).
    expect(rowsAfterKill.length).toBeGreaterThanOrEqual(printed.length);
    expect(rowsAfterKill.length).toBeLessThan(12);
    for (const key of printed) expect(rowsAfterKill.some((r) => r.key === key)).toBe(true);

    const second = startChild(file, 10, 2);
    expect(await second.exit).toBe(0);
    const summary = JSON.parse(second.lines.find((l) => l.startsWith('summary'))!.slice(8));
    expect(summary).toEqual({ skipped: rowsAfterKill.length, done: 12 - rowsAfterKill.length, failed: [], notRun: 0, aborted: false });
    const store = new ResultsStore(file);
    const rows = store.rows();
    expect(rows).toHaveLength(12);
    expect(new Set(rows.map((r) => r.key)).size).toBe(12);
    expect(rows.map((r) => r.config.category).sort()).toEqual(Array.from({ length: 12 }, (_, i) => `cat${String(i).padStart(2, '0')}`));
    for (const r of rows) expect(r.metrics).toEqual(fakeMetrics(r.key));
    // The rows written before the kill are untouched by the resumed run.
    for (const before of rowsAfterKill) expect(rows.find((r) => r.key === before.key)!.finishedAt).toBe(before.finishedAt);
    store.close();
  });

  test('Ctrl-C stops cleanly after recording finished rows', async () => {
    const file = path.join(tmp, 'sigint', 'results.db');
    const run = startChild(file, 300, 1);
    await until(() => run.lines.filter((l) => l.startsWith('finished')).length >= 2, 'two finished experiments');
    run.proc.kill('SIGINT');
    expect(await run.exit).toBe(0);
    const summary = JSON.parse(run.lines.find((l) => l.startsWith('summary'))!.slice(8));
    expect(summary.aborted).toBe(true);
    expect(summary.done + summary.notRun).toBe(12);
    const store = new ResultsStore(file, { readonly: true });
    expect(store.count()).toBe(summary.done);
    store.close();
  });
});

describe('metric names', () => {
  test('from the evaluation JSON shapes to the stored names', () => {
    const e = { image_auroc: 0.9, image_ap: 0.95, pixel_auroc: 0.97, pixel_ap: 0.5, aupro: { '0.3': 0.88, '0.05': 0.4 }, f1_max: 0.91, details: { pixel_f1_max: 0.55 } };
    // The reported limit under the flat name, any other limit beside it as <name>@<limit>.
    expect(metricsFromEvaluation(e)).toEqual({ imageAUROC: 0.9, imageAP: 0.95, imageF1Max: 0.91, pixelAUROC: 0.97, pixelAP: 0.5, pixelPRO: 0.88, pixelF1Max: 0.55, 'pixelPRO@0.05': 0.4 });
    const loco = {
      localization: { logical_anomalies: { '0.05': 0.3, '0.3': 0.6 }, structural_anomalies: { '0.05': 0.5, '0.3': 0.7 }, mean: { '0.05': 0.4, '0.3': 0.65 } },
      classification: { logical_anomalies: 0.7, structural_anomalies: 0.8, mean: 0.75 },
    };
    expect(metricsFromLocoEvaluation(loco, e)).toEqual({
      imageAUROC: 0.9, imageAP: 0.95, imageF1Max: 0.91, pixelAUROC: 0.97, pixelAP: 0.5, pixelPRO: null, pixelF1Max: 0.55, 'pixelPRO@0.05': 0.4,
      imageAUROCLogical: 0.7, imageAUROCStructural: 0.8, sPROLogical: 0.3, sPROStructural: 0.5, sPRO: 0.4,
      'sPROLogical@0.3': 0.6, 'sPROStructural@0.3': 0.7, 'sPRO@0.3': 0.65,
    });
  });
});
