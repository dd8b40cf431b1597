/**
 * The paper's figures as hand-written SVG: Fig. 2 (image AUROC against inference time per image, circle area
 * proportional to the fitted state's memory), Fig. 4 (few-shot curves) and Fig. 3 (image, ground truth and each
 * method's anomaly-map overlay). PNG copies come from sharp rendering the same SVG.
 */
import * as fs from 'fs';
import * as path from 'path';

import type { ResultRow } from '../runner/types';
import { aggregate, DATASET_TITLES, datasetsOf, efficiency, isSetting, metric, methodsOf, select, type ReportData } from './data';
import { escapeHtml as esc } from './table';

export interface Figure {
  /** 'fig2-mvtec' */
  slug: string;
  title: string;
  svg: string;
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const FONT = 'font-family="DejaVu Sans, Arial, Helvetica, sans-serif"';
const fmt = (v: number): string => (Number.isInteger(v) ? String(v) : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2));

export function svgOpen(width: number, height: number, title: string): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">\n` +
    `<title>${esc(title)}</title>\n<rect width="${width}" height="${height}" fill="#ffffff"/>\n`
  );
}

/** About five round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((s) => s * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

interface Axes {
  x: (v: number) => number;
  y: (v: number) => number;
  svg: string;
}

function axes(o: { left: number; top: number; width: number; height: number; xLo: number; xHi: number; yLo: number; yHi: number; xLog: boolean; xLabel: string; yLabel: string; xTicks?: { v: number; text: string }[] }): Axes {
  const tx = o.xLog ? Math.log10 : (v: number): number => v;
  const x0 = tx(o.xLo);
  const x1 = tx(o.xHi);
  const x = (v: number): number => o.left + ((tx(v) - x0) / (x1 - x0 || 1)) * o.width;
  const y = (v: number): number => o.top + o.height - ((v - o.yLo) / (o.yHi - o.yLo || 1)) * o.height;
  const parts: string[] = [];
  parts.push(`<rect x="${o.left}" y="${o.top}" width="${o.width}" height="${o.height}" fill="none" stroke="#333"/>`);
  for (const v of niceTicks(o.yLo, o.yHi)) {
    parts.push(`<line x1="${o.left}" x2="${o.left + o.width}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${o.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`);
  }
  let xt = o.xTicks;
  if (!xt) {
    if (o.xLog) {
      xt = [];
      for (let e = Math.floor(Math.log10(o.xLo)); e <= Math.ceil(Math.log10(o.xHi)); e++) for (const m of [1, 2, 5]) {
        const v = m * 10 ** e;
        if (v >= o.xLo && v <= o.xHi) xt.push({ v, text: fmt(v) });
      }
    } else xt = niceTicks(o.xLo, o.xHi).map((v) => ({ v, text: fmt(v) }));
  }
  for (const t of xt) {
    parts.push(`<line x1="${x(t.v).toFixed(1)}" x2="${x(t.v).toFixed(1)}" y1="${o.top}" y2="${o.top + o.height}" stroke="#eee"/>`);
    parts.push(`<text x="${x(t.v).toFixed(1)}" y="${o.top + o.height + 16}" text-anchor="middle">${esc(t.text)}</text>`);
  }
  parts.push(`<text x="${o.left + o.width / 2}" y="${o.top + o.height + 34}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(${o.left - 42},${o.top + o.height / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  return { x, y, svg: parts.join('\n') };
}

/** Fig. 2, one per dataset with vanilla results that carry inference times. */
export function accuracyEfficiencyFigures(data: ReportData): Figure[] {
  const rows = select(data, isSetting('vanilla'));
  const out: Figure[] = [];
  for (const d of datasetsOf(rows)) {
    const dr = rows.filter((r) => r.config.dataset === d);
    const points = methodsOf(data, dr)
      .map((m) => {
        const mr = dr.filter((r) => data.label.get(r) === m);
        return { m, t: aggregate(mr, efficiency('inferenceMsPerImage')).value, acc: aggregate(mr, metric('imageAUROC')).value, mem: aggregate(mr, efficiency('memoryBytes')).value ?? 0 };
      })
      .filter((p): p is { m: string; t: number; acc: number; mem: number } => p.t !== null && p.t > 0 && p.acc !== null);
    if (!points.length) continue;
    const title = `Fig. 2 (${DATASET_TITLES[d] ?? d}): image AUROC vs inference time per image; circle area = memory of the fitted state`;
    const W = 720;
    const H = 420;
    const tLo = Math.min(...points.map((p) => p.t));
    const tHi = Math.max(...points.map((p) => p.t));
    const xLog = tHi / tLo > 10;
    const pad = xLog ? 1.6 : Math.max((tHi - tLo) * 0.15, tHi * 0.1);
    const xLo = xLog ? tLo / pad : Math.max(0, tLo - pad);
    const xHi = xLog ? tHi * pad : tHi + pad;
    const aLo = Math.min(...points.map((p) => p.acc));
    const yLo = Math.max(0, Math.floor((aLo - 0.05) * 20) / 20);
    const ax = axes({ left: 64, top: 40, width: W - 260, height: H - 100, xLo, xHi, yLo, yHi: 1, xLog, xLabel: `inference time per image (ms${xLog ? ', log scale' : ''})`, yLabel: 'image AUROC' });
    const maxMem = Math.max(...points.map((p) => p.mem), 1);
    const parts = [svgOpen(W, H, title), `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(`${DATASET_TITLES[d] ?? d}: image AUROC vs inference time (circle area ∝ memory)`)}</text>`, ax.svg];
    points.forEach((p, i) => {
      const r = Math.max(3, 30 * Math.sqrt(p.mem / maxMem));
      const cx = ax.x(p.t).toFixed(1);
      const cy = ax.y(p.acc).toFixed(1);
      parts.push(`<circle class="point" cx="${cx}" cy="${cy}" r="${r.toFixed(1)}" fill="${PALETTE[i % PALETTE.length]}" fill-opacity="0.45" stroke="${PALETTE[i % PALETTE.length]}"><title>${esc(`${p.m}: AUROC ${p.acc.toFixed(3)}, ${fmt(p.t)} ms/image, ${(p.mem / 2 ** 20).toFixed(1)} MiB`)}</title></circle>`);
      parts.push(`<text x="${cx}" y="${(Number(cy) + 4).toFixed(1)}" text-anchor="middle" font-size="11">${esc(p.m)}</text>`);
    });
    points.forEach((p, i) => {
      const ly = 50 + i * 18;
      parts.push(`<circle cx="${W - 180}" cy="${ly}" r="5" fill="${PALETTE[i % PALETTE.length]}"/><text x="${W - 170}" y="${ly + 4}">${esc(`${p.m} ${(p.mem / 2 ** 20).toFixed(1)} MiB`)}</text>`);
    });
    parts.push('</svg>\n');
    out.push({ slug: `fig2-${d}`, title, svg: parts.join('\n') });
  }
  return out;
}

/** Fig. 4, one per dataset: image AUROC against the number of shots (no augmentation), a line per method. */
export function fewshotFigures(data: ReportData): Figure[] {
  const rows = select(data, (r) => r.config.setting.name === 'fewshot' && r.config.setting.augment === null);
  const shotsOf = (r: ResultRow): number => (r.config.setting.name === 'fewshot' ? r.config.setting.shots : 0);
  const out: Figure[] = [];
  for (const d of datasetsOf(rows)) {
    const dr = rows.filter((r) => r.config.dataset === d);
    const shots = [...new Set(dr.map(shotsOf))].sort((a, b) => a - b);
    const series = methodsOf(data, dr).map((m) => ({
      m,
      values: shots.map((k) => aggregate(dr.filter((r) => data.label.get(r) === m && shotsOf(r) === k), metric('imageAUROC')).value),
    }));
    const all = series.flatMap((s) => s.values).filter((v): v is number => v !== null);
    if (!all.length) continue;
    const title = `Fig. 4 (${DATASET_TITLES[d] ?? d}): few-shot image AUROC against the number of shots`;
    const W = 640;
    const H = 400;
    const yLo = Math.max(0, Math.floor((Math.min(...all) - 0.05) * 20) / 20);
    const ax = axes({
      left: 64, top: 40, width: W - 200, height: H - 100, xLo: -0.5, xHi: shots.length - 0.5, yLo, yHi: 1, xLog: false,
      xLabel: 'shots (normal training images)', yLabel: 'image AUROC', xTicks: shots.map((k, i) => ({ v: i, text: String(k) })),
    });
    const parts = [svgOpen(W, H, title), `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(`${DATASET_TITLES[d] ?? d}: few-shot image AUROC`)}</text>`, ax.svg];
    series.forEach((s, i) => {
      const colour = PALETTE[i % PALETTE.length];
      const pts = s.values.map((v, j) => (v === null ? null : `${ax.x(j).toFixed(1)},${ax.y(v).toFixed(1)}`)).filter((p): p is string => p !== null);
      parts.push(`<polyline class="series" points="${pts.join(' ')}" fill="none" stroke="${colour}" stroke-width="2"/>`);
      for (const p of pts) parts.push(`<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3.5" fill="${colour}"/>`);
      const ly = 50 + i * 18;
      parts.push(`<line x1="${W - 128}" x2="${W - 112}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="2"/><text x="${W - 106}" y="${ly + 4}">${esc(s.m)}</text>`);
    });
    parts.push('</svg>\n');
    out.push({ slug: `fig4-${d}`, title, svg: parts.join('\n') });
  }
  return out;
}

function dataUri(file: string): string | null {
  try {
    return `data:image/png;base64,${fs.readFileSync(file).toString('base64')}`;
  } catch {
    return null;
  }
}

/**
 * Fig. 3, one per dataset: for the first category (code-point order) with saved heatmaps in the vanilla setting,
 * a column per heatmap sample; rows: image, ground truth, then each method's overlay (lowest seed). The PNGs are
 * embedded as data URIs so the SVG stands alone.
 */
export function heatmapFigures(data: ReportData, storeDir: string): Figure[] {
  const rows = select(data, (r) => r.config.setting.name === 'vanilla' && r.heatmaps.length > 0);
  const out: Figure[] = [];
  for (const d of datasetsOf(rows)) {
    const dr = rows.filter((r) => r.config.dataset === d);
    const category = [...new Set(dr.map((r) => r.config.category))].sort()[0];
    const cr = dr.filter((r) => r.config.category === category).sort((a, b) => a.config.seed - b.config.seed);
    const methods = methodsOf(data, cr);
    const byMethod = methods.map((m) => cr.find((r) => data.label.get(r) === m)!);
    const samples = byMethod[0].heatmaps.map((h) => h.sample);
    const cell = 112;
    const left = 110;
    const top = 48;
    const W = left + samples.length * (cell + 8) + 10;
    const H = top + (2 + methods.length) * (cell + 8) + 10;
    const title = `Fig. 3 (${DATASET_TITLES[d] ?? d}, ${category}): test image, ground truth and anomaly maps per method`;
    const parts = [svgOpen(W, H, title), `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(`${DATASET_TITLES[d] ?? d} / ${category}`)}</text>`];
    const rowLabels = ['Image', 'Ground truth', ...methods];
    rowLabels.forEach((labelText, ri) => parts.push(`<text x="${left - 8}" y="${top + ri * (cell + 8) + cell / 2 + 4}" text-anchor="end">${esc(labelText)}</text>`));
    samples.forEach((sample, ci) => {
      const x = left + ci * (cell + 8);
      const first = byMethod[0].heatmaps[ci];
      parts.push(`<text x="${x + cell / 2}" y="${top - 8}" text-anchor="middle" font-size="11">${esc(first.defectType)}</text>`);
      const images: (string | null)[] = [
        dataUri(path.join(storeDir, first.image)),
        first.mask ? dataUri(path.join(storeDir, first.mask)) : null,
        ...byMethod.map((r) => {
          const h = r.heatmaps.find((x2) => x2.sample === sample);
          return h ? dataUri(path.join(storeDir, h.overlay)) : null;
        }),
      ];
      images.forEach((uri, ri) => {
        const y = top + ri * (cell + 8);
        if (uri) parts.push(`<image class="heatmap" x="${x}" y="${y}" width="${cell}" height="${cell}" href="${uri}" xlink:href="${uri}"/>`);
        else parts.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${ri === 1 ? '#000' : '#ccc'}"/>`);
        parts.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="none" stroke="#888"/>`);
      });
    });
    parts.push('</svg>\n');
    out.push({ slug: `fig3-${d}`, title, svg: parts.join('\n') });
  }
  return out;
}
