/**
 * `imiad evaluate`: scores anomaly maps saved by any method, the way MVTec's official evaluation scripts do.
 * Maps live at MAPS/<category>/test/<defect>/<image stem>.tiff (float32, the image's original size; .tif, .npy and
 * 8/16-bit .png are read too). Prints a table; --json [FILE] writes the results schema (lib/runner/schema.ts,
 * docs/json-schema.md): the same metric names as `imiad run` and `imiad grid`.
 */
import * as fs from 'fs';
import type { Command } from 'commander';

import { imiadError, invalidRange, invalidType } from '../../bindings/errors';
import { loadDataset } from '../datasets';
import type { Category } from '../datasets/types';
import { evaluateCategory, evaluateLocoCategory, type CategoryMetrics, type LocoCategoryMetrics, type Prediction } from '../metrics/evaluate';
import { findMapFile, readAnomalyMap } from '../metrics/maps';
import { limitKey } from '../metrics/pro';
import { metricsFromEvaluation, metricsFromLocoEvaluation, PRO_LIMIT } from '../runner/metrics';
import { jsonText, resultFromMetrics, resultsDocument, type ResultJson } from '../runner/schema';
import { action } from './action';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';
import { applyComputeOptions, DEVICE_HELP, QUIET_HELP } from './compute-options';
import { progress } from './progress';

export const EVALUATE_DATASETS = ['mvtec', 'loco', 'mpdd', 'btad', 'visa', 'mtd', 'dagm'] as const;
export type EvaluateDataset = (typeof EVALUATE_DATASETS)[number];

export interface EvaluateCommandOptions {
  dataset: string;
  root: string;
  maps: string;
  categories?: string;
  proLimit?: string;
  json?: JsonFlag;
}

export type EvaluationResults = Record<string, CategoryMetrics | LocoCategoryMetrics>;

function parseLimit(text: string | undefined): number {
  if (text === undefined) return 0.3;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v)) throw invalidType('number in (0, 1]', '--pro-limit', text);
  if (!(v > 0 && v <= 1)) throw invalidRange('number in (0, 1]', '--pro-limit', text);
  return v;
}

/** Runs the evaluation and returns { category: metrics }; no printing. */
export async function runEvaluate(opts: EvaluateCommandOptions, onCategory?: (name: string, index: number, total: number) => void): Promise<EvaluationResults> {
  return (await evaluateAll(opts, onCategory)).results;
}

/** The evaluation as runEvaluate returns it and as the results schema writes it (AU-PRO at 0.3 always among them). */
async function evaluateAll(
  opts: EvaluateCommandOptions,
  onCategory?: (name: string, index: number, total: number) => void,
): Promise<{ results: EvaluationResults; schema: ResultJson[] }> {
  const dataset = opts.dataset as EvaluateDataset;
  if (!EVALUATE_DATASETS.includes(dataset)) throw invalidType(`one of ${EVALUATE_DATASETS.join(', ')}`, '--dataset', opts.dataset);
  const limit = parseLimit(opts.proLimit);
  if (!fs.existsSync(opts.root) || !fs.statSync(opts.root).isDirectory()) throw imiadError('Error', 'ERR_IMIAD_FILE', `Dataset root ${opts.root} is not a folder`);
  if (!fs.existsSync(opts.maps) || !fs.statSync(opts.maps).isDirectory()) throw imiadError('Error', 'ERR_IMIAD_FILE', `Anomaly maps folder ${opts.maps} is not a folder`);
  const requested = opts.categories
    ?.split(',')
    .map((c) => c.trim())
    .filter((c) => c.length > 0);
  // The dataset loaders (lib/datasets) walk the published layouts; only the test split is evaluated.
  const categories = await loadDataset(dataset, opts.root, { categories: requested });
  const results: EvaluationResults = {};
  const schema: ResultJson[] = [];
  // The schema's pixelPRO is AU-PRO@0.3 whatever --pro-limit says; another limit is pixelPRO@<limit> beside it.
  const limits = limitKey(limit) === PRO_LIMIT ? [limit] : [limit, Number(PRO_LIMIT)];
  for (let c = 0; c < categories.length; c++) {
    const category = categories[c];
    const name = category.name;
    onCategory?.(name, c, categories.length);
    const bar = progress(`evaluate ${name}`, category.samples.filter((x) => x.split === 'test').length);
    const provider = async (sample: Category['samples'][number]): Promise<Prediction> => {
      const file = findMapFile(opts.maps, name, sample.defectType, sample.path);
      const map = await readAnomalyMap(file);
      return { anomalyMap: map.data, width: map.width, height: map.height, source: file };
    };
    const onProgress = (done: number): void => bar.update(done);
    if (dataset === 'loco') {
      const r = await evaluateLocoCategory(category, provider, { onProgress });
      results[name] = r;
      schema.push(resultFromMetrics(dataset, name, metricsFromLocoEvaluation(r), { maps: opts.maps }));
    } else {
      const r = await evaluateCategory(category, provider, { limits, onProgress });
      results[name] = {
        image_auroc: r.image_auroc,
        image_ap: r.image_ap,
        pixel_auroc: r.pixel_auroc,
        pixel_ap: r.pixel_ap,
        aupro: { [limitKey(limit)]: r.aupro[limitKey(limit)] },
        f1_max: r.f1_max,
      };
      schema.push(resultFromMetrics(dataset, name, metricsFromEvaluation(r), { maps: opts.maps }));
    }
    bar.done();
  }
  return { results, schema };
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const fmt = (v: number): string => (Number.isFinite(v) ? v.toFixed(4) : String(v));
const mean = (vs: number[]): number => vs.reduce((a, b) => a + b, 0) / vs.length;

/** The readable table printed by `imiad evaluate`. */
export function formatResults(results: EvaluationResults, dataset: string, limit: number): string {
  const names = Object.keys(results);
  if (dataset === 'loco') {
    const keys = ['0.01', '0.05', '0.1', '0.3', '1.0'];
    const header = ['category', 'type', ...keys.map((k) => `AU-sPRO@${k}`), 'image AUROC'];
    const rows: string[][] = [];
    for (const name of names) {
      const r = results[name] as LocoCategoryMetrics;
      for (const type of ['logical_anomalies', 'structural_anomalies', 'mean'] as const) {
        rows.push([type === 'logical_anomalies' ? name : '', type.replace('_anomalies', ''), ...keys.map((k) => fmt(r.localization[type][k])), fmt(r.classification[type])]);
      }
    }
    return table(header, rows);
  }
  const key = limitKey(limit);
  const cols: [string, (m: CategoryMetrics) => number][] = [
    ['image AUROC', (m) => m.image_auroc],
    ['image AP', (m) => m.image_ap],
    ['pixel AUROC', (m) => m.pixel_auroc],
    ['pixel AP', (m) => m.pixel_ap],
    [`AU-PRO@${key}`, (m) => m.aupro[key]],
    ['F1-max', (m) => m.f1_max],
  ];
  const rows = names.map((n) => [n, ...cols.map(([, f]) => fmt(f(results[n] as CategoryMetrics)))]);
  if (names.length > 1) rows.push(['mean', ...cols.map(([, f]) => fmt(mean(names.map((n) => f(results[n] as CategoryMetrics)))))]);
  return table(['category', ...cols.map(([h]) => h)], rows);
}

export function registerEvaluate(program: Command): void {
  const cmd = program
    .command('evaluate')
    .description('Score saved anomaly maps against a dataset\'s ground truth, as the official MVTec AD / LOCO AD scripts do')
    .requiredOption('--dataset <name>', `dataset layout: ${EVALUATE_DATASETS.join('|')}`)
    .requiredOption('--root <dir>', 'the dataset root (holding one folder per category)')
    .requiredOption('--maps <dir>', 'anomaly maps: MAPS/<category>/test/<defect>/<image stem>.tiff (or .tif, .npy, .png)')
    .option('--categories <list>', 'comma-separated categories (default: every category with a test folder)')
    .option('--pro-limit <x>', 'FPR integration limit of AU-PRO, in (0, 1] (LOCO always reports 0.01, 0.05, 0.1, 0.3, 1.0)', '0.3')
    .option('--device <device>', DEVICE_HELP)
    .option('--quiet', QUIET_HELP);
  addJsonOption(cmd, 'the results (docs/json-schema.md)');
  cmd.action(
    action(async (opts: EvaluateCommandOptions) => {
      applyComputeOptions(opts);
      const { results, schema } = await evaluateAll(opts);
      if (!jsonToStdout(opts.json)) process.stdout.write(`${formatResults(results, opts.dataset, parseLimit(opts.proLimit))}\n`);
      const written = writeJsonOutput(opts.json, jsonText(resultsDocument('evaluate', schema)));
      if (written) process.stdout.write(`JSON written to ${written}\n`);
    }),
  );
}
