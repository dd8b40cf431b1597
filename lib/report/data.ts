/**
 * The report's view of the store: rows grouped by dataset, setting, method variant and category, averaged over
 * seeds, then over categories ("mean over categories" is what the paper's dataset-level tables report).
 */
import { settingLabel } from '../settings';
import type { SettingSpec } from '../settings/types';
import { canonicalJson } from '../runner/key';
import type { Efficiency, ResultRow } from '../runner/types';
import { normalQuantile } from '../stats/distributions';

/**
 * The uncertainty of a cell, shown by `imiad report --ci`: the standard deviation over seeds of the cell's value, or
 * (one seed) the bootstrap interval of the metric over the test images.
 */
export type Spread = { kind: 'std'; std: number; seeds: number } | { kind: 'interval'; low: number; high: number; level: number };

export interface Cellish {
  /** Mean over seeds (and categories where aggregated); null when no row defines it. */
  value: number | null;
  /** Number of stored experiments behind the value. */
  runs: number;
  spread?: Spread;
}

export function mean(values: (number | null | undefined)[]): number | null {
  const known = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  return known.length ? known.reduce((a, b) => a + b, 0) / known.length : null;
}

/** Method labels: the bare name, or name(param=value, ...) when the store holds several variants of the method. */
export function methodLabels(rows: ResultRow[]): Map<ResultRow, string> {
  const variants = new Map<string, Set<string>>();
  for (const r of rows) {
    const set = variants.get(r.config.method) ?? new Set<string>();
    set.add(canonicalJson(r.config.params));
    variants.set(r.config.method, set);
  }
  const out = new Map<ResultRow, string>();
  for (const r of rows) {
    const several = variants.get(r.config.method)!.size > 1;
    const params = Object.entries(r.config.params)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(', ');
    out.set(r, several ? `${r.config.method}(${params})` : r.config.method);
  }
  return out;
}

export interface ReportData {
  rows: ResultRow[];
  label: Map<ResultRow, string>;
}

export function reportData(rows: ResultRow[]): ReportData {
  return { rows, label: methodLabels(rows) };
}

export type RowFilter = (r: ResultRow) => boolean;

export function select(data: ReportData, filter: RowFilter): ResultRow[] {
  return data.rows.filter(filter);
}

/** Methods (labels) present among rows, in order of first appearance, then by name. */
export function methodsOf(data: ReportData, rows: ResultRow[]): string[] {
  return [...new Set(rows.map((r) => data.label.get(r)!))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export function datasetsOf(rows: ResultRow[]): string[] {
  const order = ['mvtec', 'loco', 'mpdd', 'btad', 'mtd', 'visa', 'dagm', 'folder'];
  return [...new Set(rows.map((r) => r.config.dataset))].sort((a, b) => order.indexOf(a) - order.indexOf(b));
}

export function categoriesOf(rows: ResultRow[]): string[] {
  return [...new Set(rows.map((r) => r.config.category))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A row reader; a metric's reader names its metric, so that its bootstrap intervals can be found. */
export type RowReader = ((r: ResultRow) => number | null | undefined) & { metricName?: string };

/**
 * Mean over seeds per category, then mean over categories, of a value read from each row; with its spread:
 * - two or more seeds stored for every category of the cell: the sample standard deviation (n - 1) over those
 *   seeds of the cell's value computed per seed;
 * - otherwise, a metric whose every row carries a bootstrap interval: that interval for one row; for one row per
 *   category over several categories (independent test sets), value +- z * sqrt(sum SE_c^2) / C, the normal
 *   interval of the mean at the stored level, clipped to [0, 1] (the range of the AUROC).
 */
export function aggregate(rows: ResultRow[], read: RowReader): Cellish {
  const byCategory = new Map<string, ResultRow[]>();
  for (const r of rows) {
    const list = byCategory.get(r.config.category) ?? [];
    list.push(r);
    byCategory.set(r.config.category, list);
  }
  const valueOf = (group: ResultRow[][]): number | null => mean(group.map((list) => mean(list.map(read))));
  const groups = [...byCategory.values()].map((list) => list.filter((r) => isNumber(read(r))));
  const cell: Cellish = { value: valueOf([...byCategory.values()]), runs: rows.length };
  if (cell.value === null || groups.some((g) => g.length === 0)) return cell;
  const seedSets = groups.map((g) => new Set(g.map((r) => r.config.seed)));
  const common = [...seedSets[0]].filter((s) => seedSets.every((set) => set.has(s)));
  if (common.length >= 2) {
    const perSeed = common.map((seed) => valueOf(groups.map((g) => g.filter((r) => r.config.seed === seed)))!);
    const m = perSeed.reduce((a, b) => a + b, 0) / perSeed.length;
    const std = Math.sqrt(perSeed.reduce((a, v) => a + (v - m) * (v - m), 0) / (perSeed.length - 1));
    cell.spread = { kind: 'std', std, seeds: common.length };
    return cell;
  }
  const name = read.metricName;
  const intervals = groups.map((g) => (g.length === 1 && name ? g[0].intervals?.[name] : undefined));
  if (!intervals.every((i) => i !== undefined)) return cell;
  const level = intervals[0]!.level;
  if (intervals.length === 1) {
    cell.spread = { kind: 'interval', low: intervals[0]!.low, high: intervals[0]!.high, level };
  } else if (intervals.every((i) => i!.level === level)) {
    const se = Math.sqrt(intervals.reduce((a, i) => a + i!.standardError ** 2, 0)) / intervals.length;
    const z = normalQuantile((1 + level) / 2);
    // The metrics with intervals (AUROC) lie in [0, 1]; so does their interval.
    cell.spread = { kind: 'interval', low: Math.max(0, cell.value - z * se), high: Math.min(1, cell.value + z * se), level };
  }
  return cell;
}

function isNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

export function metric(name: string): RowReader {
  return Object.assign((r: ResultRow) => r.metrics[name], { metricName: name });
}

export function efficiency(name: keyof Efficiency): (r: ResultRow) => number | null | undefined {
  return (r) => {
    const v = r.efficiency[name];
    return typeof v === 'number' ? v : null;
  };
}

export function isSetting(name: SettingSpec['name']): RowFilter {
  return (r) => r.config.setting.name === name;
}

export { settingLabel };

export const DATASET_TITLES: Record<string, string> = {
  mvtec: 'MVTec AD',
  mpdd: 'MPDD',
  loco: 'MVTec LOCO AD',
  btad: 'BTAD',
  mtd: 'MTD',
  visa: 'VisA',
  dagm: 'DAGM',
  folder: 'Folder',
};

export const METRIC_TITLES: Record<string, string> = {
  imageAUROC: 'Image AUC',
  imageAP: 'Image AP',
  imageF1Max: 'Image F1-max',
  pixelAUROC: 'Pixel AUC',
  pixelAP: 'Pixel AP',
  pixelPRO: 'Pixel PRO',
  pixelF1Max: 'Pixel F1-max',
  imageAUROCLogical: 'Image AUC logical',
  imageAUROCStructural: 'Image AUC structural',
  sPROLogical: 'sPRO logical',
  sPROStructural: 'sPRO structural',
  sPRO: 'Mean sPRO',
};
