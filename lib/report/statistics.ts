/**
 * The statistical comparison of the methods in the report (Demsar 2006): per setting and metric, the Friedman test
 * over the methods with the categories (dataset x category) as blocks, the Iman-Davenport F, the Nemenyi critical
 * differences at alpha 0.05 and 0.10, optionally Wilcoxon signed-ranks against a control method with Holm's
 * correction; one table per setting and one critical-difference diagram per table (its first metric, usually image
 * AUROC).
 *
 * A block's value for a method is the mean over the seeds stored for it. Only complete blocks enter a test (every
 * compared method has the metric there); the number left out is reported. A test needs 2 methods and 2 blocks.
 */
import { settingLabel } from '../settings';
import type { ResultRow } from '../runner/types';
import { cdDiagramSvg } from '../stats/cd-diagram';
import { friedmanTest, type FriedmanResult } from '../stats/friedman';
import { nemenyiCriticalDifference, nemenyiGroups } from '../stats/nemenyi';
import { compareWithControl } from '../stats/wilcoxon';
import { DATASET_TITLES, mean, METRIC_TITLES, methodsOf, type ReportData } from './data';
import type { Figure } from './figures';
import { label, markRow, value, type Cell, type ReportTable, type ValueCell } from './table';

/** The metrics compared, in table order (each only where stored). Higher is better for all of them. */
export const COMPARED_METRICS = ['imageAUROC', 'imageAP', 'pixelAUROC', 'pixelAP', 'pixelPRO', 'sPRO'];
export const CD_ALPHAS = [0.05, 0.1] as const;

export interface ControlResult {
  method: string;
  /** Mean over blocks of (method - control). */
  meanDifference: number;
  p: number;
  pHolm: number;
}

export interface MetricComparison {
  setting: string;
  metric: string;
  methods: string[];
  /** The blocks tested: 'dataset/category'. */
  blocks: string[];
  /** Blocks left out because a method lacks the metric there. */
  incompleteBlocks: number;
  friedman: FriedmanResult;
  /** Nemenyi critical difference at alpha 0.05 and 0.10. */
  cd: { alpha: number; value: number; groups: string[][] }[];
  /** Wilcoxon signed-ranks of every method against the control, Holm-adjusted (when a control was given). */
  control?: { method: string; results: ControlResult[] };
}

export interface StatisticsOptions {
  /** A method label (as in the tables) to compare every other method with: Wilcoxon signed-ranks + Holm. */
  control?: string;
}

const SETTING_ORDER = ['vanilla', 'supervised', 'fewshot', 'noisy', 'continual'];

function settingsOf(rows: ResultRow[]): string[] {
  const first = new Map<string, ResultRow>();
  for (const r of rows) if (!first.has(settingLabel(r.config.setting))) first.set(settingLabel(r.config.setting), r);
  return [...first.entries()]
    .sort(([a, ra], [b, rb]) => SETTING_ORDER.indexOf(ra.config.setting.name) - SETTING_ORDER.indexOf(rb.config.setting.name) || (a < b ? -1 : a > b ? 1 : 0))
    .map(([s]) => s);
}

/** The methods x blocks comparisons of one setting, one per metric with enough data. */
function compareSetting(data: ReportData, setting: string, rows: ResultRow[], opts: StatisticsOptions): MetricComparison[] {
  const methods = methodsOf(data, rows);
  if (methods.length < 2) return [];
  const blockOf = (r: ResultRow): string => `${r.config.dataset}/${r.config.category}`;
  const blockNames = [...new Set(rows.map(blockOf))].sort();
  const byCell = new Map<string, ResultRow[]>();
  for (const r of rows) {
    const id = `${blockOf(r)}\0${data.label.get(r)}`;
    byCell.set(id, [...(byCell.get(id) ?? []), r]);
  }
  const out: MetricComparison[] = [];
  for (const metric of COMPARED_METRICS) {
    // Mean over seeds per (block, method).
    const cell = (block: string, method: string): number | null => mean((byCell.get(`${block}\0${method}`) ?? []).map((r) => r.metrics[metric]));
    const present = blockNames.filter((b) => methods.some((m) => cell(b, m) !== null));
    const complete = present.filter((b) => methods.every((m) => cell(b, m) !== null));
    if (complete.length < 2) continue;
    const matrix = complete.map((b) => methods.map((m) => cell(b, m)!));
    const friedman = friedmanTest(matrix);
    const cd = CD_ALPHAS.map((alpha) => {
      const v = nemenyiCriticalDifference(methods.length, complete.length, alpha);
      return { alpha, value: v, groups: nemenyiGroups(friedman.averageRanks, v).map((g) => g.map((i) => methods[i])) };
    });
    const comparison: MetricComparison = { setting, metric, methods, blocks: complete, incompleteBlocks: present.length - complete.length, friedman, cd };
    const control = opts.control !== undefined ? methods.indexOf(opts.control) : -1;
    if (control >= 0) {
      comparison.control = {
        method: opts.control!,
        results: compareWithControl(matrix, control).map((c) => ({ method: methods[c.method], meanDifference: c.meanDifference, p: c.wilcoxon.p, pHolm: c.pHolm })),
      };
    }
    out.push(comparison);
  }
  return out;
}

const slugOf = (s: string): string => s.replace(/[^A-Za-z0-9_.-]+/g, '_');

function fmt(v: number, digits: number): string {
  if (!Number.isFinite(v)) return v > 0 ? '∞' : '-';
  return v.toFixed(digits);
}

/** p-values: 4 decimals, and '< 0.0001' below. */
export function formatP(p: number): string {
  return p < 1e-4 ? '< 0.0001' : p.toFixed(4);
}

/** 'p = 0.0498' or 'p < 0.0001', for prose. */
function pText(p: number, name = 'p'): string {
  return p < 1e-4 ? `${name} < 0.0001` : `${name} = ${p.toFixed(4)}`;
}

function statisticsTable(setting: string, comparisons: MetricComparison[]): ReportTable {
  const methods = [...new Set(comparisons.flatMap((c) => c.methods))].sort();
  const t: ReportTable = {
    id: `Statistics, ${setting}`,
    slug: `table-stats-${slugOf(setting)}`,
    title: 'Average ranks (1 = best) over the blocks (dataset x category), Friedman chi-square and Iman-Davenport F with p-values, Nemenyi critical differences (Demsar 2006).',
    header: ['Metric', 'Blocks', ...methods, 'χ²_F', 'p', 'F_F', 'p', 'CD 0.05', 'CD 0.10'],
    groups: [{ label: '', span: 2 }, { label: 'Average rank', span: methods.length }, { label: 'Friedman', span: 2 }, { label: 'Iman-Davenport', span: 2 }, { label: 'Nemenyi', span: 2 }],
    rows: [],
    notes: [],
  };
  for (const c of comparisons) {
    const ranks: ValueCell[] = methods.map((m) => {
      const i = c.methods.indexOf(m);
      return value(i >= 0 ? c.friedman.averageRanks[i] : null, 2);
    });
    const f = c.friedman;
    // Numbers stay value cells (plain numbers in CSV); an infinite F and p-values below 1e-4 are printed as text.
    const number = (v: number, digits: number): Cell => (Number.isFinite(v) ? value(v, digits) : label(fmt(v, digits)));
    const pCell = (p: number): Cell => (p < 1e-4 ? label(formatP(p)) : value(p, 4));
    t.rows.push([
      label(METRIC_TITLES[c.metric] ?? c.metric),
      value(c.blocks.length, 0),
      ...ranks,
      number(f.chiSquare, 2),
      pCell(f.chiSquareP),
      number(f.imanDavenportF, 2),
      pCell(f.imanDavenportP),
      value(c.cd[0].value, 2),
      value(c.cd[1].value, 2),
    ]);
    markRow(t, t.rows.length - 1, methods.map((_, i) => i + 2), 'lower');
  }
  const notes = t.notes!;
  notes.push('Ties within a block share their average rank; the chi-square is tie-corrected as in SciPy. Two methods differ significantly (Nemenyi) when their average ranks differ by at least the CD.');
  for (const c of comparisons) {
    const sig = c.cd
      .map((cd) => {
        const pairs: string[] = [];
        for (let i = 0; i < c.methods.length; i++) for (let j = 0; j < c.methods.length; j++) {
          if (c.friedman.averageRanks[j] - c.friedman.averageRanks[i] >= cd.value) pairs.push(`${c.methods[i]} > ${c.methods[j]}`);
        }
        return `at ${cd.alpha}: ${pairs.length ? pairs.join(', ') : 'none'}`;
      })
      .join('; ');
    const incomplete = c.incompleteBlocks ? ` (${c.incompleteBlocks} incomplete block${c.incompleteBlocks > 1 ? 's' : ''} left out)` : '';
    notes.push(`${METRIC_TITLES[c.metric] ?? c.metric}${incomplete}: significant Nemenyi differences ${sig}.`);
    if (c.control) {
      const parts = c.control.results.map((r) => `${r.method} ${r.meanDifference >= 0 ? '+' : ''}${r.meanDifference.toFixed(3)} (${pText(r.p)}, ${pText(r.pHolm, 'Holm')})`);
      notes.push(`${METRIC_TITLES[c.metric] ?? c.metric}, Wilcoxon signed-ranks against ${c.control.method} (mean difference, p, Holm-adjusted p): ${parts.join('; ')}.`);
    }
  }
  return t;
}

function cdFigure(setting: string, c: MetricComparison): Figure {
  const metric = METRIC_TITLES[c.metric] ?? c.metric;
  const datasets = [...new Set(c.blocks.map((b) => b.split('/')[0]))].map((d) => DATASET_TITLES[d] ?? d).join(', ');
  const title = `Critical-difference diagram (${setting}, ${metric}): average ranks over ${c.blocks.length} blocks of ${datasets}; bars join methods not significantly different (Nemenyi, α = 0.05)`;
  const f = c.friedman;
  return {
    slug: `fig-cd-${slugOf(setting)}`,
    title,
    svg: cdDiagramSvg({
      methods: c.methods,
      averageRanks: f.averageRanks,
      cd: c.cd[0].value,
      alpha: c.cd[0].alpha,
      heading: `${setting}: ${metric}, ${c.methods.length} methods over ${c.blocks.length} blocks`,
      footer: `Friedman χ² = ${fmt(f.chiSquare, 2)} (${pText(f.chiSquareP)}), Iman-Davenport F = ${fmt(f.imanDavenportF, 2)} (${pText(f.imanDavenportP)}); CD at α = 0.10: ${fmt(c.cd[1].value, 2)}`,
      title,
    }),
  };
}

/** One comparison on one line, for the terminal: ranks best first, the p-values, the CD and the control's tests. */
export function comparisonLine(c: MetricComparison): string {
  const f = c.friedman;
  const ranks = c.methods
    .map((m, i) => [m, f.averageRanks[i]] as const)
    .sort((a, b) => a[1] - b[1])
    .map(([m, r]) => `${m} ${r.toFixed(2)}`)
    .join(', ');
  const control = c.control ? `; against ${c.control.method} (Wilcoxon, Holm): ${c.control.results.map((r) => `${r.method} ${pText(r.pHolm)}`).join(', ')}` : '';
  return `${c.setting} ${c.metric}: average ranks ${ranks} over ${c.blocks.length} blocks; Friedman ${pText(f.chiSquareP)}, Iman-Davenport ${pText(f.imanDavenportP)}; CD(0.05) = ${fmt(c.cd[0].value, 2)}${control}`;
}

/** Every comparison the store allows, with one table per setting and one CD diagram per table. */
export function statisticalComparisons(data: ReportData, opts: StatisticsOptions = {}): { comparisons: MetricComparison[]; tables: ReportTable[]; figures: Figure[] } {
  const comparisons: MetricComparison[] = [];
  const tables: ReportTable[] = [];
  const figures: Figure[] = [];
  for (const setting of settingsOf(data.rows)) {
    const rows = data.rows.filter((r) => settingLabel(r.config.setting) === setting);
    const found = compareSetting(data, setting, rows, opts);
    if (!found.length) continue;
    comparisons.push(...found);
    tables.push(statisticsTable(setting, found));
    figures.push(cdFigure(setting, found[0]));
  }
  return { comparisons, tables, figures };
}
