/**
 * The report's view of the store: rows grouped by dataset, setting, method variant and category, averaged over
 * seeds, then over categories ("mean over categories" is what the paper's dataset-level tables report).
 */
import { settingLabel } from '../settings';
import type { SettingSpec } from '../settings/types';
import { canonicalJson } from '../runner/key';
import type { Efficiency, ResultRow } from '../runner/types';

export interface Cellish {
  /** Mean over seeds (and categories where aggregated); null when no row defines it. */
  value: number | null;
  /** Number of stored experiments behind the value. */
  runs: number;
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

/** Mean over seeds per category, then mean over categories, of a value read from each row. */
export function aggregate(rows: ResultRow[], read: (r: ResultRow) => number | null | undefined): Cellish {
  const byCategory = new Map<string, (number | null | undefined)[]>();
  for (const r of rows) {
    const list = byCategory.get(r.config.category) ?? [];
    list.push(read(r));
    byCategory.set(r.config.category, list);
  }
  const perCategory = [...byCategory.values()].map(mean);
  return { value: mean(perCategory), runs: rows.length };
}

export function metric(name: string): (r: ResultRow) => number | null | undefined {
  return (r) => r.metrics[name];
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
