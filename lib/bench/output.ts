/**
 * What `imiad bench` writes: the table of each kernel (text and HTML), its JSON, its curve as SVG and PNG, and one
 * HTML page (index.html) with every kernel's table and curve found in the output folder.
 */
import * as fs from 'fs';
import * as path from 'path';

import sharp from 'sharp';

import { escapeHtml } from '../report/table';
import { formatSpread, formatTable, type Row } from './common';
import { formatGrowth, scalingSvg, seriesOf } from './scaling';
import { BENCH_KERNELS, type BenchResult } from './suite';

/** One row per size: each contender's time (median (min-max) ms), each peer's time over imiad's, the checks. */
export function resultRows(r: BenchResult): Row[] {
  return r.points.map((p) => {
    const row: Row = { [r.size]: p.size };
    for (const [name, ms] of Object.entries(p.contenders)) row[`${name} ms`] = formatSpread(ms);
    for (const [name, s] of Object.entries(p.speedup)) row[`${name} / imiad`] = formatSpread(s);
    for (const [name, v] of Object.entries(p.checks)) row[name] = typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v;
    return row;
  });
}

export function growthLine(r: BenchResult): string {
  return `growth (time ~ ${r.variable}^b, least squares over the sizes): ${Object.entries(r.growth).map(([name, g]) => `${name} ${formatGrowth(g, r.variable)}`).join('; ')}`;
}

function loadLine(r: BenchResult): string {
  const l = r.load;
  return `load average ${l.loadStart[0].toFixed(2)} -> ${l.loadEnd[0].toFixed(2)} on ${l.cores} cores; other processes ${l.otherCores === null ? 'unknown' : `${l.otherCores.toFixed(2)} cores`} over ${l.seconds.toFixed(0)} s${l.busy ? ' (BUSY machine: not quiet-machine figures)' : ''}`;
}

const peerNote = (r: BenchResult): string[] =>
  r.peers.map((p) => (p.found ? `peer ${p.name}: ran` : `peer ${p.name}: skipped (${p.reason})${p.install ? `; to run it: ${p.install}` : ''}`));

/** The readable output of one kernel: title, table, growth, peers, load. */
export function formatResult(r: BenchResult): string {
  const title = `${r.title}: median (min-max) of ${r.repeats} interleaved rounds; peer / imiad > 1: imiad faster`;
  return [formatTable(title, resultRows(r)).trimEnd(), growthLine(r), ...peerNote(r), ...r.notes, loadLine(r), ''].join('\n');
}

export function curveSvg(r: BenchResult): string {
  return scalingSvg(`${r.kernel}: ${r.title}`.slice(0, 90), r.size, seriesOf(r.points), r.variable);
}

export interface KernelFiles {
  json: string;
  svg: string;
  /** null when sharp could not render the SVG (the reason in pngError). */
  png: string | null;
  pngError?: string;
}

/** <out>/<kernel>.json, .svg and .png. */
export async function writeKernelFiles(r: BenchResult, out: string, extra: object): Promise<KernelFiles> {
  fs.mkdirSync(out, { recursive: true });
  const json = path.join(out, `${r.kernel}.json`);
  const svg = path.join(out, `${r.kernel}.svg`);
  const png = path.join(out, `${r.kernel}.png`);
  fs.writeFileSync(json, `${JSON.stringify({ ...extra, ...r }, null, 2)}\n`);
  const text = curveSvg(r);
  fs.writeFileSync(svg, text);
  try {
    await sharp(Buffer.from(text)).png().toFile(png);
    return { json, svg, png };
  } catch (err) {
    return { json, svg, png: null, pngError: (err as Error).message };
  }
}

function htmlTable(rows: Row[]): string {
  if (rows.length === 0) return '<p>no sizes measured</p>';
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: Row[string] | undefined): string => escapeHtml(v === null || v === undefined ? '-' : String(v));
  return [
    '<table>',
    `<thead><tr>${cols.map((c) => `<th>${escapeHtml(c)}</th>`).join('')}</tr></thead>`,
    '<tbody>',
    ...rows.map((r) => `<tr>${cols.map((c) => `<td>${cell(r[c])}</td>`).join('')}</tr>`),
    '</tbody>',
    '</table>',
  ].join('\n');
}

/**
 * <out>/index.html: every kernel whose <kernel>.json is in `out` (this run's and earlier runs' into the same
 * folder), in the order of BENCH_KERNELS, each with its table, growth, peers, load and curve.
 */
export function writeIndexHtml(out: string): string {
  const sections: string[] = [];
  for (const kernel of BENCH_KERNELS) {
    const file = path.join(out, `${kernel}.json`);
    if (!fs.existsSync(file)) continue;
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as BenchResult & { machine?: { cpu: string; cores: number }; measuredAt?: string };
    sections.push(
      [
        `<section id="${kernel}">`,
        `<h2>${escapeHtml(kernel)}: ${escapeHtml(r.title)}</h2>`,
        `<p>median (min-max) of ${r.repeats} interleaved rounds, ms; peer / imiad &gt; 1: imiad faster${r.machine ? `; ${escapeHtml(r.machine.cpu)}, ${r.machine.cores} cores` : ''}${r.measuredAt ? `; measured ${escapeHtml(r.measuredAt)}` : ''}</p>`,
        htmlTable(resultRows(r)),
        `<p>${escapeHtml(growthLine(r))}</p>`,
        `<ul>${[...peerNote(r), ...r.notes, loadLine(r)].map((l) => `<li>${escapeHtml(l)}</li>`).join('')}</ul>`,
        curveSvg(r),
        '</section>',
      ].join('\n'),
    );
  }
  const html = [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8"><title>imiad bench</title>',
    '<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>',
    '</head><body>',
    '<h1>imiad bench</h1>',
    ...sections,
    '</body></html>',
    '',
  ].join('\n');
  const file = path.join(out, 'index.html');
  fs.writeFileSync(file, html);
  return file;
}
