/**
 * The critical-difference diagram of Demsar (2006, Fig. 1 and 2) as SVG: an axis of average ranks (1 = best, at the
 * left), each method hanging from its average rank to its label (the better half on the left, the rest on the
 * right, so that no lines cross), the Nemenyi critical difference drawn as a bar above the axis, and thick bars
 * under the axis joining the groups of methods whose ranks differ by less than the CD (not significantly different).
 */
import { svgOpen } from '../report/figures';
import { escapeHtml as esc } from '../report/table';
import { nemenyiGroups } from './nemenyi';

export interface CdDiagramInput {
  /** Method labels, in the order of `averageRanks`. */
  methods: string[];
  averageRanks: number[];
  /** The critical difference drawn (and used for the groups). */
  cd: number;
  /** Its significance level, for the label. */
  alpha: number;
  /** The heading drawn above the diagram. */
  heading: string;
  /** The line under the diagram (test results). */
  footer?: string;
  /** The SVG's <title>. */
  title: string;
}

const CHAR_WIDTH = 7;

export function cdDiagramSvg(input: CdDiagramInput): string {
  const k = input.methods.length;
  const order = input.averageRanks.map((_, i) => i).sort((a, b) => input.averageRanks[a] - input.averageRanks[b] || a - b);
  const leftCount = Math.ceil(k / 2);
  const left = order.slice(0, leftCount);
  // Right side: the worst method nearest the top, so its line is the shortest and none cross.
  const right = order.slice(leftCount).reverse();
  const labelOf = (i: number): string => `${input.methods[i]} (${input.averageRanks[i].toFixed(2)})`;
  const textWidth = (items: number[]): number => Math.max(0, ...items.map((i) => labelOf(i).length * CHAR_WIDTH));
  const leftMargin = Math.max(120, textWidth(left) + 40);
  const rightMargin = Math.max(120, textWidth(right) + 40);
  const axisWidth = Math.max(320, 90 * (k - 1));
  const W = leftMargin + axisWidth + rightMargin;
  const x = (rank: number): number => leftMargin + ((rank - 1) / Math.max(1, k - 1)) * axisWidth;

  const groups = nemenyiGroups(input.averageRanks, input.cd);
  const top = 40;
  const cdY = top + 14;
  const axisY = cdY + 44;
  const groupTop = axisY + 14;
  const groupStep = 9;
  const labelTop = groupTop + groups.length * groupStep + 16;
  const labelStep = 22;
  const lastLabelY = labelTop + (Math.max(left.length, right.length) - 1) * labelStep;
  const H = lastLabelY + (input.footer ? 44 : 24);

  const parts = [svgOpen(W, H, input.title), `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(input.heading)}</text>`];
  // The critical difference, to scale, starting at rank 1 (drawn no longer than the axis; the label gives its value).
  const cdEnd = x(1 + Math.min(input.cd, k - 1));
  parts.push(
    `<g class="cd-bar"><line x1="${x(1)}" x2="${cdEnd.toFixed(1)}" y1="${cdY}" y2="${cdY}" stroke="#000" stroke-width="2"/>` +
      `<line x1="${x(1)}" x2="${x(1)}" y1="${cdY - 5}" y2="${cdY + 5}" stroke="#000"/><line x1="${cdEnd.toFixed(1)}" x2="${cdEnd.toFixed(1)}" y1="${cdY - 5}" y2="${cdY + 5}" stroke="#000"/>` +
      `<text x="${((x(1) + cdEnd) / 2).toFixed(1)}" y="${cdY - 8}" text-anchor="middle">${esc(`CD = ${input.cd.toFixed(2)} (α = ${input.alpha})`)}</text></g>`,
  );
  parts.push(`<line x1="${x(1)}" x2="${x(k)}" y1="${axisY}" y2="${axisY}" stroke="#000" stroke-width="1.5"/>`);
  for (let r = 1; r <= k; r++) {
    parts.push(`<line x1="${x(r)}" x2="${x(r)}" y1="${axisY - 8}" y2="${axisY}" stroke="#000"/><text x="${x(r)}" y="${axisY - 12}" text-anchor="middle">${r}</text>`);
    if (r < k) parts.push(`<line x1="${x(r + 0.5)}" x2="${x(r + 0.5)}" y1="${axisY - 4}" y2="${axisY}" stroke="#000"/>`);
  }
  groups.forEach((g, gi) => {
    const lo = input.averageRanks[g[0]];
    const hi = input.averageRanks[g[g.length - 1]];
    const y = groupTop + gi * groupStep;
    parts.push(`<line class="cd-group" x1="${(x(lo) - 4).toFixed(1)}" x2="${(x(hi) + 4).toFixed(1)}" y1="${y}" y2="${y}" stroke="#000" stroke-width="4" stroke-linecap="round"><title>${esc(`not significantly different: ${g.map((i) => input.methods[i]).join(', ')}`)}</title></line>`);
  });
  const hang = (i: number, row: number, side: 'left' | 'right'): void => {
    const y = labelTop + row * labelStep;
    const rx = x(input.averageRanks[i]).toFixed(1);
    const end = side === 'left' ? leftMargin - 16 : leftMargin + axisWidth + 16;
    parts.push(
      `<g class="cd-method"><polyline points="${rx},${axisY} ${rx},${y} ${end},${y}" fill="none" stroke="#444"/>` +
        `<text x="${side === 'left' ? end - 6 : end + 6}" y="${y + 4}" text-anchor="${side === 'left' ? 'end' : 'start'}">${esc(labelOf(i))}</text></g>`,
    );
  };
  left.forEach((i, row) => hang(i, row, 'left'));
  right.forEach((i, row) => hang(i, row, 'right'));
  if (input.footer) parts.push(`<text x="${W / 2}" y="${H - 12}" text-anchor="middle" font-size="11" fill="#444">${esc(input.footer)}</text>`);
  parts.push('</svg>\n');
  return parts.join('\n');
}
