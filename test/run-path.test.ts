/**
 * One `imiad run` path for every setting (issue #23): --save then --load gives identical scores and metrics in each
 * of the five settings without fitting, every option that does not apply (or contradicts a loaded checkpoint) is
 * refused before anything runs, and run, grid and evaluate write one JSON schema (`--json [FILE]`).
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { resolveDevice } from '../bindings/device';
import { trainingAvailable } from '../bindings/train/train';
import { runCli } from './helpers/cli';
import { synthesize } from '../lib/datasets/synth';
import { readCheckpoint } from '../lib/methods/checkpoint';
import { RESULTS_SCHEMA, type ResultsJson } from '../lib/runner/schema';
import { METRIC_NAMES } from '../lib/runner/types';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-runpath-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const root = path.join(tmp, 'data');
beforeAll(async () => {
  await synthesize('mvtec', root, { seed: 6, categories: 2, size: 40, train: 4, test: 6 });
  // The once-per-process CPU fallback notice is printed here, not in the middle of a command's stderr.
  const quiet = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    resolveDevice('auto');
  } finally {
    quiet.mockRestore();
  }
});

const base = ['run', '--dataset', 'mvtec', '--root', root, '--image-size', '40'];
const readJson = (file: string): ResultsJson => JSON.parse(fs.readFileSync(file, 'utf8')) as ResultsJson;

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout;
}

/** The text of every file in `files` (relative names), for comparing the scores of two runs. */
function contents(dir: string, files: string[]): string[] {
  return files.map((f) => fs.readFileSync(path.join(dir, f), 'utf8'));
}

describe('--save then --load in every setting', () => {
  const settings: [string, string, string[]][] = [
    ['vanilla', 'padim', []],
    ['supervised', 'padim', ['--setting', 'supervised', '--anomalies', '1']],
    ['fewshot', 'padim', ['--setting', 'fewshot', '--shots', '2', '--augment', 'rotation', '--augment-count', '1']],
    ['noisy', 'patchcore', ['--setting', 'noisy', '--noise', '0.2']],
    ['continual', 'patchcore', ['--setting', 'continual']],
  ];
  test.each(settings)('%s (%s): identical scores and metrics, no fit', async (name, method, setting) => {
    const dir = path.join(tmp, `save-${name}`);
    const args = [...base, '--method', method, '--seed', '2', ...setting];
    await ok([...args, '--save', path.join(dir, 'm.imiad'), '--scores', path.join(dir, 'fit', 's.csv'), '--json', path.join(dir, 'fit.json')]);
    const table = await ok([...args, '--load', path.join(dir, 'm.imiad'), '--scores', path.join(dir, 'load', 's.csv'), '--json', path.join(dir, 'load.json')]);
    const fitted = readJson(path.join(dir, 'fit.json'));
    const loaded = readJson(path.join(dir, 'load.json'));
    expect(loaded.results.map((r) => r.metrics)).toEqual(fitted.results.map((r) => r.metrics));
    expect(loaded.results.map((r) => r.continual)).toEqual(fitted.results.map((r) => r.continual));
    // The loaded experiment is the one that saved the checkpoint: the same key, the same stored identity.
    expect(loaded.results.map((r) => r.key)).toEqual(fitted.results.map((r) => r.key));
    for (const r of loaded.results) {
      expect(r.efficiency!.fitMs).toBeUndefined();
      expect(r.efficiency!.loadMs).toBeGreaterThan(0);
    }
    for (const r of fitted.results) expect(r.efficiency!.fitMs).toBeGreaterThan(0);
    expect(table.split('\n')[2]).toMatch(/ loaded /);
    const scoreFiles = fs.readdirSync(path.join(dir, 'fit')).sort();
    expect(fs.readdirSync(path.join(dir, 'load')).sort()).toEqual(scoreFiles);
    expect(contents(path.join(dir, 'load'), scoreFiles)).toEqual(contents(path.join(dir, 'fit'), scoreFiles));
    if (name === 'continual') {
      // One checkpoint per task; scores of every task seen so far after each task.
      expect(fs.readdirSync(dir).filter((f) => f.endsWith('.imiad')).sort()).toEqual(['m.task1.imiad', 'm.task2.imiad']);
      expect(scoreFiles).toEqual(['s.task1.disc.csv', 's.task2.disc.csv', 's.task2.woven.csv']);
      const c = await readCheckpoint(path.join(dir, 'm.task2.imiad'));
      expect(c.run).toEqual({ dataset: 'mvtec', category: 'disc+woven', setting: { name: 'continual', order: null }, seed: 2, task: { index: 1, count: 2, category: 'woven' } });
      expect(fitted.results[0].files).toEqual({
        saved: ['m.task1.imiad', 'm.task2.imiad'].map((f) => path.join(dir, f)),
        scores: scoreFiles.map((f) => path.join(dir, 'fit', f)),
      });
    } else {
      // One checkpoint per category and setting variant.
      expect(fs.readdirSync(dir).filter((f) => f.endsWith('.imiad')).sort()).toEqual(['m.disc.imiad', 'm.woven.imiad']);
      expect(scoreFiles).toEqual(['s.disc.csv', 's.woven.csv']);
      const c = await readCheckpoint(path.join(dir, 'm.disc.imiad'));
      expect(c.run).toEqual({ dataset: 'mvtec', category: 'disc', setting: fitted.results[0].setting, seed: 2 });
      expect(c.params).toEqual({ seed: 2, imageSize: 40, cropSize: 40 });
    }
  });

  test('continual --maps: one folder per task, the official layout below it', async () => {
    const maps = path.join(tmp, 'continual-maps');
    await ok([...base, '--method', 'padim', '--setting', 'continual', '--maps', maps]);
    expect(fs.readdirSync(maps).sort()).toEqual(['task1', 'task2']);
    expect(fs.readdirSync(path.join(maps, 'task1'))).toEqual(['disc']);
    expect(fs.readdirSync(path.join(maps, 'task2')).sort()).toEqual(['disc', 'woven']);
    expect(fs.readdirSync(path.join(maps, 'task2', 'woven', 'test')).sort()).toEqual(fs.readdirSync(path.join(root, 'woven', 'test')).sort());
  });
});

const withAddon = trainingAvailable() ? test : test.skip;
if (!trainingAvailable()) process.stdout.write('test/run-path.test.ts: skipping the STPM case: the training addon is not built; run npm run build:train\n');

withAddon("STPM: the issue's two commands give identical metrics, the second trains nothing", async () => {
  const dir = path.join(tmp, 'stpm');
  const common = [...base, '--method', 'stpm', '--categories', 'disc', '--setting', 'supervised', '--anomalies', '1', '--seed', '1'];
  await ok([...common, '--epochs', '1', '--save', path.join(dir, 'm.imiad'), '--json', path.join(dir, 'a.json')]);
  await ok([...common, '--load', path.join(dir, 'm.imiad'), '--json', path.join(dir, 'b.json')]);
  const a = readJson(path.join(dir, 'a.json')).results[0];
  const b = readJson(path.join(dir, 'b.json')).results[0];
  expect(b.metrics).toEqual(a.metrics);
  expect(b.params).toEqual({ imageSize: 40, cropSize: 40, epochs: 1 });
  expect(a.efficiency!.trainImagesPerSecond).toBeGreaterThan(0);
  expect(b.efficiency!.trainImagesPerSecond).toBeUndefined();
  expect(b.efficiency!.fitMs).toBeUndefined();
  const other = await runCli([...common, '--load', path.join(dir, 'm.imiad'), '--epochs', '3']);
  expect(other.code).toBe(2);
  expect(other.stderr).toBe(`imiad: Checkpoint ${path.join(dir, 'm.imiad')} was fitted with epochs 1 but the command sets --epochs 3\n`);
});

withAddon('Ctrl-C stops the training cleanly: exit 130, "interrupted", nothing half-written', async () => {
  const save = path.join(tmp, 'interrupted', 'm.imiad');
  const cli = path.join(__dirname, '..', 'dist', 'lib', 'cli.js');
  const proc = spawn(process.execPath, [cli, ...base, '--method', 'stpm', '--categories', 'disc', '--epochs', '100000', '--save', save], {
    env: { ...process.env, IMIAD_PROGRESS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const training = new Promise<void>((resolve) => proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (/disc fit \[/.test(stderr)) resolve();
  }));
  const exit = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)));
  await training;
  proc.kill('SIGINT');
  expect(await exit).toBe(130);
  expect(stderr.endsWith('\nimiad: interrupted\n')).toBe(true);
  expect(stdout).toBe('');
  expect(fs.existsSync(path.dirname(save)) ? fs.readdirSync(path.dirname(save)) : []).toEqual([]);
});

describe('nothing silently ignored: refused before anything runs', () => {
  const SETTING_ARGS: Record<string, string[]> = {
    vanilla: [],
    supervised: ['--setting', 'supervised', '--anomalies', '1'],
    fewshot: ['--setting', 'fewshot', '--shots', '2'],
    noisy: ['--setting', 'noisy', '--noise', '0.2'],
    continual: ['--setting', 'continual'],
  };
  const OPTIONS: [string, string, string][] = [
    ['--anomalies', '1', 'supervised'],
    ['--shots', '2', 'fewshot'],
    ['--augment', 'flip', 'fewshot'],
    ['--augment-count', '2', 'fewshot'],
    ['--noise', '0.1', 'noisy'],
    ['--order', 'woven,disc', 'continual'],
  ];
  const pairs = OPTIONS.flatMap(([flag, value, owner]) => Object.keys(SETTING_ARGS).filter((s) => s !== owner).map((s) => [flag, value, owner, s] as const));

  test.each(pairs)('%s %s (a %s option) with the %s setting', async (flag, value, owner, setting) => {
    const save = path.join(tmp, 'refused', `${flag}-${setting}.imiad`);
    const r = await runCli([...base, '--method', 'padim', ...SETTING_ARGS[setting], flag, value, '--save', save]);
    expect(r).toEqual({ code: 2, stdout: '', stderr: `imiad: ${flag} applies to --setting ${owner}, not ${setting}\n` });
    expect(fs.existsSync(save)).toBe(false);
  });

  test('--augment-count without --augment', async () => {
    const r = await runCli([...base, '--method', 'padim', '--setting', 'fewshot', '--shots', '2', '--augment-count', '2']);
    expect(r).toEqual({ code: 2, stdout: '', stderr: 'imiad: --augment-count applies with --augment (the number of augmented copies per shot)\n' });
  });

  test.each(Object.keys(SETTING_ARGS))('--maps with DNE (image scores only) in the %s setting', async (setting) => {
    const maps = path.join(tmp, 'refused', `maps-${setting}`);
    const r = await runCli([...base, '--method', 'dne', ...SETTING_ARGS[setting], '--maps', maps]);
    expect(r).toEqual({ code: 2, stdout: '', stderr: 'imiad: --maps applies to methods with anomaly maps, not dne (it scores images only)\n' });
    expect(fs.existsSync(maps)).toBe(false);
  });

  test.each(Object.keys(SETTING_ARGS))('dataset options of other layouts and --save with --load in the %s setting', async (setting) => {
    const run = (...extra: string[]): ReturnType<typeof runCli> => runCli([...base, '--method', 'padim', ...SETTING_ARGS[setting], ...extra]);
    expect(await run('--split-file', path.join(tmp, 'split.json'))).toEqual({ code: 2, stdout: '', stderr: 'imiad: --split-file applies to --dataset mtd|folder (no official split), not mvtec\n' });
    expect(await run('--masks', 'masks')).toEqual({ code: 2, stdout: '', stderr: 'imiad: --masks applies to --dataset folder, not mvtec\n' });
    expect(await run('--save', 'a.imiad', '--load', 'b.imiad')).toEqual({
      code: 2,
      stdout: '',
      stderr: 'imiad: --save and --load together: a loaded detector is not fitted again, so there is nothing new to save (copy the checkpoint instead)\n',
    });
    expect(await run('--coreset', '0.5')).toEqual({ code: 2, stdout: '', stderr: 'imiad: --coreset applies to --method patchcore, not padim\n' });
  });

  test('--load: a checkpoint that contradicts the command is refused, naming both', async () => {
    const dir = path.join(tmp, 'contradict');
    const save = path.join(dir, 'm.imiad');
    await ok([...base, '--method', 'patchcore', '--categories', 'disc', '--setting', 'noisy', '--noise', '0.2', '--seed', '1', '--coreset', '0.2', '--save', save]);
    const load = (...args: string[]): ReturnType<typeof runCli> => runCli([...base, '--categories', 'disc', '--load', save, ...args]);
    const noisy = ['--setting', 'noisy', '--noise', '0.2', '--seed', '1'];
    const refused = (message: string) => ({ code: 2, stdout: '', stderr: `imiad: Checkpoint ${save} ${message}\n` });
    expect(await load('--method', 'padim', ...noisy)).toEqual(refused('holds a patchcore detector but --method is padim'));
    expect(await load('--method', 'patchcore', ...noisy, '--coreset', '0.5')).toEqual(refused('was fitted with coreset 0.2 but the command sets --coreset 0.5'));
    expect(await load('--method', 'patchcore', ...noisy, '--reweight', '2')).toEqual(refused("was fitted with patchcore's default reweight but the command sets --reweight 2; leave it out to use the checkpoint's"));
    expect(await load('--method', 'patchcore', ...noisy, '--image-size', '32')).toEqual(refused('was fitted with imageSize 40 but the command sets --image-size 32'));
    expect(await load('--method', 'patchcore', '--setting', 'noisy', '--noise', '0.1', '--seed', '1')).toEqual(refused('was fitted in the noisy-0.2 setting but the command runs noisy-0.1 (--setting and its options)'));
    expect(await load('--method', 'patchcore', '--seed', '1')).toEqual(refused('was fitted in the noisy-0.2 setting but the command runs vanilla (--setting and its options)'));
    expect(await load('--method', 'patchcore', '--setting', 'noisy', '--noise', '0.2')).toEqual(refused('was fitted with --seed 1 but the command has --seed 0 (the split depends on it)'));
    const woven = await runCli([...base, '--categories', 'woven', '--load', save, '--method', 'patchcore', ...noisy]);
    expect(woven).toEqual(refused('was fitted on mvtec/disc but this experiment is mvtec/woven'));
    // The checkpoint's parameters are the run's; --batch-size only batches the work and may differ.
    const same = await ok([...base, '--categories', 'disc', '--load', save, '--method', 'patchcore', ...noisy, '--batch-size', '2', '--json']);
    expect(JSON.parse(same).results[0].params).toEqual({ imageSize: 40, cropSize: 40, coreset: 0.2, batchSize: 2 });
    const missing = await load('--method', 'patchcore', '--setting', 'continual');
    expect(missing).toEqual({ code: 2, stdout: '', stderr: `imiad: Cannot read the checkpoint ${path.join(dir, 'm.task1.imiad')}: ENOENT: no such file or directory, open '${path.join(dir, 'm.task1.imiad')}'\n` });
  });

  test('--store with --save, --scores or --maps: an experiment the store holds would not run, so it is refused', async () => {
    const db = path.join(tmp, 'store', 'r.db');
    await ok([...base, '--method', 'padim', '--categories', 'disc', '--store', db]);
    const r = await runCli([...base, '--method', 'padim', '--categories', 'disc', '--store', db, '--scores', path.join(tmp, 'store', 's.csv')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`imiad: --scores writes its files while an experiment runs, but the store ${db} already holds mvtec/disc padim {"imageSize":40,"cropSize":40} vanilla seed 0, which would not run again; use another --store or leave --store out\n`);
    expect(fs.existsSync(path.join(tmp, 'store', 's.csv'))).toBe(false);
  });
});

describe('one JSON schema, --json [FILE]', () => {
  test('run --json without FILE prints the JSON alone; with and without --setting the same fields and metric names', async () => {
    const plain = JSON.parse(await ok([...base, '--method', 'padim', '--categories', 'disc', '--json'])) as ResultsJson;
    const supervised = JSON.parse(await ok([...base, '--method', 'padim', '--categories', 'disc', '--setting', 'supervised', '--anomalies', '1', '--json', '-'])) as ResultsJson;
    expect(plain.schema).toBe(RESULTS_SCHEMA);
    expect(plain.command).toBe('run');
    for (const doc of [plain, supervised]) {
      expect(Object.keys(doc.results[0])).toEqual(['key', 'dataset', 'category', 'method', 'params', 'setting', 'seed', 'metrics', 'efficiency', 'continual', 'notes']);
      expect(Object.keys(doc.results[0].metrics)).toEqual([...METRIC_NAMES]);
    }
    expect(plain.results[0].setting).toEqual({ name: 'vanilla' });
    expect(supervised.results[0].setting).toEqual({ name: 'supervised', anomalies: 1 });
    expect(Object.keys(plain.results[0].efficiency!).sort()).toEqual(Object.keys(supervised.results[0].efficiency!).sort());
  });

  test('evaluate writes the same metric names and shapes as run (AU-PRO@0.3 as pixelPRO, other limits beside it)', async () => {
    const dir = path.join(tmp, 'schema');
    await ok([...base, '--method', 'patchcore', '--categories', 'disc', '--maps', path.join(dir, 'maps'), '--json', path.join(dir, 'run.json')]);
    const ev = JSON.parse(await ok(['evaluate', '--dataset', 'mvtec', '--root', root, '--maps', path.join(dir, 'maps'), '--categories', 'disc', '--pro-limit', '0.05', '--json'])) as ResultsJson;
    const run = readJson(path.join(dir, 'run.json')).results[0];
    expect(ev.command).toBe('evaluate');
    expect(Object.keys(ev.results[0])).toEqual(['key', 'dataset', 'category', 'method', 'params', 'setting', 'seed', 'metrics', 'efficiency', 'continual', 'notes', 'files']);
    expect(Object.keys(ev.results[0].metrics)).toEqual([...METRIC_NAMES, 'pixelPRO@0.05']);
    for (const m of ['pixelAUROC', 'pixelAP', 'pixelPRO', 'pixelF1Max']) expect(ev.results[0].metrics[m]).toBeCloseTo(run.metrics[m] as number, 10);
    expect(typeof ev.results[0].metrics['pixelPRO@0.05']).toBe('number');
  });

  test('grid prints the metrics table of its experiments and writes the schema', async () => {
    const grid = path.join(tmp, 'grid.yaml');
    fs.writeFileSync(grid, `store: grid.db\ndatasets:\n  - { name: mvtec, root: ${JSON.stringify(root)}, categories: [disc] }\nmethods:\n  - { name: padim, params: { imageSize: 40, cropSize: 40 } }\n  - { name: dne, params: { imageSize: 40, cropSize: 40 } }\nsettings: [vanilla]\n`);
    const out = await ok(['grid', grid, '--json', path.join(tmp, 'grid.json')]);
    const lines = out.split('\n');
    expect(lines[0]).toMatch(/^category\s+method\s+image AUROC\s+image AP\s+pixel AUROC\s+pixel AP\s+AU-PRO@0.3\s+fit s/);
    expect(lines[2]).toMatch(/^disc\s+padim\s+\d\.\d{4}/);
    expect(lines[3]).toMatch(/^disc\s+dne\s+\d\.\d{4}\s+\d\.\d{4}\s+-\s+-\s+-/);
    expect(out).toContain('2 experiments run, 0 already stored, 0 failed');
    expect(out).toContain(`JSON written to ${path.join(tmp, 'grid.json')}`);
    const doc = readJson(path.join(tmp, 'grid.json'));
    expect(doc.command).toBe('grid');
    expect(doc.summary).toMatchObject({ done: 2, skipped: 0, failed: [] });
    expect(doc.results.map((r) => r.method)).toEqual(['padim', 'dne']);
    expect(Object.keys(doc.results[0].metrics)).toEqual([...METRIC_NAMES]);
  });

  test('splits, datasets inspect and synth take --json [FILE] the same way', async () => {
    const manifest = JSON.parse(await ok(['splits', '--dataset', 'mvtec', '--root', root, '--setting', 'fewshot', '--shots', '1', '--json']));
    expect(Object.keys(manifest)).toEqual(['disc', 'woven']);
    const file = path.join(tmp, 'inspect.json');
    const text = await ok(['datasets', 'inspect', '--dataset', 'mvtec', '--root', root, '--json', file]);
    expect(text).toContain(`JSON written to ${file}`);
    expect(text).toMatch(/^category/m);
    expect(JSON.parse(await ok(['datasets', 'inspect', '--dataset', 'mvtec', '--root', root, '--json']))).toEqual(readJsonAny(file));
    const refused = await runCli(['splits', '--dataset', 'mvtec', '--root', root, '--shots', '1']);
    expect(refused).toEqual({ code: 2, stdout: '', stderr: 'imiad: --shots applies to --setting fewshot, not vanilla\n' });
  });
});

function readJsonAny(file: string): unknown {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}
