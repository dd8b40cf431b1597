/**
 * `imiad run`: fit a detector on each category's training images (or restore it with --load) and evaluate it on the
 * test images at the original resolution, in any setting. Every run, with or without --setting, goes through the
 * grid's executor (lib/runner/executor.ts): the same splits, metrics, checkpoints, scores and maps in every setting.
 * Every option is checked before anything runs: one that does not apply to the method, setting or dataset, or that
 * contradicts a --load'ed checkpoint, is an error naming it. Prints one table (lib/cli/results-table.ts); --json
 * writes the results schema (lib/runner/schema.ts, docs/json-schema.md). docs/run.md describes it all.
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
import { settingRefusal } from '../methods/registry';
import { readCheckpointHeader, type Checkpoint } from '../methods/checkpoint';
import { settingLabel } from '../settings';
import type { SettingSpec } from '../settings/types';
import { gridConfig } from '../runner/config';
import { createExecutor } from '../runner/executor';
import { checkpointFiles, experimentFiles, type ExperimentFiles, taskMaps, taskScores } from '../runner/files';
import { describeExperiment, expandGrid, resultRow, runGrid } from '../runner/grid';
import { abortOnInterrupt } from '../runner/interrupt';
import { canonicalJson, experimentKey } from '../runner/key';
import { version as codeVersion } from '../version';
import { resultFromRow, resultsDocument, jsonText, type ResultJson } from '../runner/schema';
import { machineDescription, ResultsStore } from '../runner/store';
import type { Experiment, JsonValue, ResultRow } from '../runner/types';
import { action } from './action';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';
import { addComputeOptions, applyComputeOptions } from './compute-options';
import { progress, type Progress } from './progress';
import { formatResultsTable } from './results-table';
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
  textureRoot?: string;
  foreground?: string;
  seed?: string;
  store?: string;
  maps?: string;
  scores?: string;
  json?: JsonFlag;
  splitFile?: string;
  normal?: string;
  anomaly?: string;
  masks?: string;
  testNormal?: string;
  epochs?: string;
  batchSize?: string;
  lr?: string;
  save?: string;
  load?: string;
}

/** What a run finished: its rows (as a store holds them), the same as schema results, and whether Ctrl-C stopped it. */
export interface RunOutcome {
  rows: ResultRow[];
  results: ResultJson[];
  aborted: boolean;
  /** The results store, with --store. */
  store?: string;
}

/** Datasets without an official split, whose seeded split --split-file records (lib/datasets LoadOptions). */
const SPLIT_FILE_DATASETS: readonly DatasetName[] = ['mtd', 'folder'];
/** Options of the folder layout only. */
const FOLDER_FLAGS = [['normal', '--normal'], ['anomaly', '--anomaly'], ['masks', '--masks'], ['testNormal', '--test-normal']] as const;
/**
 * Parameters that do not change what a fitted detector computes, only how it batches the work: with --load the
 * command's value is used; every other parameter must agree with the checkpoint.
 */
const EXECUTION_PARAMS: readonly string[] = ['batchSize'];

function parseNumber(text: string | undefined, name: string, check: (v: number) => boolean, expected: string): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || !check(v)) throw invalidType(expected, name, text);
  return v;
}

/** The detector parameters the command line sets (only those given), and the flag that set each. */
export function commandParams(opts: RunCommandOptions): { params: Record<string, JsonValue>; flags: Record<string, string> } {
  const params: Record<string, JsonValue> = {};
  const flags: Record<string, string> = {};
  const set = (param: string, value: JsonValue, flag: string): void => {
    params[param] = value;
    flags[param] = flag;
  };
  if (opts.backbone !== undefined) {
    if (!fs.existsSync(opts.backbone)) throw imiadError('Error', 'ERR_IMIAD_FILE', `Backbone file ${opts.backbone} does not exist`);
    set('backbone', opts.backbone, '--backbone');
  }
  if (opts.backboneShape !== undefined) {
    if (!BACKBONE_SHAPES.includes(opts.backboneShape as BackboneShape)) throw invalidType(`one of ${BACKBONE_SHAPES.join(', ')}`, '--backbone-shape', opts.backboneShape);
    set('backboneShape', opts.backboneShape, '--backbone-shape');
  }
  if (opts.layers !== undefined) {
    const layers = opts.layers.split(',').map((l) => l.trim()).filter((l) => l.length > 0);
    if (layers.length === 0) throw invalidType('comma-separated layer names', '--layers', opts.layers);
    set('layers', layers, '--layers');
  }
  const int = (v: number): boolean => Number.isInteger(v);
  const imageSize = parseNumber(opts.imageSize, '--image-size', (v) => int(v) && v >= 1 && v <= 16384, 'integer between 1 and 16384');
  if (imageSize !== undefined) set('imageSize', imageSize, '--image-size');
  const crop = parseNumber(opts.crop, '--crop', (v) => int(v) && v >= 1 && v <= (imageSize ?? 256), `integer between 1 and the image size (${imageSize ?? 256})`);
  if (crop !== undefined) set('cropSize', crop, '--crop');
  else if (imageSize !== undefined && imageSize < 224) set('cropSize', imageSize, '--image-size (below 224 it is also the crop)');
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
    set(option.param, value, `--${flag}`);
  };
  methodOption('coreset', parseNumber(opts.coreset, '--coreset', (v) => v > 0 && v <= 1, 'number in (0, 1]'));
  methodOption('reweight', parseNumber(opts.reweight, '--reweight', (v) => int(v) && v >= 1 && v <= 1024, 'integer between 1 and 1024'));
  methodOption('epochs', parseNumber(opts.epochs, '--epochs', (v) => int(v) && v >= 1 && v <= 1_000_000, 'integer between 1 and 1000000'));
  methodOption('lr', parseNumber(opts.lr, '--lr', (v) => v > 0, 'positive number'));
  if (opts.textureRoot !== undefined && opts.textureRoot.trim() === '') throw invalidType('a folder of texture images', '--texture-root', opts.textureRoot);
  methodOption('texture-root', opts.textureRoot);
  if (opts.foreground !== undefined && opts.foreground.trim() === '') throw invalidType('a folder of foreground masks', '--foreground', opts.foreground);
  methodOption('foreground', opts.foreground);
  const batchSize = parseNumber(opts.batchSize, '--batch-size', (v) => int(v) && v >= 1 && v <= 4096, 'integer between 1 and 4096');
  if (batchSize !== undefined) set('batchSize', batchSize, '--batch-size');
  return { params, flags };
}

/** The detector parameters the command line sets (only those given). */
export function runParams(opts: RunCommandOptions): Record<string, JsonValue> {
  return commandParams(opts).params;
}

const argumentError = (message: string): Error => imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', message);
const checkpointError = (message: string): Error => imiadError('Error', 'ERR_IMIAD_CHECKPOINT', message);
const shown = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

/**
 * Checks a checkpoint against the command and the experiment that will load it (method, parameters, dataset,
 * category, setting, seed, continual task), naming both sides of any difference; returns the detector parameters to
 * run with: the checkpoint's, plus the command's execution parameters.
 */
export function checkLoadedCheckpoint(
  file: string,
  c: Omit<Checkpoint, 'state'>,
  command: { method: string; params: Record<string, JsonValue>; flags: Record<string, string>; setting: SettingSpec; seed: number },
  experiment: Experiment,
  task?: number,
): Record<string, JsonValue> {
  if (c.method !== command.method) throw checkpointError(`Checkpoint ${file} holds a ${c.method} detector but --method is ${command.method}`);
  for (const [param, value] of Object.entries(command.params)) {
    if (EXECUTION_PARAMS.includes(param)) continue;
    const flag = command.flags[param];
    if (!(param in c.params)) {
      throw checkpointError(`Checkpoint ${file} was fitted with ${c.method}'s default ${param} but the command sets ${flag} ${shown(value)}; leave it out to use the checkpoint's`);
    }
    if (canonicalJson(c.params[param]) !== canonicalJson(value)) {
      throw checkpointError(`Checkpoint ${file} was fitted with ${param} ${shown(c.params[param])} but the command sets ${flag} ${shown(value)}`);
    }
  }
  // Checkpoints without a run description (written by runExperiment itself) come from vanilla runs.
  const run = c.run ?? { dataset: experiment.config.dataset, category: experiment.config.category, setting: { name: 'vanilla' }, seed: Number(c.params.seed ?? 0) };
  const { config } = experiment;
  if (run.dataset !== config.dataset || run.category !== config.category) {
    throw checkpointError(`Checkpoint ${file} was fitted on ${run.dataset}/${run.category} but this experiment is ${config.dataset}/${config.category}`);
  }
  if (canonicalJson(run.setting) !== canonicalJson(command.setting)) {
    throw checkpointError(`Checkpoint ${file} was fitted in the ${settingLabel(run.setting as SettingSpec)} setting but the command runs ${settingLabel(command.setting)} (--setting and its options)`);
  }
  if (run.seed !== command.seed) throw checkpointError(`Checkpoint ${file} was fitted with --seed ${run.seed} but the command has --seed ${command.seed} (the split depends on it)`);
  if (task !== undefined) {
    const want = experiment.tasks!;
    if (!run.task || run.task.index !== task || run.task.count !== want.length || run.task.category !== want[task].category) {
      const held = run.task ? `task ${run.task.index + 1} of ${run.task.count} (${run.task.category})` : 'no continual task';
      throw checkpointError(`Checkpoint ${file} holds the detector after ${held} but task ${task + 1} of ${want.length} (${want[task].category}) was expected`);
    }
  }
  const params: Record<string, JsonValue> = {};
  for (const [k, v] of Object.entries(c.params)) if (k !== 'seed') params[k] = v as JsonValue;
  for (const k of EXECUTION_PARAMS) if (k in command.params) params[k] = command.params[k];
  return params;
}

/** The files a run's experiment reads and writes, for the JSON's `files` (continual: per task). */
function filesOf(files: ExperimentFiles, experiment: Experiment): NonNullable<ResultJson['files']> {
  const out: NonNullable<ResultJson['files']> = {};
  if (files.save) out.saved = checkpointFiles(files.save, experiment);
  if (files.load) out.loaded = checkpointFiles(files.load, experiment);
  if (files.scores) {
    out.scores = experiment.tasks
      ? experiment.tasks.flatMap((_t, l) => experiment.tasks!.slice(0, l + 1).map((t) => taskScores(files.scores!, l, t.category)))
      : [files.scores];
  }
  if (files.maps) out.maps = experiment.tasks ? experiment.tasks.map((_t, l) => taskMaps(files.maps!, l)) : files.maps;
  return out;
}

interface RunPlan {
  experiments: Experiment[];
  files: Map<string, ExperimentFiles>;
  loadCategories: (name: DatasetName, root: string, o: { categories?: string[] }) => Promise<Category[]>;
}

/**
 * Every check of `imiad run`, before anything runs: the method, dataset and setting options, the files, and with
 * --load every checkpoint against the command. Returns the experiments (with a checkpoint's parameters when loading).
 */
async function planRun(opts: RunCommandOptions, heatmapDir: (key: string) => string): Promise<RunPlan> {
  const dataset = requireDatasetName(opts.dataset);
  const entry = findMethod(opts.method);
  if (!entry) throw invalidType(`one of ${METHOD_NAMES.join(', ')}`, '--method', opts.method);
  parseNumber(opts.seed, '--seed', (v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff, 'integer between 0 and 4294967295');
  const { spec, seed } = settingFromFlags(opts);
  const refusal = settingRefusal(entry, spec.name);
  if (refusal) throw argumentError(refusal);
  if (!fs.existsSync(opts.root) || !fs.statSync(opts.root).isDirectory()) throw imiadError('Error', 'ERR_IMIAD_FILE', `Dataset root ${opts.root} is not a folder`);
  if (opts.splitFile !== undefined && !SPLIT_FILE_DATASETS.includes(dataset)) {
    throw argumentError(`--split-file applies to --dataset ${SPLIT_FILE_DATASETS.join('|')} (no official split), not ${dataset}`);
  }
  let folder: FolderLayout | undefined;
  if (dataset === 'folder') {
    if (!opts.normal || !opts.anomaly) throw argumentError('The folder layout needs --normal DIR and --anomaly DIR');
    folder = { normal: opts.normal, anomaly: opts.anomaly, masks: opts.masks, testNormal: opts.testNormal };
  } else {
    for (const [field, flag] of FOLDER_FLAGS) if (opts[field] !== undefined) throw argumentError(`${flag} applies to --dataset folder, not ${dataset}`);
  }
  const { params, flags } = commandParams(opts);
  if (opts.maps !== undefined && !entry.hasMaps) throw argumentError(`--maps applies to methods with anomaly maps, not ${opts.method} (it scores images only)`);
  if (opts.save !== undefined && opts.load !== undefined) {
    throw argumentError('--save and --load together: a loaded detector is not fitted again, so there is nothing new to save (copy the checkpoint instead)');
  }
  const names = opts.categories?.split(',').map((c) => c.trim()).filter((c) => c.length > 0);
  const config = gridConfig({
    datasets: [{ name: dataset, root: path.resolve(opts.root), ...(names && names.length ? { categories: names } : {}) }],
    methods: [{ name: opts.method, params }],
    settings: [spec],
    seeds: [seed],
  });
  // gridConfig expands list-valued options; a run's setting is the one spec the flags made.
  config.settings = [spec];
  const loadCategories = (name: DatasetName, root: string, o: { categories?: string[] }): Promise<Category[]> =>
    loadDataset(name, root, { ...o, seed, splitFile: opts.splitFile, folder });
  const { experiments, invalid } = await expandGrid(config, loadCategories, heatmapDir);
  if (invalid.length) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', invalid.map((b) => `${describeExperiment(b.config)}: ${b.reason}`).join('\n'));
  const given: ExperimentFiles = {
    ...(opts.save !== undefined ? { save: opts.save } : {}),
    ...(opts.load !== undefined ? { load: opts.load } : {}),
    ...(opts.scores !== undefined ? { scores: opts.scores } : {}),
    ...(opts.maps !== undefined ? { maps: opts.maps } : {}),
  };
  const files = new Map<string, ExperimentFiles>();
  const planned: Experiment[] = [];
  for (const e of experiments) {
    let experiment = e;
    const f = experimentFiles(given, e, experiments.length > 1);
    if (f.load) {
      const command = { method: opts.method, params, flags, setting: spec, seed };
      let loaded: Record<string, JsonValue> | null = null;
      for (const [i, file] of checkpointFiles(f.load, e).entries()) {
        const p = checkLoadedCheckpoint(file, await readCheckpointHeader(file), command, e, e.tasks ? i : undefined);
        if (loaded && canonicalJson(loaded) !== canonicalJson(p)) throw checkpointError(`Checkpoint ${file} was fitted with other parameters than ${checkpointFiles(f.load, e)[0]}`);
        loaded = p;
      }
      // The experiment is the one that saved the checkpoint: its parameters, hence its key.
      const cfg = { ...e.config, params: loaded! };
      const key = experimentKey(cfg, codeVersion);
      experiment = { ...e, config: cfg, key, heatmapDir: heatmapDir(key) };
    }
    files.set(experiment.key, f);
    planned.push(experiment);
  }
  return { experiments: planned, files, loadCategories };
}

/**
 * Runs every requested category (or the continual task sequence) through the grid's executor; progress bars on
 * stderr. With --store the rows are written there (a stored experiment is not run again: its row is returned).
 * Ctrl-C (`signal`) stops the running experiment; the finished ones are returned with `aborted`.
 */
export async function runRun(opts: RunCommandOptions, signal: AbortSignal = new AbortController().signal): Promise<RunOutcome> {
  const store = opts.store ? new ResultsStore(opts.store) : null;
  const scratch = store ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-run-'));
  try {
    const heatmapDir = (key: string): string => (store ? store.heatmapDir(key) : path.join(scratch!, 'heatmaps', key));
    const plan = await planRun(opts, heatmapDir);
    if (store && (opts.save !== undefined || opts.scores !== undefined || opts.maps !== undefined)) {
      const stored = store.keys();
      const done = plan.experiments.find((e) => stored.has(e.key));
      if (done) {
        const flag = opts.save !== undefined ? '--save' : opts.scores !== undefined ? '--scores' : '--maps';
        throw argumentError(`${flag} writes its files while an experiment runs, but the store ${store.file} already holds ${describeExperiment(done.config)}, which would not run again; use another --store or leave --store out`);
      }
    }
    let stage = '';
    let bar: Progress | null = null;
    const executor = createExecutor({
      heatmaps: store !== null,
      loadCategories: plan.loadCategories,
      files: (e) => plan.files.get(e.key) ?? {},
      onStage: (e, s, done, total, detail) => {
        if (s === 'evaluate' || s.endsWith(' evaluate')) return;
        const label = `${e.config.category} ${s}`;
        if (label !== stage) {
          bar?.done();
          stage = label;
          bar = progress(label, total);
        }
        bar?.update(done, total, detail);
      },
    });
    const outcome = (rows: ResultRow[], aborted: boolean): RunOutcome => ({
      rows,
      results: rows.map((r) => resultFromRow(r, filesOf(plan.files.get(r.key) ?? {}, plan.experiments.find((e) => e.key === r.key)!))),
      aborted,
      ...(store ? { store: store.file } : {}),
    });
    if (store) {
      const summary = await runGrid(plan.experiments, store, executor, { signal });
      (bar as Progress | null)?.done();
      if (summary.failed.length) throw imiadError('Error', 'ERR_IMIAD_RUN', summary.failed.map((f) => `${f.experiment}: ${f.error}`).join('\n'));
      const byKey = new Map(store.rows().map((r) => [r.key, r]));
      return outcome(plan.experiments.map((e) => byKey.get(e.key)).filter((r): r is ResultRow => r !== undefined), summary.aborted);
    }
    const machine = machineDescription();
    const rows: ResultRow[] = [];
    for (const e of plan.experiments) {
      const started = new Date();
      try {
        rows.push(resultRow(e, await executor(e, { signal }), started, new Date(), machine));
      } catch (err) {
        if (!signal.aborted) throw err;
        (bar as Progress | null)?.done();
        return outcome(rows, true);
      }
    }
    (bar as Progress | null)?.done();
    return outcome(rows, false);
  } finally {
    store?.close();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

export function registerRun(program: Command): void {
  const trained = METHODS.filter((m) => m.trained).map((m) => m.name).join(', ');
  const cmd = program
    .command('run')
    .description('Fit a detector on each category (or --load it) and evaluate it at the original resolution, in any --setting')
    .requiredOption('--dataset <name>', 'dataset layout: mvtec|mpdd|loco|btad|mtd|visa|dagm|folder')
    .requiredOption('--root <dir>', 'the dataset root')
    .requiredOption('--method <name>', `detector: ${METHOD_NAMES.join('|')} (trained: ${trained})`)
    .option('--categories <list>', 'comma-separated categories (default: all; continual: the tasks)')
    .option('--backbone <file>', 'an ONNX backbone (default: imiad\'s seeded ResNet-18-shaped backbone)')
    .option('--backbone-shape <shape>', `shape of the default backbone: ${BACKBONE_SHAPES.join('|')}`)
    .option('--layers <list>', 'layers to tap, comma-separated (default per method)')
    .option('--image-size <n>', 'resize the shorter side to n (default 256)')
    .option('--crop <n>', 'centre crop side (default 224, or the image size when smaller)')
    .option('--coreset <x>', 'PatchCore: fraction of patches kept in the memory bank (default 0.1)')
    .option('--reweight <b>', 'PatchCore: importance re-weighting over b nearest neighbours (default 1 = none)')
    .option('--texture-root <dir>', 'DRAEM, SemiREST, PRN: folder of anomaly texture images, e.g. DTD (read recursively; default: Perlin noise as texture)')
    .option('--foreground <dir>', 'BGAD, PRN, SemiREST: folder of foreground masks, one per normal training image named like it (default: Otsu thresholding of each image)')
    .option('--maps <dir>', 'write float32 TIFF maps as DIR/<category>/test/<defect>/<stem>.tiff (continual: DIR/task<N>/...)')
    .option('--scores <file>', 'write image,label,score rows (several categories: FILE.<category>.csv; continual: FILE.task<N>.<category>.csv)')
    .option('--store <file>', 'write each result as a row of this results store (skips what it already holds)')
    .option('--split-file <file>', 'mtd/folder: split manifest to reuse, or to write when absent')
    .option('--normal <dir>', 'folder layout: normal images')
    .option('--anomaly <dir>', 'folder layout: anomalous images (sub-folders = defect types)')
    .option('--masks <dir>', 'folder layout: masks, named like the anomalous images (optionally with _mask)')
    .option('--test-normal <dir>', 'folder layout: normal test images (default: a seeded split of --normal)')
    .option('--epochs <n>', `trained methods (${trained}): epochs (default per method, as IM-IAD Table V)`)
    .option('--batch-size <n>', 'images per training / feature batch (default 8)')
    .option('--lr <x>', 'trained methods: learning rate (default per method: STPM 0.4, RD4AD 0.005, ...)')
    .option('--save <file>', 'write the fitted detector to a checkpoint (several categories: FILE.<category>.imiad; continual: FILE.task<N>.imiad)')
    .option('--load <file>', 'restore the detector from the checkpoint(s) --save wrote instead of fitting; checked against the command');
  addJsonOption(cmd, 'the results (docs/json-schema.md)');
  addSettingOptions(cmd);
  cmd.addHelpText('after', '\nExample:\n  imiad run --dataset mvtec --root ./mvtec --method stpm --setting supervised --epochs 3 --save m.imiad --json a.json\n  imiad run --dataset mvtec --root ./mvtec --method stpm --setting supervised --load m.imiad --json b.json\n');
  addComputeOptions(cmd);
  cmd.action(
    action(async (opts: RunCommandOptions) => {
      applyComputeOptions(opts);
      // Ctrl-C stops training (between steps) and prediction cleanly; a second one exits at once.
      const interrupt = abortOnInterrupt();
      let outcome: RunOutcome;
      try {
        outcome = await runRun(opts, interrupt.signal);
      } finally {
        interrupt.dispose();
      }
      const toStdout = jsonToStdout(opts.json);
      if (!toStdout && outcome.rows.length) process.stdout.write(`${formatResultsTable(outcome.results)}\n`);
      if (!toStdout && outcome.store) process.stdout.write(`Store: ${outcome.store}\n`);
      const written = writeJsonOutput(opts.json, jsonText(resultsDocument('run', outcome.results, outcome.store ? { store: outcome.store } : {})));
      if (written) process.stdout.write(`JSON written to ${written}\n`);
      if (outcome.aborted) {
        process.stderr.write('\nimiad: interrupted\n');
        process.exitCode = 130;
      }
    }),
  );
}
