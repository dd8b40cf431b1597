/**
 * `imiad report`: the paper's tables and figures from whatever the results store holds. Writes
 *   report.md, index.html (one offline page: tables and inline SVG figures, no external assets),
 *   tables/<slug>.{csv,tex,md}, figures/<slug>.{svg,png}.
 */
import * as fs from 'fs';
import * as path from 'path';

import sharp from 'sharp';

import type { ResultRow } from '../runner/types';
import { reportData } from './data';
import { accuracyEfficiencyFigures, fewshotFigures, heatmapFigures, type Figure } from './figures';
import { statisticalComparisons, type MetricComparison } from './statistics';
import { escapeHtml, toCsv, toHtml, toLatex, toMarkdown, type ReportTable } from './table';
import { allTables } from './tables';

export * from './table';
export * from './tables';
export * from './figures';
export * from './statistics';
export { reportData, methodLabels, type ReportData, type Cellish, type Spread } from './data';

export interface ReportFiles {
  html: string;
  markdown: string;
  tables: ReportTable[];
  figures: Figure[];
  /** The Friedman / Nemenyi (and, with a control, Wilcoxon-Holm) results behind the statistics tables. */
  statistics: MetricComparison[];
  files: string[];
}

export interface ReportOptions {
  /** Write PNG copies of the figures (default true). */
  png?: boolean;
  /** Show each value's spread: ± std over seeds, or the bootstrap interval with one seed. */
  ci?: boolean;
  /** A method label to test every other method against (Wilcoxon signed-ranks, Holm). */
  control?: string;
}

const STYLE = `
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table.result-table { border-collapse: collapse; margin: 1em 0 0.3em; font-size: 13px; }
table.result-table caption { text-align: left; margin-bottom: 0.4em; }
table.result-table th, table.result-table td { border: 1px solid #ccc; padding: 3px 7px; }
table.result-table td { text-align: right; font-variant-numeric: tabular-nums; }
td.best { color: #c00000; } td.second { color: #0050c0; }
figure { margin: 1.5em 0; } figcaption { font-size: 13px; color: #444; }
p.note { font-size: 12px; color: #555; margin: 0 0 1em; }
`;

function summary(rows: ResultRow[]): string[] {
  const versions = [...new Set(rows.map((r) => r.codeVersion))].sort();
  const machines = [...new Set(rows.map((r) => `${r.machine.cpu} (${r.machine.cores} cores${r.machine.gpu ? `, ${r.machine.gpu}` : ''}, ${r.machine.platform}, node ${r.machine.node})`))];
  const settings = [...new Set(rows.map((r) => r.config.setting.name))];
  return [
    `${rows.length} stored experiments; settings: ${settings.join(', ') || 'none'}; code version${versions.length > 1 ? 's' : ''} ${versions.join(', ') || '-'}.`,
    `Machine${machines.length > 1 ? 's' : ''}: ${machines.join('; ') || '-'}.`,
    'Values are means over seeds per category, then over categories. Best in bold, second best underlined.',
  ];
}

export async function writeReport(rows: ResultRow[], storeDir: string, outDir: string, opts: ReportOptions = {}): Promise<ReportFiles> {
  const data = reportData(rows);
  const stats = statisticalComparisons(data, { control: opts.control });
  const tables = [...allTables(data), ...stats.tables];
  const figures = [...accuracyEfficiencyFigures(data), ...heatmapFigures(data, storeDir), ...fewshotFigures(data), ...stats.figures];
  const render = { ci: opts.ci === true };
  fs.mkdirSync(path.join(outDir, 'tables'), { recursive: true });
  fs.mkdirSync(path.join(outDir, 'figures'), { recursive: true });
  const files: string[] = [];
  const write = (rel: string, content: string | Buffer): void => {
    const file = path.join(outDir, rel);
    fs.writeFileSync(file, content);
    files.push(file);
  };
  for (const t of tables) {
    write(`tables/${t.slug}.md`, toMarkdown(t, render));
    write(`tables/${t.slug}.csv`, toCsv(t, render));
    write(`tables/${t.slug}.tex`, toLatex(t, render));
  }
  for (const f of figures) {
    write(`figures/${f.slug}.svg`, f.svg);
    if (opts.png !== false) write(`figures/${f.slug}.png`, await sharp(Buffer.from(f.svg), { density: 96 }).png().toBuffer());
  }
  const intro = summary(rows);
  if (render.ci) intro.push('± values: standard deviation over seeds; [low, high]: bootstrap interval of the image AUROC over the test images (one seed; several categories: normal interval of their mean).');
  const md = [
    '# IM-IAD report',
    '',
    ...intro.map((l) => `${l}  `),
    '',
    ...tables.map((t) => toMarkdown(t, render)),
    ...figures.map((f) => `![${f.title}](figures/${f.slug}.svg)\n\n_${f.title}_\n`),
    tables.length || figures.length ? '' : 'The store holds no results yet.\n',
  ].join('\n');
  write('report.md', md);
  const html = [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8"><title>IM-IAD report</title>',
    `<style>${STYLE}</style></head><body>`,
    '<h1>IM-IAD report</h1>',
    ...intro.map((l) => `<p>${escapeHtml(l)}</p>`),
    '<h2>Tables</h2>',
    ...(tables.length ? tables.map((t) => toHtml(t, render)) : ['<p>The store holds no results yet.</p>']),
    '<h2>Figures</h2>',
    ...figures.map((f) => `<figure id="${f.slug}">${f.svg.replace(/^<svg /, `<svg role="img" aria-label="${escapeHtml(f.title)}" `)}<figcaption>${escapeHtml(f.title)}</figcaption></figure>`),
    '</body></html>',
    '',
  ].join('\n');
  write('index.html', html);
  return { html: path.join(outDir, 'index.html'), markdown: path.join(outDir, 'report.md'), tables, figures, statistics: stats.comparisons, files };
}
