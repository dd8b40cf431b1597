/**
 * `npm run bench -- cutpaste [--steps 20] [--fidelity-size 64] [--size 128] [--train 32] [--batch 16] [--epochs 1]
 * [--threads N] [--repeats 3] [--peer-layout nchw]`: CutPaste (native/train/cutpaste.cc, lib/methods/cutpaste.ts) against its PyTorch
 * peer (bench/peers/cutpaste_torch.py: torchvision's resnet18 with Runinho's ProjectionNet head, open-iad's training
 * step and CosineAnnealingWarmRestarts, Runinho's Ledoit-Wolf Gaussian). Both start from the same weights (imiad's
 * initial network, exported: the default backbone's ResNet-18 and the seeded head) and train on the same batches (the
 * views imiad drew, written to files).
 * - Fidelity: `steps` steps at `fidelity-size` px, batch 4 (x 3 views), the schedule moving (4 steps per epoch,
 *   T_0 = 3); the largest relative difference of the loss trajectories (target 1e-4) and of the Mahalanobis scores of
 *   held-out images after fitting the Gaussian on the training images (target 1e-3). The peer runs its ResNet-18 in
 *   imiad's memory layout (channels-last for CutPaste: bindings/train/layout.ts; bench/peers/layout.py), so both sides do the same
 *   arithmetic; the trajectory against the peer in torchvision's NCHW is reported beside it, for the record.
 * - Speed: `epochs` epoch(s) of `train` generated images at `size` px, batch `batch`, after one untimed warm-up
 *   epoch, `repeats` interleaved runs of each side (bench/common.ts measureInterleaved; imiad in this process, the
 *   peer in a fresh one); an epoch's time is the sum of its training steps' times (the views are drawn beforehand),
 *   a run's the median over its epochs. Target: imiad <= 0.9x the peer. The timed peer runs in the official code's
 *   layout (torchvision's NCHW) unless `--peer-layout channels-last`.
 * Table + bench/results/cutpaste.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { resnetLayout } from '../bindings/train/layout';
import { trainAddonPath, trainingAvailable, type Nchw, type TrainModel, type TrainState } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { loadBatch } from '../lib/image/pipeline';
import { CUTPASTE_CLASSES, CutPasteDetector, cutPasteLearningRate } from '../lib/methods/cutpaste';
import { Random } from '../lib/prng';
import { formatSpread, intFlag, machineInfo, measureInterleaved, median, peerAvailable, peerLayoutEnv, peerLayoutFlag, printTable, type Row, runPeer, spreadOf, timed, watchLoad, writeJson } from './common';

export interface CutPasteJobOptions {
  /** ImageNet-normalised training images [n, 3, size, size]. */
  images: Float32Array;
  n: number;
  size: number;
  batch: number;
  steps: number;
  stepsPerEpoch: number;
  t0: number;
  lr: number;
  threads: number;
  seed: number;
  /** Held-out images to score after fitting the Gaussian on `images` (the fidelity check). */
  evalImages?: { data: Float32Array; n: number };
}

export interface CutPasteJob {
  dir: string;
  detector: CutPasteDetector;
  state: TrainState;
  batches: Nchw[];
  lrs: number[];
}

function writeFloats(file: string, a: Float32Array): void {
  fs.writeFileSync(file, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
}

/**
 * Writes a peer job into `dir`: the initial state (state.bin), the batches of 3-way views (batch<i>.bin), the
 * calibration and eval images when given, and meta.json; returns what imiad's side needs to run the same steps.
 */
export async function writeCutPasteJob(dir: string, o: CutPasteJobOptions): Promise<CutPasteJob> {
  const detector = new CutPasteDetector({ imageSize: o.size, cropSize: o.size, trainThreads: o.threads, device: 'cpu', lr: o.lr, seed: o.seed, batchSize: o.batch });
  const initial = await detector.initialModel();
  const state = initial.state();
  fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  const per = 3 * o.size * o.size;
  const rng = new Random(o.seed).fork('cutpaste-bench');
  const batches: Nchw[] = [];
  const lrs: number[] = [];
  for (let step = 0; step < o.steps; step++) {
    const idx = Array.from({ length: o.batch }, (_, j) => (step * o.batch + j) % o.n);
    const images = new Float32Array(o.batch * per);
    idx.forEach((i, j) => images.set(o.images.subarray(i * per, (i + 1) * per), j * per));
    const b = CutPasteDetector.views(images, o.batch, o.size, rng.fork(step));
    writeFloats(path.join(dir, `batch${step}.bin`), b.data);
    batches.push(b);
    lrs.push(cutPasteLearningRate(o.lr, step, o.stepsPerEpoch, o.t0));
  }
  const meta: Record<string, unknown> = {
    threads: o.threads,
    headDims: detector.headDims,
    classes: CUTPASTE_CLASSES.length,
    lr: o.lr,
    weightDecay: detector.weightDecay,
    t0: o.t0,
    stepsPerEpoch: o.stepsPerEpoch,
    batchShapes: batches.map((b) => b.shape),
    state: state.names.map((name, i) => ({ name, shape: state.shapes[i] })),
  };
  if (o.evalImages) {
    writeFloats(path.join(dir, 'calibrate.bin'), o.images);
    writeFloats(path.join(dir, 'eval.bin'), o.evalImages.data);
    meta.calibrateShape = [o.n, 3, o.size, o.size];
    meta.evalShape = [o.evalImages.n, 3, o.size, o.size];
  }
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(meta));
  return { dir, detector, state, batches, lrs };
}

export interface CutPasteRun {
  losses: number[];
  stepSeconds: number[];
  /** CPU seconds of each step (user + system, every thread of the process), and system seconds alone. */
  stepCpuSeconds: number[];
  stepSysSeconds: number[];
  scores?: number[];
}

/** imiad's side of a job: a network loaded from the job's initial state trains on its batches (then scores). */
export async function runCutPasteJob(job: CutPasteJob, o: Pick<CutPasteJobOptions, 'images' | 'n' | 'size' | 'evalImages'>): Promise<CutPasteRun> {
  const model: TrainModel = job.detector.createModel(null);
  model.loadState(job.state);
  const losses: number[] = [];
  const stepSeconds: number[] = [];
  const stepCpuSeconds: number[] = [];
  const stepSysSeconds: number[] = [];
  for (let step = 0; step < job.batches.length; step++) {
    const c = process.cpuUsage();
    const t = process.hrtime.bigint();
    model.setLearningRate(job.lrs[step]);
    losses.push(await model.step(job.batches[step], []));
    stepSeconds.push(Number(process.hrtime.bigint() - t) / 1e9);
    const used = process.cpuUsage(c);
    stepCpuSeconds.push((used.user + used.system) / 1e6);
    stepSysSeconds.push(used.system / 1e6);
  }
  const out: CutPasteRun = { losses, stepSeconds, stepCpuSeconds, stepSysSeconds };
  if (o.evalImages) {
    await model.calibrate([{ data: o.images, shape: [o.n, 3, o.size, o.size] }], true);
    out.scores = Array.from((await model.scores([{ data: o.evalImages.data, shape: [o.evalImages.n, 3, o.size, o.size] }])) ?? []);
  }
  return out;
}

const maxRelDiff = (a: number[], b: number[]): number => Math.max(...a.map((v, i) => Math.abs(v - b[i]) / Math.max(Math.abs(b[i]), 1e-12)));

async function syntheticImages(dir: string, size: number, train: number, test: number): Promise<{ train: Float32Array; test: Float32Array }> {
  const root = path.join(dir, `data-${size}`);
  await synthesize('mvtec', root, { seed: 7, categories: 1, size, train, test });
  const [category] = await loadDataset('mvtec', root);
  const load = async (split: string): Promise<Float32Array> =>
    (await loadBatch(category.samples.filter((s) => s.split === split).map((s) => s.path), { imageSize: size, cropSize: size })).data;
  return { train: await load('train'), test: await load('test') };
}

export async function main(args: string[]): Promise<void> {
  if (!trainingAvailable()) throw new Error(`the training addon is not built (${trainAddonPath()}); run npm run build:train`);
  const steps = intFlag(args, 'steps', 20);
  const fidelitySize = intFlag(args, 'fidelity-size', 64);
  const size = intFlag(args, 'size', 128);
  const nTrain = intFlag(args, 'train', 32);
  const batch = intFlag(args, 'batch', 16);
  const epochs = intFlag(args, 'epochs', 1);
  const repeats = intFlag(args, 'repeats', 3);
  const threads = intFlag(args, 'threads', os.availableParallelism());
  const peerLayout = peerLayoutFlag(args);
  const havePeer = peerAvailable(['torch', 'torchvision', 'sklearn']);
  if (!havePeer) process.stdout.write('PyTorch peer skipped: /usr/bin/python3 cannot import torch, torchvision and sklearn\n');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-cutpaste-'));
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  try {
    // Fidelity: the loss trajectory and the scores.
    const small = await syntheticImages(dir, fidelitySize, 8, 6);
    const fDir = path.join(dir, 'fidelity');
    fs.mkdirSync(fDir);
    const fOpts: CutPasteJobOptions = {
      images: small.train,
      n: 8,
      size: fidelitySize,
      batch: 4,
      steps,
      stepsPerEpoch: 4,
      t0: 3,
      lr: 1e-4,
      threads,
      seed: 1,
      evalImages: { data: small.test, n: 6 },
    };
    const fJob = await writeCutPasteJob(fDir, fOpts);
    const mine = await runCutPasteJob(fJob, fOpts);
    // The peer in imiad's memory layout (the same arithmetic); and, for the record, in torchvision's NCHW.
    const theirs = havePeer ? runPeer<CutPasteRun>('cutpaste_torch.py', [fDir], peerLayoutEnv(resnetLayout('cutpaste'))) : null;
    const lossDiff = theirs ? maxRelDiff(mine.losses, theirs.losses) : null;
    const scoreDiff = theirs && mine.scores && theirs.scores ? maxRelDiff(mine.scores, theirs.scores) : null;
    const nchw = havePeer && resnetLayout('cutpaste') !== 'nchw' ? runPeer<CutPasteRun>('cutpaste_torch.py', [fDir], peerLayoutEnv('nchw')) : theirs;
    const lossDiffNchw = nchw ? maxRelDiff(mine.losses, nchw.losses) : null;
    results.fidelity = { steps, size: fidelitySize, layout: resnetLayout('cutpaste'), imiad: mine, peer: theirs, peerNchw: nchw, maxRelativeLossDiff: lossDiff, maxRelativeScoreDiff: scoreDiff, maxRelativeLossDiffNchw: lossDiffNchw };

    // Speed: whole epochs, interleaved.
    const big = await syntheticImages(dir, size, nTrain, 1);
    const sDir = path.join(dir, 'speed');
    fs.mkdirSync(sDir);
    const stepsPerEpoch = Math.ceil(nTrain / batch);
    // One more epoch first, untimed on both sides (a fresh PyTorch process initialises its kernels in its first steps).
    const sOpts: CutPasteJobOptions = { images: big.train, n: nTrain, size, batch, steps: stepsPerEpoch * (epochs + 1), stepsPerEpoch, t0: epochs + 1, lr: 1e-4, threads, seed: 2 };
    const sJob = await writeCutPasteJob(sDir, sOpts);
    const perEpoch = (values: number[]): number =>
      median(Array.from({ length: epochs }, (_, e) => values.slice((e + 1) * stepsPerEpoch, (e + 2) * stepsPerEpoch).reduce((a, b) => a + b, 0)));
    const epochSeconds = (r: CutPasteRun): number => perEpoch(r.stepSeconds);
    const contenders = [{ name: 'imiad', run: async () => { const r = await runCutPasteJob(sJob, sOpts); return { ms: epochSeconds(r) * 1000, result: r }; } }];
    if (havePeer) contenders.push({ name: 'torch', run: () => timed(() => runPeer<CutPasteRun>('cutpaste_torch.py', [sDir], peerLayoutEnv(peerLayout))).then((t) => ({ ms: epochSeconds(t.result) * 1000, result: t.result })) });
    const watch = watchLoad(`cutpaste ${size} px, ${threads} thread(s)`);
    const done = await measureInterleaved(contenders, repeats);
    const load = watch.finish();
    const imiadEpoch = spreadOf(done[0].results.map(epochSeconds));
    const peerEpoch = havePeer ? spreadOf(done[1].results.map(epochSeconds)) : null;
    const ratio = havePeer ? spreadOf(done[0].results.map((r, i) => epochSeconds(r) / epochSeconds(done[1].results[i]))) : null;
    // On a busy machine the wall-clock ratio says little: the CPU seconds of the epochs' steps, and their system part.
    const cpuRatio = havePeer ? median(done[0].results.map((r, i) => perEpoch(r.stepCpuSeconds) / perEpoch(done[1].results[i].stepCpuSeconds))) : null;
    const sys = (rs: CutPasteRun[]): number => median(rs.map((r) => perEpoch(r.stepSysSeconds)));
    rows.push({
      method: 'cutpaste',
      threads,
      'imiad epoch s': formatSpread(imiadEpoch),
      'torch epoch s': peerEpoch ? formatSpread(peerEpoch) : null,
      'imiad/torch': ratio ? formatSpread(ratio) : null,
      'time (<=0.9)': ratio ? ratio.median <= 0.9 : null,
      'CPU ratio': cpuRatio,
      'imiad sys s': sys(done[0].results),
      'torch sys s': havePeer ? sys(done[1].results) : null,
      [`max loss rel. diff (${steps} steps)`]: lossDiff === null ? null : lossDiff.toExponential(2),
      'loss (<=1e-4)': lossDiff === null ? null : lossDiff <= 1e-4,
      'max score rel. diff': scoreDiff === null ? null : scoreDiff.toExponential(2),
      'scores (<=1e-3)': scoreDiff === null ? null : scoreDiff <= 1e-3,
      'loss diff, NCHW peer': lossDiffNchw === null ? null : lossDiffNchw.toExponential(2),
    });
    results.speed = { peerLayout, size, train: nTrain, batch, epochs, repeats, imiad: done[0].results, peer: havePeer ? done[1].results : null, epoch_s: { imiad: imiadEpoch, peer: peerEpoch }, ratio, cpu_ratio: cpuRatio, load };
    printTable(
      `CutPaste: ${epochs} epoch(s) of ${nTrain} generated ${size} px images, batch ${batch} (x 3 views), median (min-max) of ${repeats} interleaved run(s); ` +
        `fidelity: ${steps} steps at ${fidelitySize} px${havePeer ? '' : ' (no python3-torch peer)'}; imiad's ResNet-18 in ${resnetLayout('cutpaste')} layout, the timed peer in ${peerLayout} ` +
        `(--peer-layout), the fidelity peer in imiad's layout ('loss diff, NCHW peer': against torchvision's layout, for the record)`,
      rows,
    );
    if (load.busy) process.stdout.write('WARNING: the machine was busy; these figures are not quiet-machine figures\n');
    writeJson('cutpaste', { machine: machineInfo(threads), results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
