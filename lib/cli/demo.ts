/**
 * `imiad demo [--out DIR] [--small]`: the whole pipeline on embedded data, no arguments needed. Generates a small
 * synthetic MVTec-layout dataset, builds the default backbone, runs PatchCore, PaDiM and SPADE in the vanilla,
 * few-shot and noisy settings through the grid into a results store, writes the HTML report and prints the main
 * table. Everything lives under DIR (default ./imiad-demo); a rerun reuses the dataset and skips stored results.
 */
import * as fs from 'fs';
import * as path from 'path';

import type { Command } from 'commander';

import { defaultBackboneFile } from '../backbone/builder';
import { loadDataset } from '../datasets';
import { synthesize } from '../datasets/synth';
import { comparisonLine, toMarkdown, writeReport, type ReportFiles } from '../report';
import { gridConfig } from '../runner/config';
import { createExecutor } from '../runner/executor';
import { describeExperiment, expandGrid, runGrid, type GridSummary } from '../runner/grid';
import { abortOnInterrupt } from '../runner/interrupt';
import { ResultsStore } from '../runner/store';
import type { ResultRow } from '../runner/types';
import { settingLabel } from '../settings';
import { action } from './action';
import { applyComputeOptions, DEVICE_HELP, QUIET_HELP } from './compute-options';
import { progress } from './progress';

/** Sizes chosen so that `npm run demo` stays well under 3 minutes on the shared 2-core machine (README, "Demo"). */
export const DEMO_DATA = { categories: 3, size: 128, train: 20, test: 20, seed: 0 };
/** `--small` (the test): fewer, smaller images; the same grid. */
export const DEMO_DATA_SMALL = { categories: 2, size: 64, train: 6, test: 6, seed: 0 };
export const DEMO_METHODS = ['patchcore', 'padim', 'spade'];
/** Few-shot without augmentation at 1, 2 and 4 shots (Fig. 4's curves) and at 2 shots with rotated copies (Table IX). */
export const DEMO_SETTINGS = [
  { name: 'vanilla' },
  { name: 'fewshot', shots: [1, 2, 4] },
  { name: 'fewshot', shots: 2, augment: 'rotation', augmentCount: 2 },
  { name: 'noisy', noise: 0.1 },
];

export interface DemoOptions {
  out: string;
  small?: boolean;
  /** Messages (progress lines) go here; default stderr. */
  log?: (line: string) => void;
}

export interface DemoResult {
  store: string;
  report: ReportFiles;
  summary: GridSummary;
  rows: ResultRow[];
  /** The printed text: the main table (Table VI), the per-setting image AUROC and the report's path. */
  text: string;
}

/** The synthetic dataset, written once: into a temporary sibling and renamed, so an interrupted demo leaves none. */
async function demoDataset(dir: string, small: boolean, log: (line: string) => void): Promise<void> {
  if (fs.existsSync(dir)) return;
  const tmp = `${dir}.${process.pid}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const sizes = small ? DEMO_DATA_SMALL : DEMO_DATA;
  let bar: ReturnType<typeof progress> | undefined;
  await synthesize('mvtec', tmp, {
    ...sizes,
    onProgress: (done, total) => {
      bar ??= progress('synthetic dataset', total);
      bar.update(done, total);
    },
  });
  bar?.done();
  fs.renameSync(tmp, dir);
  log(`dataset: ${sizes.categories} synthetic MVTec-layout categories, ${sizes.train} training and ${sizes.test} test images of ${sizes.size} px each, in ${dir}`);
}

/** Image AUROC per method (rows) and setting (columns), mean over categories: the demo's one-glance summary. */
function settingSummary(rows: ResultRow[]): string {
  const methods = [...new Set(rows.map((r) => r.config.method))];
  const settings = [...new Set(rows.map((r) => settingLabel(r.config.setting)))];
  const cell = (m: string, s: string, metric: string): string => {
    const v = rows.filter((r) => r.config.method === m && settingLabel(r.config.setting) === s).map((r) => r.metrics[metric]).filter((x): x is number => typeof x === 'number');
    return v.length ? (v.reduce((a, b) => a + b, 0) / v.length).toFixed(3) : '-';
  };
  const header = ['method', ...settings.map((s) => `${s} img/px AUROC`)];
  const body = methods.map((m) => [m, ...settings.map((s) => `${cell(m, s, 'imageAUROC')} / ${cell(m, s, 'pixelAUROC')}`)]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (c: string[]): string => c.map((x, i) => x.padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const out = path.resolve(opts.out);
  fs.mkdirSync(out, { recursive: true });
  const small = opts.small === true;
  const dataDir = path.join(out, small ? 'data-small' : 'data');
  await demoDataset(dataDir, small, log);
  log(`backbone: ${defaultBackboneFile()} (imiad's seeded ResNet-18-shaped network, not pretrained)`);

  const size = (small ? DEMO_DATA_SMALL : DEMO_DATA).size;
  const config = gridConfig(
    {
      store: small ? 'results-small.db' : 'results.db',
      datasets: [{ name: 'mvtec', root: dataDir }],
      // The images are small: the backbone sees them at their own size instead of 256 -> 224.
      methods: DEMO_METHODS.map((name) => ({ name, params: { imageSize: size, cropSize: size } })),
      settings: DEMO_SETTINGS,
      seeds: [0],
    },
    out,
    'imiad demo',
  );
  const store = new ResultsStore(config.store);
  try {
    const { experiments, invalid } = await expandGrid(config, (name, root, o) => loadDataset(name, root, o), (key) => store.heatmapDir(key));
    for (const bad of invalid) log(`skipping ${describeExperiment(bad.config)}: ${bad.reason}`);
    const interrupt = abortOnInterrupt(() => log('\nimiad demo: stopping after the running experiment (Ctrl-C again to quit at once); a rerun resumes'));
    let bar: ReturnType<typeof progress> | undefined;
    let finished = 0;
    const summary = await runGrid(experiments, store, createExecutor(), {
      signal: interrupt.signal,
      onUpdate: (s) => {
        bar ??= progress('experiments', s.total);
        bar.update(s.done + s.failed, s.total, `(${s.running} running)`);
      },
      onFinished: (e, row) => {
        finished++;
        const auroc = row.metrics.imageAUROC;
        if (!process.stderr.isTTY) log(`[${finished}] ${describeExperiment(e.config)}: image AUROC ${typeof auroc === 'number' ? auroc.toFixed(3) : '-'}`);
      },
      onFailed: (e, err) => log(`${describeExperiment(e.config)} failed: ${err.message}`),
    });
    interrupt.dispose();
    bar?.done(`${summary.done} run, ${summary.skipped} already stored, ${summary.failed.length} failed`);
    if (summary.aborted) throw Object.assign(new Error(`interrupted (${summary.done} experiments stored now; run it again to resume)`), { code: 'ERR_IMIAD_ABORTED' });
    if (summary.failed.length) throw Object.assign(new Error(`imiad demo: ${summary.failed.length} experiments failed: ${summary.failed.map((f) => `${f.experiment}: ${f.error}`).join('; ')}`), { code: 'ERR_IMIAD_RUN' });

    const wanted = new Set(experiments.map((e) => e.key));
    const rows = store.rows().filter((r) => wanted.has(r.key));
    const report = await writeReport(rows, path.dirname(store.file), path.join(out, small ? 'report-small' : 'report'));
    const main = report.tables.find((t) => t.id === 'VI');
    const text = [
      main ? toMarkdown(main) : '',
      '',
      'Image / pixel AUROC by setting (mean over categories):',
      '',
      settingSummary(rows),
      '',
      // The statistical comparison over the categories (Friedman, Nemenyi; the report draws the CD diagrams).
      ...report.statistics.filter((c) => c.metric === 'imageAUROC').map(comparisonLine),
      '',
      `${rows.length} experiments in ${store.file} (${summary.done} run now, ${summary.skipped} already stored)`,
      `Report: ${report.html}`,
    ].join('\n');
    return { store: store.file, report, summary, rows, text };
  } finally {
    store.close();
  }
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('Run PatchCore, PaDiM and SPADE on a small synthetic dataset in the vanilla, few-shot and noisy settings and write the report')
    .option('--out <dir>', 'output folder: dataset, results store, heatmaps, report', 'imiad-demo')
    .option('--small', 'smaller images (for tests); the same grid')
    .option('--device <device>', DEVICE_HELP)
    .option('--quiet', QUIET_HELP)
    .action(
      action(async (flags: { out: string; small?: boolean }) => {
        applyComputeOptions(flags);
        try {
          const r = await runDemo({ out: flags.out, small: flags.small });
          process.stdout.write(`${r.text}\n`);
        } catch (err) {
          if ((err as { code?: string }).code !== 'ERR_IMIAD_ABORTED') throw err;
          process.stderr.write(`imiad demo: ${(err as Error).message}\n`);
          process.exitCode = 130;
        }
      }),
    );
}
