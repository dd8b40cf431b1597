/**
 * `npm run bench -- layout [--methods cutpaste,devnet,dra,regad] [--threads N] [--steps 4] [--repeats 3]`: imiad's
 * trainable ResNet-18 channels-last against torchvision's NCHW (native/train/resnet18.h; IMIAD_TRAIN_LAYOUT forces
 * each), from the same weights on the same batches, interleaved. It measures what the layout alone changes in imiad's
 * training steps, the measurement behind the per-detector table of bindings/train/layout.ts, without a PyTorch peer (the peers' ratios also carry PyTorch's allocator
 * system time, which differs from machine to machine: docs/training-speed.md).
 *
 * Per method, the batches of its own bench: CutPaste 128 px, batch 16 x 3 views (bench/cutpaste.ts); DevNet and DRA
 * 128 px, batch 12 (bench/deviation.ts); RegAD 224 px, 32 queries x 2 shots (bench/regad.ts). A run builds a fresh
 * model in the layout and takes `steps` + 1 steps; the first (oneDNN's primitive creation, the allocator's first
 * blocks) is not timed. Reported: the timed steps' seconds for each layout (median and min-max over `repeats`
 * rounds), their ratio per round (channels-last / NCHW), and the largest relative difference of the two layouts'
 * losses (the same arithmetic summed in another order). Table + bench/results/layout.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { type TrainLayout } from '../bindings/train/layout';
import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { loadBatch } from '../lib/image/pipeline';
import { flag, formatSpread, intFlag, machineInfo, maxRelativeDiff, measureInterleaved, printTable, type Row, spreadOf, watchLoad, writeJson } from './common';
import { runCutPasteJob, writeCutPasteJob } from './cutpaste';
import { runImiadDeviation, writeDeviationJob } from './deviation';
import { prepareRegadRun, runRegadSteps } from './regad';

const METHODS = ['cutpaste', 'devnet', 'dra', 'regad'] as const;
type Method = (typeof METHODS)[number];

/** Runs `fn` with IMIAD_TRAIN_LAYOUT = `layout` (bindings/train/layout.ts reads it where a detector builds its model; children inherit it). */
async function inLayout<T>(layout: TrainLayout, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.IMIAD_TRAIN_LAYOUT;
  process.env.IMIAD_TRAIN_LAYOUT = layout;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.IMIAD_TRAIN_LAYOUT;
    else process.env.IMIAD_TRAIN_LAYOUT = saved;
  }
}

interface LayoutRun {
  losses: number[];
  /** Seconds of each step, the first (untimed) included. */
  stepSeconds: number[];
}

/** A function that trains a fresh model of the method for steps + 1 steps in the current layout. */
async function prepare(method: Method, dir: string, steps: number, threads: number): Promise<() => Promise<LayoutRun>> {
  const total = steps + 1;
  if (method === 'cutpaste') {
    const size = 128;
    const root = path.join(dir, 'cutpaste-data');
    await synthesize('mvtec', root, { seed: 7, categories: 1, size, train: 32, test: 1 });
    const [category] = await loadDataset('mvtec', root);
    const train = (await loadBatch(category.samples.filter((s) => s.split === 'train').map((s) => s.path), { imageSize: size, cropSize: size })).data;
    const o = { images: train, n: 32, size, batch: 16, steps: total, stepsPerEpoch: 2, t0: total, lr: 1e-4, threads, seed: 2 };
    const jobDir = path.join(dir, 'cutpaste');
    fs.mkdirSync(jobDir);
    const job = await writeCutPasteJob(jobDir, o);
    return async () => runCutPasteJob(job, o);
  }
  if (method === 'devnet' || method === 'dra') {
    const jobFile = await writeDeviationJob(dir, { method, size: 128, batch: 12, steps: total, epochs: 1, threads });
    return async () => {
      const r = runImiadDeviation(jobFile);
      return { losses: r.losses, stepSeconds: r.step_s };
    };
  }
  let round = 0;
  return async () => {
    const runDir = path.join(dir, `regad-${round++}`);
    fs.mkdirSync(runDir);
    const { model, batches } = await prepareRegadRun({ size: 224, batch: 32, shots: 2, steps: total, lr: 1e-4, threads }, runDir);
    const r = await runRegadSteps(model, batches);
    fs.rmSync(runDir, { recursive: true, force: true });
    return r;
  };
}

export async function main(args: string[]): Promise<void> {
  if (!trainingAvailable()) throw new Error(`the training addon is not built (${trainAddonPath()}); run npm run build:train`);
  const methods = (flag(args, 'methods', METHODS.join(',')) as string).split(',') as Method[];
  for (const m of methods) if (!METHODS.includes(m)) throw new Error(`--methods: expected some of ${METHODS.join(', ')} but received ${m}`);
  const threads = intFlag(args, 'threads', os.availableParallelism());
  const steps = intFlag(args, 'steps', 4);
  const repeats = intFlag(args, 'repeats', 3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-layout-'));
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  let busy = false;
  try {
    for (const method of methods) {
      const run = await prepare(method, dir, steps, threads);
      const timedSeconds = (r: LayoutRun): number => r.stepSeconds.slice(1).reduce((a, b) => a + b, 0);
      const contenders = (['channels-last', 'nchw'] as const).map((layout) => ({
        name: layout,
        run: async () => {
          const r = await inLayout(layout, run);
          return { ms: timedSeconds(r) * 1000, result: r };
        },
      }));
      const watch = watchLoad(`layout ${method}, ${threads} thread(s)`);
      const [last, nchw] = await measureInterleaved(contenders, repeats);
      const load = watch.finish();
      busy ||= load.busy;
      const seconds = (rs: LayoutRun[]) => spreadOf(rs.map(timedSeconds));
      const ratio = spreadOf(last.results.map((r, i) => timedSeconds(r) / timedSeconds(nchw.results[i])));
      const lossDiff = maxRelativeDiff(last.results[0].losses, nchw.results[0].losses);
      rows.push({
        method,
        threads,
        [`channels-last s (${steps} steps)`]: formatSpread(seconds(last.results)),
        'NCHW s': formatSpread(seconds(nchw.results)),
        'channels-last / NCHW': formatSpread(ratio),
        'loss rel. diff': lossDiff.toExponential(2),
      });
      results[method] = { threads, steps, channelsLast: last.results, nchw: nchw.results, seconds: { channelsLast: seconds(last.results), nchw: seconds(nchw.results) }, ratio, maxRelativeLossDiff: lossDiff, load };
    }
    printTable(`Training steps of imiad's ResNet-18 detectors, channels-last against NCHW: ${steps} timed steps after one untimed, median (min-max) of ${repeats} interleaved round(s)`, rows);
    if (busy) process.stdout.write('WARNING: the machine was busy; these figures are not quiet-machine figures\n');
    writeJson('layout', { machine: machineInfo(threads), steps, repeats, results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
