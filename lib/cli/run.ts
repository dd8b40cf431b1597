/**
 * `imiad run`: fit a detector on each category's training images and evaluate it on the test images at the
 * original resolution (vanilla setting). Prints a table; --json OUT writes { "<category>": { metrics...,
 * efficiency } }; --maps writes float32 TIFF maps in the official layout; --scores writes image,label,score rows.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Command } from 'commander';

import { imiadError, invalidType } from '../../bindings/errors';
import { BACKBONE_SHAPES, type BackboneShape } from '../backbone/builder';
import { loadDataset, requireDatasetName } from '../datasets';
import type { Category, DatasetName, FolderLayout } from '../datasets/types';
import { findMethod, METHOD_NAMES, METHODS } from '../methods';
import { settingLabel } from '../settings';
import { gridConfig } from '../runner/config';
import { createExecutor } from '../runner/executor';
import { type ExperimentResult, runExperiment } from '../runner/experiment';
import { describeExperiment, expandGrid, resultRow, runGrid } from '../runner/grid';
import { abortOnInterrupt } from '../runner/interrupt';
import { machineDescription, ResultsStore } from '../runner/store';
import type { ResultRow } from '../runner/types';
import { action } from './action';
import { progress, type Progress } from './progress';
import { addSettingOptions, settingFromFlags, type SettingFlags } from './setting-options';

export interface RunCommandOptions extends SettingFlags {
  dataset: string;
  root: string;
  method: string;
  categories?: string;
  backbone?: string;
  backboneShape?: string;
  layers?: string;
  imageSize?: string;
  crop?: string;
  coreset?: string;
  reweight?: string;
  seed?: string;
  store?: string;
  maps?: string;
  scores?: string;
  json?: string;
  splitFile?: string;
  normal?: string;
  anomaly?: string;
  masks?: string;
  testNormal?: string;
  epochs?: string;
  batchSize?: string;
  lr?: string;
  device?: string;
  save?: string;
  load?: string;
}

export type RunResults = Record<string, ExperimentResult['metrics'] & { efficiency: ExperimentResult['efficiency'] }>;

function parseNumber(text: string | undefined, name: string, check: (v: number) => boolean, expected: string): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || !check(v)) throw invalidType(expected, name, text);
  return v;
}

/** The detector parameters the command line sets (only those given). */
export function runParams(opts: RunCommandOptions): Record<string, unknown> {
  const params: Record<string, unknown> = {};
  if (opts.backbone !== undefined) {
    if (!fs.existsSync(opts.backbone)) throw imiadError('Error', 'ERR_IMIAD_FILE', `Backbone file ${opts.backbone} does not exist`);
    params.backbone = opts.backbone;
  }
  if (opts.backboneShape !== undefined) {
    if (!BACKBONE_SHAPES.includes(opts.backboneShape as BackboneShape)) throw invalidType(`one of ${BACKBONE_SHAPES.join(', ')}`, '--backbone-shape', opts.backboneShape);
    params.backboneShape = opts.backboneShape;
  }
  if (opts.layers !== undefined) {
    const layers = opts.layers.split(',').map((l) => l.trim()).filter((l) => l.length > 0);
    if (layers.length === 0) throw invalidType('comma-separated layer names', '--layers', opts.layers);
    params.layers = layers;
  }
  const int = (v: number): boolean => Number.isInteger(v);
  const imageSize = parseNumber(opts.imageSize, '--image-size', (v) => int(v) && v >= 1 && v <= 16384, 'integer between 1 and 16384');
  if (imageSize !== undefined) params.imageSize = imageSize;
  const crop = parseNumber(opts.crop, '--crop', (v) => int(v) && v >= 1 && v <= (imageSize ?? 256), `integer between 1 and the image size (${imageSize ?? 256})`);
  if (crop !== undefined) params.cropSize = crop;
  else if (imageSize !== undefined && imageSize < 224) params.cropSize = imageSize;
  // Method-specific options (the registry's `options`): refused, naming the methods that take them, elsewhere.
  const methodOption = (flag: string, value: number | string | undefined): void => {
    if (value === undefined) return;
    const option = findMethod(opts.method)?.options.find((o) => o.flag === flag);
    if (option === undefined) {
      const takers = METHODS.filter((m) => m.options.some((o) => o.flag === flag));
      const names = takers.map((m) => m.name);
      const whom = takers.every((m) => m.trained) && takers.length === METHODS.filter((m) => m.trained).length
        ? `the trained methods (${names.join(', ')})`
        : `--method ${names.join('|')}`;
      throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', `--${flag} applies to ${whom}, not ${opts.method}`);
    }
    params[option.param] = value;
  };
  methodOption('coreset', parseNumber(opts.coreset, '--coreset', (v) => v > 0 && v <= 1, 'number in (0, 1]'));
  methodOption('reweight', parseNumber(opts.reweight, '--reweight', (v) => int(v) && v >= 1 && v <= 1024, 'integer between 1 and 1024'));
  methodOption('epochs', parseNumber(opts.epochs, '--epochs', (v) => int(v) && v >= 1 && v <= 1_000_000, 'integer between 1 and 1000000'));
  methodOption('lr', parseNumber(opts.lr, '--lr', (v) => v > 0, 'positive number'));
  if (opts.device !== undefined && !['auto', 'cpu', 'cuda'].includes(opts.device)) throw invalidType("'auto', 'cpu' or 'cuda'", '--device', opts.device);
  methodOption('device', opts.device);
  const batchSize = parseNumber(opts.batchSize, '--batch-size', (v) => int(v) && v >= 1 && v <= 4096, 'integer between 1 and 4096');
  if (batchSize !== undefined) params.batchSize = batchSize;
  return params;
}

/**
 * `--setting` or `--store`: the requested categories as one grid through the grid's executor (the setting's splits,
 * training samples and metrics as `imiad grid` stores them). With `--store` the rows are written there (a stored
 * experiment is not run again, its row is shown); without, the rows are only returned.
 */
export async function runSetting(opts: RunCommandOptions): Promise<ResultRow[]> {
  const dataset = requireDatasetName(opts.dataset);
  if (!(METHOD_NAMES as readonly string[]).includes(opts.method)) throw invalidType(`one of ${METHOD_NAMES.join(', ')}`, '--method', opts.method);
  parseNumber(opts.seed, '--seed', (v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff, 'integer between 0 and 4294967295');
  const { spec, seed } = settingFromFlags(opts);
  if (!fs.existsSync(opts.root) || !fs.statSync(opts.root).isDirectory()) throw imiadError('Error', 'ERR_IMIAD_FILE', `Dataset root ${opts.root} is not a folder`);
  if (opts.maps || opts.scores) throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', '--maps and --scores apply to the plain vanilla run (without --setting and --store)');
  const names = opts.categories?.split(',').map((c) => c.trim()).filter((c) => c.length > 0);
  let folder: FolderLayout | undefined;
  if (dataset === 'folder') {
    if (!opts.normal || !opts.anomaly) throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', 'The folder layout needs --normal DIR and --anomaly DIR');
    folder = { normal: opts.normal, anomaly: opts.anomaly, masks: opts.masks, testNormal: opts.testNormal };
  }
  const config = gridConfig({
    datasets: [{ name: dataset, root: path.resolve(opts.root), ...(names && names.length ? { categories: names } : {}) }],
    methods: [{ name: opts.method, params: runParams(opts) }],
    settings: [spec],
    seeds: [seed],
  });
  config.settings = [spec];
  const store = opts.store ? new ResultsStore(opts.store) : null;
  const scratch = store ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-run-'));
  try {
    const loadCategories = (name: DatasetName, root: string, o: { categories?: string[] }): Promise<Category[]> => loadDataset(name, root, { ...o, seed, splitFile: opts.splitFile, folder });
    const { experiments, invalid } = await expandGrid(
      config,
      loadCategories,
      (key) => (store ? store.heatmapDir(key) : path.join(scratch!, 'heatmaps', key)),
    );
    if (invalid.length) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', invalid.map((b) => `${describeExperiment(b.config)}: ${b.reason}`).join('\n'));
    let stage = '';
    let bar: Progress | null = null;
    const executor = createExecutor({
      heatmaps: store !== null,
      loadCategories,
      onStage: (e, s, done, total) => {
        if (s === 'evaluate' || s.endsWith(' evaluate')) return;
        const label = `${e.config.category} ${s}`;
        if (label !== stage) {
          bar?.done();
          stage = label;
          bar = progress(label, total);
        }
        bar?.update(done, total);
      },
    });
    if (store) {
      const interrupt = abortOnInterrupt();
      const summary = await runGrid(experiments, store, executor, { signal: interrupt.signal });
      interrupt.dispose();
      (bar as Progress | null)?.done();
      if (summary.failed.length) throw imiadError('Error', 'ERR_IMIAD_RUN', summary.failed.map((f) => `${f.experiment}: ${f.error}`).join('\n'));
      const byKey = new Map(store.rows().map((r) => [r.key, r]));
      return experiments.map((e) => byKey.get(e.key)).filter((r): r is ResultRow => r !== undefined);
    }
    const machine = machineDescription();
    const rows: ResultRow[] = [];
    for (const e of experiments) {
      const started = new Date();
      const result = await executor(e, { signal: new AbortController().signal });
      rows.push(resultRow(e, result, started, new Date(), machine));
    }
    (bar as Progress | null)?.done();
    return rows;
  } finally {
    store?.close();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** The readable table of `imiad run --setting`: one line per stored row, the store's metric names. */
export function formatSettingRows(rows: ResultRow[]): string {
  const metricCols = ['imageAUROC', 'imageAP', 'pixelAUROC', 'pixelAP', 'pixelPRO'];
  if (rows.some((r) => r.config.dataset === 'loco')) metricCols.push('sPRO');
  const continual = rows.some((r) => r.continual);
  const header = ['category', 'setting', ...metricCols, ...(continual ? ['FM imageAUROC'] : []), 'ms/image', 'state MB', 'notes'];
  const body = rows.map((r) => [
    r.config.category,
    settingLabel(r.config.setting),
    ...metricCols.map((m) => fmt(r.metrics[m])),
    ...(continual ? [fmt(r.continual?.forgetting.imageAUROC)] : []),
    r.efficiency.inferenceMsPerImage.toFixed(1),
    (r.efficiency.memoryBytes / 1e6).toFixed(1),
    r.notes.join('; '),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 || i === cells.length - 1 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/** Runs every requested category and returns { category: metrics + efficiency }; progress bars on stderr. */
export async function runRun(opts: RunCommandOptions, signal?: AbortSignal): Promise<RunResults> {
  const dataset = requireDatasetName(opts.dataset);
  if (!(METHOD_NAMES as readonly string[]).includes(opts.method)) throw invalidType(`one of ${METHOD_NAMES.join(', ')}`, '--method', opts.method);
  const seed = parseNumber(opts.seed, '--seed', (v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff, 'integer between 0 and 4294967295') ?? 0;
  if (!fs.existsSync(opts.root) || !fs.statSync(opts.root).isDirectory()) throw imiadError('Error', 'ERR_IMIAD_FILE', `Dataset root ${opts.root} is not a folder`);
  const params = runParams(opts);
  const names = opts.categories
    ?.split(',')
    .map((c) => c.trim())
    .filter((c) => c.length > 0);
  let folder: FolderLayout | undefined;
  if (dataset === 'folder') {
    if (!opts.normal || !opts.anomaly) throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', 'The folder layout needs --normal DIR and --anomaly DIR');
    folder = { normal: opts.normal, anomaly: opts.anomaly, masks: opts.masks, testNormal: opts.testNormal };
  }
  const categories = await loadDataset(dataset, opts.root, { categories: names && names.length > 0 ? names : undefined, seed, splitFile: opts.splitFile, folder });
  const results: RunResults = {};
  for (const category of categories) {
    let bar: Progress | null = null;
    let stage = '';
    const scoresCsv = opts.scores && categories.length > 1 ? opts.scores.replace(/(\.csv)?$/i, `.${category.name}$1`) : opts.scores;
    // One checkpoint per category: FILE.<category>.imiad when several categories run.
    const perCategory = (file: string | undefined): string | undefined =>
      file && categories.length > 1 ? file.replace(/(\.imiad)?$/i, `.${category.name}$1`) : file;
    const r = await runExperiment({
      dataset,
      root: opts.root,
      category,
      method: opts.method,
      params,
      seed,
      mapsDir: opts.maps,
      scoresCsv,
      signal,
      saveCheckpoint: perCategory(opts.save),
      loadCheckpoint: perCategory(opts.load),
      onProgress: (s, done, total, detail) => {
        if (s === 'evaluate') return;
        if (s !== stage) {
          bar?.done();
          stage = s;
          bar = progress(`${category.name} ${s}`, total);
        }
        bar?.update(done, total, detail);
      },
    });
    (bar as Progress | null)?.done();
    results[category.name] = { ...r.metrics, efficiency: r.efficiency };
  }
  return results;
}

const fmt = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : Number.isFinite(v) ? v.toFixed(4) : String(v));

/** The readable table of `imiad run`. */
export function formatRunResults(results: RunResults): string {
  const names = Object.keys(results);
  const loco = names.some((n) => results[n].spro !== undefined);
  const cols: [string, (r: RunResults[string]) => string][] = [
    ['image AUROC', (r) => fmt(r.image_auroc)],
    ['image AP', (r) => fmt(r.image_ap)],
    ['pixel AUROC', (r) => fmt(r.pixel_auroc)],
    ['pixel AP', (r) => fmt(r.pixel_ap)],
    ['AU-PRO@0.3', (r) => fmt(r.aupro)],
  ];
  if (loco) cols.push(['AU-sPRO@0.05', (r) => fmt(r.spro ? r.spro.mean['0.05'] : null)]);
  cols.push(
    ['fit s', (r) => r.efficiency.fit_seconds.toFixed(1)],
    ['backbone ms p50', (r) => r.efficiency.backbone_ms_per_image.p50.toFixed(1)],
    ['method ms p50/p95', (r) => `${r.efficiency.method_ms_per_image.p50.toFixed(1)}/${r.efficiency.method_ms_per_image.p95.toFixed(1)}`],
    ['state MB', (r) => (r.efficiency.state_bytes / 1e6).toFixed(1)],
  );
  if (names.some((n) => results[n].efficiency.train_images_per_second !== undefined)) {
    cols.push(['train img/s', (r) => fmt(r.efficiency.train_images_per_second).replace(/(\.\d)\d+$/, '$1')]);
  }
  const header = ['category', ...cols.map(([h]) => h)];
  const rows = names.map((n) => [n, ...cols.map(([, f]) => f(results[n]))]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** JSON without NaN (written as null). */
export function resultsJson(results: RunResults): string {
  return `${JSON.stringify(results, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`;
}

export function registerRun(program: Command): void {
  const cmd = program
    .command('run')
    .description('Fit a detector on each category and evaluate it at the original resolution (vanilla, or --setting S)')
    .requiredOption('--dataset <name>', 'dataset layout: mvtec|mpdd|loco|btad|mtd|visa|dagm|folder')
    .requiredOption('--root <dir>', 'the dataset root')
    .requiredOption('--method <name>', `detector: ${METHOD_NAMES.join('|')} (trained: ${METHODS.filter((m) => m.trained).map((m) => m.name).join(', ')})`)
    .option('--categories <list>', 'comma-separated categories (default: all)')
    .option('--backbone <file>', 'an ONNX backbone (default: imiad\'s seeded ResNet-18-shaped backbone)')
    .option('--backbone-shape <shape>', `shape of the default backbone: ${BACKBONE_SHAPES.join('|')}`)
    .option('--layers <list>', 'layers to tap, comma-separated (default per method)')
    .option('--image-size <n>', 'resize the shorter side to n (default 256)')
    .option('--crop <n>', 'centre crop side (default 224, or the image size when smaller)')
    .option('--coreset <x>', 'PatchCore: fraction of patches kept in the memory bank (default 0.1)')
    .option('--reweight <b>', 'PatchCore: importance re-weighting over b nearest neighbours (default 1 = none)')
    .option('--maps <dir>', 'write float32 TIFF maps as DIR/<category>/test/<defect>/<stem>.tiff')
    .option('--scores <file>', 'write image,label,score rows (one file per category when several: FILE.<category>.csv)')
    .option('--json <file>', 'also write the results as JSON to this file')
    .option('--store <file>', 'write each result as a row of this results store (skips what it already holds)')
    .option('--split-file <file>', 'mtd/folder: split manifest to reuse, or to write when absent')
    .option('--normal <dir>', 'folder layout: normal images')
    .option('--anomaly <dir>', 'folder layout: anomalous images (sub-folders = defect types)')
    .option('--masks <dir>', 'folder layout: masks, named like the anomalous images (optionally with _mask)')
    .option('--test-normal <dir>', 'folder layout: normal test images (default: a seeded split of --normal)')
    .option('--epochs <n>', `trained methods (${METHODS.filter((m) => m.trained).map((m) => m.name).join(', ')}): epochs (default per method, as IM-IAD Table V)`)
    .option('--batch-size <n>', 'images per training / feature batch (default 8)')
    .option('--lr <x>', 'trained methods: learning rate (default per method: STPM 0.4, RD4AD 0.005, ...)')
    .option('--device <d>', 'trained methods: where the network trains, auto|cpu|cuda (default auto: CUDA when libtorch has it)')
    .option('--save <file>', 'write the fitted detector (weights, memory bank or statistics) to a checkpoint (FILE.<category>.imiad when several)')
    .option('--load <file>', 'restore the fitted detector from a checkpoint instead of fitting');
  addSettingOptions(cmd);
  cmd.action(
      action(async (opts: RunCommandOptions) => {
        if (opts.setting !== undefined || opts.store !== undefined) {
          const rows = await runSetting(opts);
          process.stdout.write(`${formatSettingRows(rows)}\n`);
          if (opts.store) process.stdout.write(`Store: ${path.resolve(opts.store)}\n`);
          if (opts.json) {
            fs.mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
            const out = Object.fromEntries(rows.map((r) => [r.config.category, { setting: r.config.setting, metrics: r.metrics, efficiency: r.efficiency, continual: r.continual, notes: r.notes, key: r.key }]));
            fs.writeFileSync(opts.json, `${JSON.stringify(out, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
            process.stdout.write(`JSON written to ${opts.json}\n`);
          }
          return;
        }
        // Ctrl-C stops training (between steps) and prediction cleanly; a second one exits at once.
        const interrupt = abortOnInterrupt();
        let results: RunResults;
        try {
          results = await runRun(opts, interrupt.signal);
        } catch (err) {
          if (!interrupt.signal.aborted) throw err;
          process.stderr.write('\nimiad: interrupted\n');
          process.exitCode = 130;
          return;
        } finally {
          interrupt.dispose();
        }
        process.stdout.write(`${formatRunResults(results)}\n`);
        if (opts.json) {
          fs.mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
          fs.writeFileSync(opts.json, resultsJson(results));
          process.stdout.write(`JSON written to ${opts.json}\n`);
        }
      }),
    );
}
