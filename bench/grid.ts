/**
 * The runner's own overhead, without detectors: expanding a grid of hand-built categories, running it with an
 * executor that returns at once (so the time is splits + manifest JSON + one SQLite transaction per row), skipping
 * everything on a rerun, and writing the report from the full store. `npm run bench -- grid [--categories N]
 * [--seeds S] [--repeats 3]`. With --queue: the grid on a BullMQ queue against the local grid (bench/grid-queue.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { Category, Sample } from '../lib/datasets/types';
import { writeReport } from '../lib/report';
import { parseGridConfig } from '../lib/runner/config';
import { expandGrid, runGrid } from '../lib/runner/grid';
import { ResultsStore } from '../lib/runner/store';
import { formatSpread, intFlag, machineInfo, measureInterleaved, printTable, type Row, spreadOf, timed, watchLoad, writeJson } from './common';
import { main as queueBenchmark } from './grid-queue';

function category(name: string): Category {
  const root = `/bench/${name}`;
  const s = (p: string, label: Sample['label'], defectType: string, split: Sample['split'], maskPaths: string[] = []): Sample => ({ path: `${root}/${p}`, maskPaths, label, defectType, split });
  return {
    name,
    root,
    samples: [
      ...Array.from({ length: 200 }, (_, i) => s(`train/good/${i}.png`, 'normal', 'good', 'train')),
      ...Array.from({ length: 40 }, (_, i) => s(`test/good/${i}.png`, 'normal', 'good', 'test')),
      ...Array.from({ length: 80 }, (_, i) => s(`test/d${i % 4}/${i}.png`, 'anomaly', `d${i % 4}`, 'test', [`${root}/ground_truth/d${i % 4}/${i}_mask.png`])),
    ],
  };
}

/** One full pass in a fresh folder: expand, run, rerun (all skipped), report. */
async function once(count: number, seeds: number): Promise<Record<string, number>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-grid-'));
  try {
    const categories = Array.from({ length: count }, (_, i) => category(`c${i}`));
    const config = parseGridConfig(
      JSON.stringify({
        store: path.join(dir, 'results.db'),
        concurrency: 2,
        datasets: [{ name: 'mvtec', root: '/bench' }],
        methods: ['patchcore', 'padim', 'spade', 'dne'],
        settings: ['vanilla', 'supervised', { name: 'fewshot', shots: [1, 2, 4, 8], augment: [null, 'rotation', 'flip'] }, { name: 'noisy', noise: [0.05, 0.1, 0.15, 0.2] }],
        seeds: Array.from({ length: seeds }, (_, i) => i),
      }),
      'bench.json',
    );
    const store = new ResultsStore(config.store);
    let t = process.hrtime.bigint();
    const ms = (): number => Number(process.hrtime.bigint() - t) / 1e6;
    const { experiments } = await expandGrid(config, async () => categories, (k) => store.heatmapDir(k));
    const expandMs = ms();
    t = process.hrtime.bigint();
    let x = 0;
    const summary = await runGrid(experiments, store, async () => {
      x = (x * 1103515245 + 12345) % 2147483648;
      const v = x / 2147483648;
      return { metrics: { imageAUROC: v, imageAP: v, pixelAUROC: v, pixelAP: v / 2, pixelPRO: v }, efficiency: { inferenceMsPerImage: 10 + 50 * v, memoryBytes: 1e6 * (1 + v) } };
    }, { concurrency: config.concurrency });
    const runMs = ms();
    t = process.hrtime.bigint();
    const rerun = await runGrid(experiments, store, async () => {
      throw new Error('a stored experiment ran again');
    });
    const skipMs = ms();
    const rows = store.rows();
    t = process.hrtime.bigint();
    await writeReport(rows, dir, path.join(dir, 'report'));
    const reportMs = ms();
    store.close();
    const result = {
      experiments: experiments.length,
      expandMs,
      runMs,
      perExperimentMs: runMs / summary.done,
      rerunSkipped: rerun.skipped,
      rerunMs: skipMs,
      storeBytes: fs.statSync(config.store).size,
      reportMs,
    };
    return result;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function main(args: string[]): Promise<void> {
  if (args.includes('--queue')) return queueBenchmark(args.filter((a) => a !== '--queue'));
  const count = intFlag(args, 'categories', 15);
  const seeds = intFlag(args, 'seeds', 2);
  const repeats = intFlag(args, 'repeats', 3);
  const load = watchLoad('grid');
  // No peer: the rounds only repeat the pass (a fresh store each time), for medians and their spread.
  const [m] = await measureInterleaved([{ name: 'grid', run: () => timed(() => once(count, seeds)) }], repeats);
  const figures = Object.keys(m.results[0]);
  const row: Row = Object.fromEntries(figures.map((k) => [k, formatSpread(spreadOf(m.results.map((r) => r[k])))]));
  printTable(`grid runner overhead (no detector): median (min-max) of ${repeats} runs`, [row]);
  writeJson('grid', {
    machine: machineInfo(1),
    repeats,
    load: load.finish(),
    result: Object.fromEntries(figures.map((k) => [k, spreadOf(m.results.map((r) => r[k]))])),
  });
}
