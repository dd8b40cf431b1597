/**
 * `imiad evaluate`: scores anomaly maps saved by any method, the way MVTec's official evaluation scripts do.
 * Maps live at MAPS/<category>/test/<defect>/<image stem>.tiff (float32, the image's original size; .tif, .npy and
 * 8/16-bit .png are read too). Prints a table; --json OUT writes { "<category>": metrics }.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Command } from 'commander';

import { imiadError, invalidRange, invalidType } from '../../bindings/errors';
import { loadDataset } from '../datasets';
import type { Category } from '../datasets/types';
import { evaluateCategory, evaluateLocoCategory, type CategoryMetrics, type LocoCategoryMetrics, type Prediction } from '../metrics/evaluate';
import { findMapFile, readAnomalyMap } from '../metrics/maps';
import { limitKey } from '../metrics/pro';
import { action } from './action';
import { progress } from './progress';

export const EVALUATE_DATASETS = ['mvtec', 'loco', 'mpdd', 'btad', 'visa', 'mtd', 'dagm'] as const;
export type EvaluateDataset = (typeof EVALUATE_DATASETS)[number];

export interface EvaluateCommandOptions {
  dataset: string;
  root: string;
  maps: string;
  categories?: string;
  proLimit?: string;
  json?: string;
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
      results[name] = await evaluateLocoCategory(category, provider, { onProgress });
    } else {
      // The provider only reads files: four samples are read ahead while earlier ones accumulate.
      const r = await evaluateCategory(category, provider, { limits: [limit], onProgress, prefetch: 4 });
      results[name] = {
        image_auroc: r.image_auroc,
        image_ap: r.image_ap,
        pixel_auroc: r.pixel_auroc,
        pixel_ap: r.pixel_ap,
        aupro: r.aupro,
        f1_max: r.f1_max,
      };
    }
    bar.done();
  }
  return results;
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
  program
    .command('evaluate')
    .description('Score saved anomaly maps against a dataset\'s ground truth, as the official MVTec AD / LOCO AD scripts do')
    .requiredOption('--dataset <name>', `dataset layout: ${EVALUATE_DATASETS.join('|')}`)
    .requiredOption('--root <dir>', 'the dataset root (holding one folder per category)')
    .requiredOption('--maps <dir>', 'anomaly maps: MAPS/<category>/test/<defect>/<image stem>.tiff (or .tif, .npy, .png)')
    .option('--categories <list>', 'comma-separated categories (default: every category with a test folder)')
    .option('--pro-limit <x>', 'FPR integration limit of AU-PRO, in (0, 1] (LOCO always reports 0.01, 0.05, 0.1, 0.3, 1.0)', '0.3')
    .option('--json <file>', 'also write the results as JSON to this file')
    .action(
      action(async (opts: EvaluateCommandOptions) => {
        const results = await runEvaluate(opts);
        process.stdout.write(`${formatResults(results, opts.dataset, parseLimit(opts.proLimit))}\n`);
        if (opts.json) {
          fs.mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
          fs.writeFileSync(opts.json, `${JSON.stringify(results, null, 2)}\n`);
          process.stdout.write(`JSON written to ${opts.json}\n`);
        }
      }),
    );
}
