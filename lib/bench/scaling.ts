/**
 * Scaling curves: how a kernel's time grows with the work. The growth exponent is the least-squares slope of
 * log(time) against log(size) over the sweep's points (time ~ size^exponent), and the curve is a log-log plot of the
 * median time per contender, drawn as SVG (PNG through sharp) and embedded in the HTML page of `imiad bench`.
 */
import { PALETTE, svgOpen } from '../report/figures';
import { escapeHtml as escapeXml } from '../report/table';
import type { Spread } from './common';

/** One contender's medians over the sweep. */
export interface Series {
  name: string;
  points: Array<{ size: number; ms: number }>;
}

export interface Growth {
  /** The fitted exponent b of time ~ a * size^b, or null with fewer than two sizes. */
  exponent: number | null;
  /** R^2 of the fit in log-log space (null with fewer than three sizes: two points fit exactly). */
  r2: number | null;
  points: number;
}

/** Least-squares fit of log(ms) = log(a) + b log(size) over the points with positive size and time. */
export function growthExponent(points: Array<{ size: number; ms: number }>): Growth {
  const p = points.filter((q) => q.size > 0 && q.ms > 0 && Number.isFinite(q.ms));
  const sizes = new Set(p.map((q) => q.size));
  if (sizes.size < 2) return { exponent: null, r2: null, points: p.length };
  const xs = p.map((q) => Math.log(q.size));
  const ys = p.map((q) => Math.log(q.ms));
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < xs.length; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
    syy += (ys[i] - my) ** 2;
  }
  const exponent = sxy / sxx;
  const r2 = sizes.size < 3 ? null : syy === 0 ? 1 : (sxy * sxy) / (sxx * syy);
  return { exponent, r2, points: p.length };
}

/** "~ N^1.02" for tables and legends. */
export function formatGrowth(g: Growth, variable = 'N'): string {
  return g.exponent === null ? 'n/a (one size)' : `~ ${variable}^${g.exponent.toFixed(2)}${g.r2 === null ? '' : ` (R^2 ${g.r2.toFixed(3)})`}`;
}

/** Medians of every contender across the sweep, in contender order of first appearance. */
export function seriesOf(points: Array<{ size: number; contenders: Record<string, Spread> }>): Series[] {
  const names = [...new Set(points.flatMap((p) => Object.keys(p.contenders)))];
  return names.map((name) => ({
    name,
    points: points.filter((p) => p.contenders[name]).map((p) => ({ size: p.size, ms: p.contenders[name].median })),
  }));
}

/** Powers of ten covering [lo, hi] (at least one step), for log axes. */
function decades(lo: number, hi: number): number[] {
  const a = Math.floor(Math.log10(lo));
  const b = Math.max(a + 1, Math.ceil(Math.log10(hi)));
  return Array.from({ length: b - a + 1 }, (_, i) => 10 ** (a + i));
}

const tick = (v: number): string => (v >= 1e6 ? `${v / 1e6}M` : v >= 1e3 ? `${v / 1e3}k` : String(v));

/**
 * A log-log plot of time against size, one line with markers per series, the legend giving each series' fitted
 * exponent. Self-contained SVG (no fonts or scripts fetched).
 */
export function scalingSvg(title: string, xLabel: string, series: Series[], variable = 'N'): string {
  const W = 640;
  const H = 420;
  const m = { left: 70, right: 20, top: 40, bottom: 110 };
  const all = series.flatMap((s) => s.points).filter((p) => p.size > 0 && p.ms > 0);
  const xs = all.map((p) => p.size);
  const ys = all.map((p) => p.ms);
  const xTicks = all.length ? decades(Math.min(...xs), Math.max(...xs)) : [1, 10];
  const yTicks = all.length ? decades(Math.min(...ys), Math.max(...ys)) : [1, 10];
  const [x0, x1] = [Math.log10(xTicks[0]), Math.log10(xTicks[xTicks.length - 1])];
  const [y0, y1] = [Math.log10(yTicks[0]), Math.log10(yTicks[yTicks.length - 1])];
  const px = (v: number): number => m.left + ((Math.log10(v) - x0) / (x1 - x0)) * (W - m.left - m.right);
  const py = (v: number): number => H - m.bottom - ((Math.log10(v) - y0) / (y1 - y0)) * (H - m.top - m.bottom);
  const f = (v: number): string => v.toFixed(1);
  const out: string[] = [
    svgOpen(W, H, title).trimEnd(),
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
  ];
  for (const t of xTicks) {
    out.push(`<line x1="${f(px(t))}" y1="${m.top}" x2="${f(px(t))}" y2="${H - m.bottom}" stroke="#ddd"/>`);
    out.push(`<text x="${f(px(t))}" y="${H - m.bottom + 16}" text-anchor="middle">${tick(t)}</text>`);
  }
  for (const t of yTicks) {
    out.push(`<line x1="${m.left}" y1="${f(py(t))}" x2="${W - m.right}" y2="${f(py(t))}" stroke="#ddd"/>`);
    out.push(`<text x="${m.left - 6}" y="${f(py(t) + 4)}" text-anchor="end">${tick(t)}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${W - m.left - m.right}" height="${H - m.top - m.bottom}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - m.bottom + 36}" text-anchor="middle">${escapeXml(xLabel)} (log)</text>`);
  out.push(`<text transform="translate(16 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">time, ms (log)</text>`);
  series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const pts = s.points.filter((p) => p.size > 0 && p.ms > 0);
    if (pts.length > 1) out.push(`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${pts.map((p) => `${f(px(p.size))},${f(py(p.ms))}`).join(' ')}"/>`);
    for (const p of pts) out.push(`<circle cx="${f(px(p.size))}" cy="${f(py(p.ms))}" r="3.5" fill="${colour}"/>`);
    const lx = m.left + (i % 2) * 280;
    const ly = H - m.bottom + 58 + Math.floor(i / 2) * 18;
    out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 20}" y2="${ly - 4}" stroke="${colour}" stroke-width="2"/>`);
    out.push(`<text x="${lx + 26}" y="${ly}">${escapeXml(`${s.name} ${formatGrowth(growthExponent(pts), variable)}`)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
