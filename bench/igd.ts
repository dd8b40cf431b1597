/**
 * `npm run bench -- igd [--epochs 1] [--train 32] [--size 256] [--threads 1,2] [--repeats 3]`: IGD's training steps
 * against the PyTorch peer written from the official code (bench/peers/igd_torch.py), batch 16, the default
 * ResNet-18's pooled layer4. Both sides load the same initial weights, run the same two descriptor passes and the
 * same batches, each in its own process (imiad's: `igd --child <job>`), `--repeats` times, interleaved
 * (measureInterleaved), so the epoch times compare the training engines alone. Reported: medians (min-max) of the
 * epoch time and their ratio, CPU seconds, peak resident memory, and the per-step loss trajectories' largest
 * relative difference; the load average before and after, with a warning when the machine was busy.
 * Targets: imiad's epoch time <= 0.9x the peer's, peak memory <= 1.2x. Table + bench/results/igd.json.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { type Nchw, trainingAvailable, trainAddonPath, TrainModel } from '../bindings/train/train';
import { loadBackbone } from '../lib/backbone/session';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { batches } from '../lib/image/pipeline';
import { globalAverage } from '../lib/methods/spade';
import { Random } from '../lib/prng';
import { flag, formatSpread, intFlag, machineInfo, measureInterleaved, median, peerAvailable, printTable, type Row, runPeer, spreadOf, timed, watchLoad, writeJson } from './common';

const BATCH = 8;

/** What one training process reports, imiad's or the peer's. */
interface RunResult {
  epoch_ms: number[];
  losses: number[];
  auroc: number;
  /** CPU seconds (user + system), system seconds and minor page faults of the training loop. */
  train_cpu_s: number;
  train_sys_s: number;
  train_minflt: number;
  /** The whole process's CPU seconds and peak resident memory (getrusage maxrss, KiB). */
  cpu_s: number;
  max_rss_kb: number;
}

function readFloats(file: string): Float32Array {
  const b = fs.readFileSync(file);
  const aligned = b.byteOffset % 4 === 0 ? b : Buffer.from(b);
  return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
}

/** An IGD run (bench/peers/igd_torch.py reads the same file): images, pooled features, weights, batches. */
interface IgdJob {
  kind: 'igd';
  side: number;
  channels: number;
  lr: number;
  /** The poly schedule's length: every step of the run. */
  steps: number;
  seed: number;
  threads: number;
  names: string[];
  shapes: number[][];
  weights: string;
  images: string;
  features: string;
  /** Index batches of one descriptor pass (run twice before training). */
  calibration: number[][];
  /** Index batches of the steps; `epochs` of them make an epoch. */
  batches: number[][];
  epochs: number;
}

/** imiad's side of an IGD run: the same weights, descriptor passes and batches as the peer; step losses. */
async function runIgdChild(job: IgdJob): Promise<void> {
  const images = readFloats(job.images);
  const features = readFloats(job.features);
  const model = new TrainModel({ kind: 'igd', channels: [job.channels], seed: job.seed, threads: job.threads, lr: job.lr, beta1: 0, beta2: 0.9, extra: { size: [job.side] } });
  const flat = readFloats(job.weights);
  let at = 0;
  const arrays = job.shapes.map((shape) => {
    const size = shape.reduce((a, b) => a * b, 1);
    at += size;
    return flat.slice(at - size, at);
  });
  model.loadState({ names: job.names, shapes: job.shapes, arrays });
  model.configure('fit', [job.steps, 0]);
  const plane = 3 * job.side * job.side;
  const pick = (idx: number[]): [Nchw, Nchw] => {
    const im = new Float32Array(idx.length * plane);
    const f = new Float32Array(idx.length * job.channels);
    idx.forEach((k, j) => {
      im.set(images.subarray(k * plane, (k + 1) * plane), j * plane);
      f.set(features.subarray(k * job.channels, (k + 1) * job.channels), j * job.channels);
    });
    return [
      { data: im, shape: [idx.length, 3, job.side, job.side] },
      { data: f, shape: [idx.length, job.channels, 1, 1] },
    ];
  };
  for (let pass = 0; pass < 2; pass++) for (const [j, b] of job.calibration.entries()) await model.calibrate([pick(b)[1]], j === 0);
  const epochMs: number[] = [];
  const losses: number[] = [];
  const u0 = process.resourceUsage();
  let t0 = process.hrtime.bigint();
  for (const [i, b] of job.batches.entries()) {
    const [im, f] = pick(b);
    losses.push(await model.step(im, [f]));
    if ((i + 1) % job.epochs === 0) {
      epochMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
      t0 = process.hrtime.bigint();
    }
  }
  const u1 = process.resourceUsage();
  const cpu = (u: NodeJS.ResourceUsage): number => (u.userCPUTime + u.systemCPUTime) / 1e6;
  const result: RunResult = {
    epoch_ms: epochMs,
    losses,
    auroc: NaN,
    train_cpu_s: cpu(u1) - cpu(u0),
    train_sys_s: (u1.systemCPUTime - u0.systemCPUTime) / 1e6,
    train_minflt: u1.minorPageFault - u0.minorPageFault,
    cpu_s: cpu(u1),
    max_rss_kb: u1.maxRSS,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/**
 * The IGD job on the training images at `size`: the default ResNet-18's pooled layer4, weights of a seed-0 model,
 * batch 16 (Table V), one shuffle per epoch.
 */
async function igdJob(dir: string, paths: string[], size: number, epochs: number, threads: number): Promise<Omit<IgdJob, 'threads'>> {
  const backbone = await loadBackbone({ shape: 'resnet18', layers: ['layer4'], threads: os.availableParallelism() });
  const images: Float32Array[] = [];
  const pooled: Float32Array[] = [];
  let channels = 0;
  for await (const b of batches(paths, { imageSize: size, cropSize: size, batchSize: BATCH })) {
    const f = (await backbone.extract(b.data, b.n, size, size)).layer4;
    images.push(b.data.slice());
    pooled.push(globalAverage(f, b.n));
    channels = f.channels;
  }
  await backbone.dispose();
  const write = (name: string, parts: Float32Array[]): string => {
    const file = path.join(dir, `igd.${name}.f32`);
    fs.writeFileSync(file, Buffer.concat(parts.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
    return file;
  };
  const batch = 16;
  const n = paths.length;
  const rng = new Random(0);
  const batchList: number[][] = [];
  for (let e = 0; e < epochs; e++) {
    const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
    for (let s = 0; s < n; s += batch) batchList.push(order.slice(s, s + batch));
  }
  const model = new TrainModel({ kind: 'igd', channels: [channels], seed: 0, threads, lr: 1e-4, beta1: 0, beta2: 0.9, extra: { size: [size] } });
  const state = model.state();
  return {
    kind: 'igd',
    side: size,
    channels,
    lr: 1e-4,
    steps: batchList.length,
    seed: 0,
    names: state.names,
    shapes: state.shapes,
    weights: write('weights', state.arrays),
    images: write('images', images),
    features: write('features', pooled),
    calibration: Array.from({ length: Math.ceil(n / batch) }, (_, k) => Array.from({ length: Math.min(batch, n - k * batch) }, (_, j) => k * batch + j)),
    batches: batchList,
    epochs: Math.ceil(n / batch),
  };
}

/** Runs imiad's side of one run in a child process (its own peak memory, like the peer's). */
function runImiad(jobFile: string): RunResult {
  const runner = path.join(__dirname, 'run.js');
  const r = spawnSync(process.execPath, [runner, 'igd', '--child', jobFile], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`imiad IGD child failed (exit ${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as RunResult;
}

export async function main(args: string[]): Promise<void> {
  const child = flag(args, 'child');
  if (child !== undefined) return runIgdChild(JSON.parse(fs.readFileSync(child, 'utf8')) as IgdJob);
  const epochs = intFlag(args, 'epochs', 1);
  const nTrain = intFlag(args, 'train', 32);
  const size = intFlag(args, 'size', 256);
  const repeats = intFlag(args, 'repeats', 3);
  const threadList = (flag(args, 'threads', '1,2') as string).split(',').map((t) => {
    const n = Number(t);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--threads: expected integers >= 1 separated by commas but received ${t}`);
    return n;
  });
  if (!trainingAvailable()) {
    process.stderr.write(`bench igd: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
    process.exitCode = 1;
    return;
  }
  const peer = peerAvailable(['torch', 'numpy']);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-igd-'));
  try {
    const root = path.join(dir, 'data');
    await synthesize('mvtec', root, { seed: 7, categories: 1, size, train: nTrain, test: 2 });
    const [category] = await loadDataset('mvtec', root);
    const train = category.samples.filter((s) => s.split === 'train');
    const rows: Row[] = [];
    const results: Record<string, unknown> = {};
    const warnings: string[] = [];
    // IGD (bench/peers/igd_torch.py): batch 16, the poly schedule over the run, per-step losses.
    const base = await igdJob(dir, train.map((s) => s.path), size, epochs, 1);
    for (const threads of threadList) {
      const jobFile = path.join(dir, `igd.t${threads}.job.json`);
      fs.writeFileSync(jobFile, JSON.stringify({ ...base, threads }));
      const contenders = [{ name: 'imiad', run: () => timed(() => runImiad(jobFile)) }];
      if (peer) contenders.push({ name: 'torch', run: () => timed(() => runPeer<RunResult>('igd_torch.py', [jobFile])) });
      const watch = watchLoad(`train igd, ${threads} thread(s)`);
      const done = await measureInterleaved(contenders, repeats);
      const load = watch.finish();
      if (load.busy) warnings.push(`igd, ${threads} thread(s): the machine was busy; these figures are not quiet-machine figures`);
      const mine = done[0].results;
      const theirs = peer ? done[1].results : null;
      const epochS = (r: RunResult): number => median(r.epoch_ms) / 1000;
      const ratio = theirs ? spreadOf(mine.map((r, i) => epochS(r) / epochS(theirs[i]))) : null;
      const imiadRss = median(mine.map((r) => r.max_rss_kb / 1024));
      const peerRss = theirs ? median(theirs.map((r) => r.max_rss_kb / 1024)) : null;
      const relDiff = (a: number[], b: number[]): number => Math.max(...a.map((l, i) => Math.abs(l - b[i]) / Math.abs(b[i])));
      const lossDiff = theirs ? relDiff(mine[0].losses, theirs[0].losses) : null;
      rows.push({
        method: 'igd',
        threads,
        'imiad epoch s': formatSpread(spreadOf(mine.map(epochS))),
        'torch epoch s': theirs ? formatSpread(spreadOf(theirs.map(epochS))) : null,
        'imiad/torch': ratio ? formatSpread(ratio) : null,
        'CPU ratio': theirs ? median(mine.map((r, i) => r.train_cpu_s / theirs[i].train_cpu_s)) : null,
        'imiad RSS MB': Math.round(imiadRss),
        'torch RSS MB': peerRss === null ? null : Math.round(peerRss),
        'RSS ratio': peerRss ? imiadRss / peerRss : null,
            'max loss rel. diff': lossDiff,
        'time (<=0.9)': ratio === null ? null : ratio.median <= 0.9,
        'RSS (<=1.2)': peerRss ? imiadRss / peerRss <= 1.2 : null,
        });
      results[`igd.t${threads}`] = { kind: 'igd', threads, backbone: 'resnet18', batch: 16, imiad: mine, peer: theirs, load, ratio, max_loss_relative_diff: lossDiff };
    }
    printTable(
      `IGD training: ${epochs} epoch(s) on ${nTrain} generated ${size} px images, batch 16, median (min-max) of ${repeats} interleaved run(s)` +
        `${peer ? '' : ' (no python3-torch peer)'}; CPU ratio = CPU seconds of the training loops; RSS = peak resident memory of each side's process`,
      rows,
    );
    for (const line of warnings) process.stdout.write(`WARNING: ${line}\n`);
    writeJson('igd', { machine: machineInfo(Math.max(...threadList)), size, batch: 16, epochs, train: nTrain, repeats, results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
