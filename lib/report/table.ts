/**
 * A report table and its four renderings (Markdown, CSV, LaTeX, HTML). Best and second-best values of a group are
 * marked: bold and underlined in Markdown, LaTeX and HTML (the paper colours them red and blue); CSV keeps the plain
 * numbers and adds a `marks` column so spreadsheets stay numeric. With `{ ci: true }` a value cell also shows its
 * spread (± the standard deviation over seeds, or [low, high] the bootstrap interval); CSV then adds an
 * `intervals` column.
 */
import type { Cellish, Spread } from './data';

export interface RenderOptions {
  /** Show each cell's spread where the store has one (`imiad report --ci`). */
  ci?: boolean;
}

export type Mark = 'best' | 'second';
export type Direction = 'higher' | 'lower';

export interface LabelCell {
  kind: 'label';
  text: string;
}

export interface ValueCell {
  kind: 'value';
  value: number | null;
  mark?: Mark;
  digits?: number;
  spread?: Spread;
}

export type Cell = LabelCell | ValueCell;

export interface ReportTable {
  /** The paper's table number ('VI') or a name. */
  id: string;
  /** File name stem: 'table-VI', 'table-IX-mvtec'. */
  slug: string;
  title: string;
  header: string[];
  /** An optional row of column groups above the header (datasets). */
  groups?: { label: string; span: number }[];
  rows: Cell[][];
  notes?: string[];
}

export const label = (text: string): LabelCell => ({ kind: 'label', text });
export const value = (v: number | null, digits = 3): ValueCell => ({ kind: 'value', value: v, digits });
/** An aggregated cell with its spread (shown on request). */
export const valueOf = (c: Cellish, digits = 3): ValueCell => (c.spread ? { ...value(c.value, digits), spread: c.spread } : value(c.value, digits));

/** ' ± 0.012' or ' [0.912, 0.991]'; empty without a spread. */
export function spreadText(c: ValueCell): string {
  const s = c.spread;
  if (!s || c.value === null) return '';
  const d = c.digits ?? 3;
  return s.kind === 'std' ? ` ± ${s.std.toFixed(d)}` : ` [${s.low.toFixed(d)}, ${s.high.toFixed(d)}]`;
}

export function formatValue(c: ValueCell): string {
  if (c.value === null || !Number.isFinite(c.value)) return '-';
  return c.value.toFixed(c.digits ?? 3);
}

/**
 * Marks the best and second-best of the cells, comparing the values as displayed (so two cells that print the
 * same are tied); ties share a mark, and the second best is the next distinct value.
 */
export function markBest(cells: ValueCell[], direction: Direction): void {
  const shown = cells.filter((c) => c.value !== null && Number.isFinite(c.value)).map((c) => Number(formatValue(c)));
  const distinct = [...new Set(shown)].sort((a, b) => (direction === 'higher' ? b - a : a - b));
  if (distinct.length < 2 && cells.filter((c) => c.value !== null).length < 2) return;
  for (const c of cells) {
    if (c.value === null || !Number.isFinite(c.value)) continue;
    const v = Number(formatValue(c));
    if (v === distinct[0]) c.mark = 'best';
    else if (distinct.length > 1 && v === distinct[1]) c.mark = 'second';
  }
}

/** Marks down each column `col` over the rows in `rowIndices`. */
export function markColumn(table: ReportTable, col: number, rowIndices: number[], direction: Direction): void {
  const cells = rowIndices.map((r) => table.rows[r][col]).filter((c): c is ValueCell => c?.kind === 'value');
  markBest(cells, direction);
}

/** Marks along row `row` over the columns in `cols`. */
export function markRow(table: ReportTable, row: number, cols: number[], direction: Direction): void {
  const cells = cols.map((c) => table.rows[row][c]).filter((c): c is ValueCell => c?.kind === 'value');
  markBest(cells, direction);
}

function cellText(c: Cell, opts: RenderOptions = {}): string {
  return c.kind === 'label' ? c.text : `${formatValue(c)}${opts.ci ? spreadText(c) : ''}`;
}

export function toMarkdown(t: ReportTable, opts: RenderOptions = {}): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|');
  const header = t.groups ? t.header.map((h, i) => `${groupOf(t, i)}${h}`) : t.header;
  const lines = [`**Table ${t.id}.** ${t.title}`, '', `| ${header.map(esc).join(' | ')} |`, `|${header.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`];
  for (const row of t.rows) {
    lines.push(
      `| ${row
        .map((c) => {
          const s = esc(cellText(c, opts));
          return c.kind === 'value' && c.mark === 'best' ? `**${s}**` : c.kind === 'value' && c.mark === 'second' ? `<u>${s}</u>` : s;
        })
        .join(' | ')} |`,
    );
  }
  for (const n of t.notes ?? []) lines.push('', `_${n}_`);
  return `${lines.join('\n')}\n`;
}

/** Header prefix 'MVTec AD ' for a column inside a group, for the one-row formats. */
function groupOf(t: ReportTable, col: number): string {
  let start = 0;
  for (const g of t.groups ?? []) {
    if (col >= start && col < start + g.span) return g.label ? `${g.label} ` : '';
    start += g.span;
  }
  return '';
}

export function toCsv(t: ReportTable, opts: RenderOptions = {}): string {
  const q = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const header = t.header.map((h, i) => `${groupOf(t, i)}${h}`);
  const lines = [[...header, 'marks', ...(opts.ci ? ['intervals'] : [])].map(q).join(',')];
  for (const row of t.rows) {
    const marks = row
      .map((c, i) => (c.kind === 'value' && c.mark ? `${header[i]}:${c.mark}` : ''))
      .filter(Boolean)
      .join('; ');
    const intervals = row
      .map((c, i) => (c.kind === 'value' && spreadText(c) ? `${header[i]}:${spreadText(c)}` : ''))
      .filter(Boolean)
      .join(';');
    lines.push([...row.map((c) => (c.kind === 'value' ? (c.value === null ? '' : formatValue(c)) : c.text)), marks, ...(opts.ci ? [intervals] : [])].map(q).join(','));
  }
  return `${lines.join('\n')}\n`;
}

export function toLatex(t: ReportTable, opts: RenderOptions = {}): string {
  const esc = (s: string): string => s.replace(/\\/g, '\\textbackslash{}').replace(/([&%$#_{}])/g, '\\$1').replace(/~/g, '\\textasciitilde{}').replace(/\^/g, '\\textasciicircum{}');
  const cols = t.header.map((_, i) => (i === 0 || t.rows.every((r) => r[i]?.kind === 'label') ? 'l' : 'r')).join('');
  const lines = ['\\begin{table}[t]', '\\centering', `\\caption{${esc(t.title)}}`, `\\label{tab:${t.slug}}`, `\\begin{tabular}{${cols}}`, '\\hline'];
  if (t.groups) lines.push(`${t.groups.map((g) => (g.span === 1 ? esc(g.label) : `\\multicolumn{${g.span}}{c}{${esc(g.label)}}`)).join(' & ')} \\\\`);
  lines.push(`${t.header.map(esc).join(' & ')} \\\\`, '\\hline');
  for (const row of t.rows) {
    lines.push(
      `${row
        .map((c) => {
          const s = esc(cellText(c, opts));
          return c.kind === 'value' && c.mark === 'best' ? `\\textbf{${s}}` : c.kind === 'value' && c.mark === 'second' ? `\\underline{${s}}` : s;
        })
        .join(' & ')} \\\\`,
    );
  }
  lines.push('\\hline', '\\end{tabular}');
  for (const n of t.notes ?? []) lines.push(`\\\\[2pt]{\\footnotesize ${esc(n)}}`);
  lines.push('\\end{table}');
  return `${lines.join('\n')}\n`;
}

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function toHtml(t: ReportTable, opts: RenderOptions = {}): string {
  const out = [`<table id="${escapeHtml(t.slug)}" class="result-table">`, `<caption><b>Table ${escapeHtml(t.id)}.</b> ${escapeHtml(t.title)}</caption>`, '<thead>'];
  if (t.groups) out.push(`<tr>${t.groups.map((g) => `<th colspan="${g.span}">${escapeHtml(g.label)}</th>`).join('')}</tr>`);
  out.push(`<tr>${t.header.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>`, '</thead>', '<tbody>');
  for (const row of t.rows) {
    out.push(
      `<tr>${row
        .map((c) => {
          if (c.kind === 'label') return `<th scope="row">${escapeHtml(c.text)}</th>`;
          const s = escapeHtml(cellText(c, opts));
          if (c.mark === 'best') return `<td class="best"><strong>${s}</strong></td>`;
          if (c.mark === 'second') return `<td class="second"><u>${s}</u></td>`;
          return `<td>${s}</td>`;
        })
        .join('')}</tr>`,
    );
  }
  out.push('</tbody>', '</table>');
  for (const n of t.notes ?? []) out.push(`<p class="note">${escapeHtml(n)}</p>`);
  return out.join('\n');
}
