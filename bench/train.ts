/**
 * `npm run bench -- train [--epochs 1] [--train 16] [--test 16] [--size 256] [--threads 1,2] [--repeats 3]
 * [--methods stpm,rd4ad]`: training epochs of STPM and RD4AD on generated images (default 256 px, batch 8, the
 * default backbone shapes: ResNet-18 for STPM, WRN-50-2 for RD4AD). The teacher's features are computed once by ONNX
 * Runtime and written to binary files; then, for each method and thread count, imiad (the libtorch addon, in a child
 * process of this script: `train --child <job>`) and, when Debian's python3-torch is installed, the PyTorch peer
 * (bench/peers/train_torch.py) train the same architectures on them with the same batches, `--repeats` times each,
 * interleaved (bench/common.ts measureInterleaved), so the epoch times compare the training engines alone. Each run
 * is its own process, so each side's peak resident memory (getrusage's maxrss, read by the process itself) covers
 * the same work: load the features, train, score the test images (max of the smoothed map, for image AUROC).
 * Reported: medians over the repeats with the min-max range, the CPU seconds and page faults of the training loops,
 * the load average before and after, and a warning when the machine was busy.
 * Targets: imiad's epoch time <= 0.9x the peer's, peak memory <= 1.2x, image AUROC within 0.02, losses identical.
 * `--methods igd` adds IGD (batch 16, the default ResNet-18's pooled layer4; peer bench/peers/igd_torch.py from the
 * official code): both sides load the same initial weights and run the same descriptor passes and batches; its rows
 * report the per-step loss trajectories' largest relative difference and no AUROC.
 * Table + bench/results/train.json.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { gaussianBlur } from '../bindings/filters';
import { binaryClassificationMetrics } from '../bindings/metrics';
import { type Nchw, trainAddon, trainingAvailable, trainAddonPath, TrainModel } from '../bindings/train/train';
import type { BackboneShape } from '../lib/backbone/builder';
import { loadBackbone } from '../lib/backbone/session';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { batches } from '../lib/image/pipeline';
import { globalAverage } from '../lib/methods/spade';
import { Random } from '../lib/prng';
import { flag, formatSpread, intFlag, machineInfo, measureInterleaved, median, peerAvailable, printTable, type Row, runPeer, spreadOf, timed, watchLoad, writeJson } from './common';

const LAYERS = ['layer1', 'layer2', 'layer3'];
const BATCH = 8;

type Kind = 'stpm' | 'rd4ad' | 'igd';

interface Features {
  n: number;
  images: Float32Array;
  teacher: Float32Array[];
  shapes: number[][];
}

/** What one training process is given (the peer reads the same file). */
interface Job {
  kind: 'stpm' | 'rd4ad';
  crop: number;
  batch: number;
  lr: number;
  threads: number;
  shapes: number[][];
  orders: number[][];
  labels: number[];
  train: { n: number; images: string | null; teacher: string[] };
  test: { n: number; images: string | null; teacher: string[] };
}

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

async function extract(paths: string[], shape: BackboneShape, size: number, threads: number): Promise<Features> {
  const backbone = await loadBackbone({ shape, layers: LAYERS, threads });
  const images: Float32Array[] = [];
  const teacher: Float32Array[][] = [[], [], []];
  let shapes: number[][] = [];
  for await (const b of batches(paths, { imageSize: size, cropSize: size, batchSize: BATCH })) {
    const f = await backbone.extract(b.data, b.n, size, size);
    images.push(b.data.slice());
    LAYERS.forEach((l, i) => teacher[i].push(f[l].data.slice()));
    shapes = LAYERS.map((l) => [f[l].channels, f[l].height, f[l].width]);
  }
  await backbone.dispose();
  const cat = (parts: Float32Array[]): Float32Array => {
    const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  return { n: paths.length, images: cat(images), teacher: teacher.map(cat), shapes };
}

function slice(f: Features, idx: number[], size: number, withImages: boolean): { images: Nchw | null; teacher: Nchw[] } {
  const pick = (src: Float32Array, per: number): Float32Array => {
    const out = new Float32Array(idx.length * per);
    idx.forEach((i, j) => out.set(src.subarray(i * per, (i + 1) * per), j * per));
    return out;
  };
  const m = idx.length;
  return {
    images: withImages ? { data: pick(f.images, 3 * size * size), shape: [m, 3, size, size] } : null,
    teacher: f.shapes.map((s, l) => ({ data: pick(f.teacher[l], s[0] * s[1] * s[2]), shape: [m, s[0], s[1], s[2]] })),
  };
}

function readFloats(file: string): Float32Array {
  const b = fs.readFileSync(file);
  const aligned = b.byteOffset % 4 === 0 ? b : Buffer.from(b);
  return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
}

function readFeatures(job: Job, split: 'train' | 'test'): Features {
  const s = job[split];
  return { n: s.n, images: s.images ? readFloats(s.images) : new Float32Array(0), teacher: s.teacher.map(readFloats), shapes: job.shapes };
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

/** imiad's side of one run, in this (child) process: the same work as bench/peers/train_torch.py. */
async function runChild(jobFile: string): Promise<void> {
  const parsed = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as Job | IgdJob;
  if (parsed.kind === 'igd') return runIgdChild(parsed as IgdJob);
  const job = parsed as Job;
  const size = job.crop;
  const withImages = job.kind === 'stpm';
  const trainF = readFeatures(job, 'train');
  const model = new TrainModel({ kind: job.kind, channels: job.shapes.map((s) => s[0]), seed: 0, threads: job.threads, lr: job.lr });
  const epochMs: number[] = [];
  const losses: number[] = [];
  const u0 = process.resourceUsage();
  for (const order of job.orders) {
    const t0 = process.hrtime.bigint();
    let sum = 0;
    let steps = 0;
    for (let s = 0; s < order.length; s += job.batch) {
      const b = slice(trainF, order.slice(s, s + job.batch), size, withImages);
      sum += await model.step(b.images, b.teacher);
      steps += 1;
    }
    epochMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    losses.push(sum / steps);
  }
  const u1 = process.resourceUsage();
  const testF = readFeatures(job, 'test');
  const scores = new Float64Array(testF.n);
  for (let i = 0; i < testF.n; i++) {
    const b = slice(testF, [i], size, withImages);
    const raw = await model.maps(b.images, b.teacher, size);
    const smooth = await gaussianBlur(raw, { count: 1, height: size, width: size, sigma: 4 });
    let max = -Infinity;
    for (const v of smooth) if (v > max) max = v;
    scores[i] = max;
  }
  const auroc = (await binaryClassificationMetrics(scores, Uint8Array.from(job.labels))).auroc;
  const u2 = process.resourceUsage();
  const cpu = (u: NodeJS.ResourceUsage): number => (u.userCPUTime + u.systemCPUTime) / 1e6;
  const result: RunResult & { runtime: unknown } = {
    epoch_ms: epochMs,
    losses,
    auroc,
    train_cpu_s: cpu(u1) - cpu(u0),
    train_sys_s: (u1.systemCPUTime - u0.systemCPUTime) / 1e6,
    train_minflt: u1.minorPageFault - u0.minorPageFault,
    cpu_s: cpu(u2),
    max_rss_kb: u2.maxRSS,
    runtime: trainAddon().runtimeStats(),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/** Runs imiad's side of one run in a child process (its own peak memory, like the peer's). */
function runImiad(jobFile: string): RunResult {
  const runner = path.join(__dirname, 'run.js');
  const r = spawnSync(process.execPath, [runner, 'train', '--child', jobFile], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`imiad training child failed (exit ${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as RunResult;
}

export async function main(args: string[]): Promise<void> {
  const child = flag(args, 'child');
  if (child !== undefined) return runChild(child);
  const epochs = intFlag(args, 'epochs', 1);
  const nTrain = intFlag(args, 'train', 16);
  const nTest = intFlag(args, 'test', 16);
  const size = intFlag(args, 'size', 256);
  const repeats = intFlag(args, 'repeats', 3);
  const threadList = (flag(args, 'threads', '1,2') as string).split(',').map((t) => {
    const n = Number(t);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--threads: expected integers >= 1 separated by commas but received ${t}`);
    return n;
  });
  const methods = (flag(args, 'methods', 'stpm,rd4ad') as string).split(',') as Kind[];
  for (const m of methods) if (m !== 'stpm' && m !== 'rd4ad' && m !== 'igd') throw new Error(`--methods: expected stpm, rd4ad or igd but received ${m}`);
  if (!trainingAvailable()) {
    process.stderr.write(`bench train: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
    process.exitCode = 1;
    return;
  }
  const peer = peerAvailable(['torch', 'scipy', 'sklearn']);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-train-'));
  try {
    const root = path.join(dir, 'data');
    await synthesize('mvtec', root, { seed: 7, categories: 1, size, train: nTrain, test: nTest });
    const [category] = await loadDataset('mvtec', root);
    const train = category.samples.filter((s) => s.split === 'train');
    const test = category.samples.filter((s) => s.split === 'test');
    const labels = Array.from(test, (s) => (s.label === 'anomaly' ? 1 : 0));
    const rng = new Random(0);
    const orders = Array.from({ length: epochs }, () => rng.shuffle(Array.from({ length: train.length }, (_, i) => i)));
    const rows: Row[] = [];
    const results: Record<string, unknown> = {};
    const warnings: string[] = [];
    for (const kind of methods) {
      if (kind === 'igd') {
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
            'imiad AUROC': null,
            'torch AUROC': null,
            'max loss rel. diff': lossDiff,
            'time (<=0.9)': ratio === null ? null : ratio.median <= 0.9,
            'RSS (<=1.2)': peerRss ? imiadRss / peerRss <= 1.2 : null,
            'AUROC (<=0.02)': null,
          });
          results[`igd.t${threads}`] = { kind: 'igd', threads, backbone: 'resnet18', batch: 16, imiad: mine, peer: theirs, load, ratio, max_loss_relative_diff: lossDiff };
        }
        continue;
      }
      const shape: BackboneShape = kind === 'stpm' ? 'resnet18' : 'wide_resnet50_2';
      const lr = kind === 'stpm' ? 0.4 : 0.005;
      const extractThreads = os.availableParallelism();
      const trainF = await extract(train.map((s) => s.path), shape, size, extractThreads);
      const testF = await extract(test.map((s) => s.path), shape, size, extractThreads);
      const write = (name: string, a: Float32Array): string => {
        const file = path.join(dir, `${kind}.${name}.f32`);
        fs.writeFileSync(file, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
        return file;
      };
      const files = {
        train: { n: trainF.n, images: kind === 'stpm' ? write('train.images', trainF.images) : null, teacher: trainF.teacher.map((t, l) => write(`train.l${l + 1}`, t)) },
        test: { n: testF.n, images: kind === 'stpm' ? write('test.images', testF.images) : null, teacher: testF.teacher.map((t, l) => write(`test.l${l + 1}`, t)) },
      };
      for (const threads of threadList) {
        const job: Job = { kind, crop: size, batch: BATCH, lr, threads, shapes: trainF.shapes, orders, labels, ...files };
        const jobFile = path.join(dir, `${kind}.t${threads}.job.json`);
        fs.writeFileSync(jobFile, JSON.stringify(job));
        const contenders = [{ name: 'imiad', run: () => timed(() => runImiad(jobFile)) }];
        if (peer) contenders.push({ name: 'torch', run: () => timed(() => runPeer<RunResult>('train_torch.py', [jobFile])) });
        const watch = watchLoad(`train ${kind}, ${threads} thread(s)`);
        const done = await measureInterleaved(contenders, repeats);
        const load = watch.finish();
        if (load.busy) warnings.push(`${kind}, ${threads} thread(s): the machine was busy; these figures are not quiet-machine figures`);
        const mine = done[0].results;
        const theirs = peer ? done[1].results : null;
        // A run's epoch time is the median over its epochs; the table gives the median over the runs and their range.
        const epochS = (r: RunResult): number => median(r.epoch_ms) / 1000;
        const imiadEpoch = spreadOf(mine.map(epochS));
        const peerEpoch = theirs ? spreadOf(theirs.map(epochS)) : null;
        // Ratios of the interleaved pairs (run r of imiad against run r of the peer): drift hits both alike.
        const ratio = theirs ? spreadOf(mine.map((r, i) => epochS(r) / epochS(theirs[i]))) : null;
        const cpuRatio = theirs ? median(mine.map((r, i) => r.train_cpu_s / theirs[i].train_cpu_s)) : null;
        const rssMb = (r: RunResult): number => r.max_rss_kb / 1024;
        const imiadRss = median(mine.map(rssMb));
        const peerRss = theirs ? median(theirs.map(rssMb)) : null;
        const rssRatio = peerRss ? imiadRss / peerRss : null;
        const auroc = mine[0].auroc;
        const aurocDiff = theirs ? Math.abs(auroc - theirs[0].auroc) : null;
        // Both seed libtorch's generator with 0 and initialise in the same module order, so the weights and the
        // loss trajectories agree as far as the two engines compute the same thing.
        const relDiff = (a: number[], b: number[]): number => Math.max(...a.map((l, i) => Math.abs(l - b[i]) / Math.abs(b[i])));
        const lossDiff = theirs ? Math.max(...mine.map((r) => relDiff(r.losses, theirs[0].losses)), ...theirs.map((r) => relDiff(r.losses, theirs[0].losses))) : null;
        rows.push({
          method: kind,
          threads,
          'imiad epoch s': formatSpread(imiadEpoch),
          'torch epoch s': peerEpoch ? formatSpread(peerEpoch) : null,
          'imiad/torch': ratio ? formatSpread(ratio) : null,
          'CPU ratio': cpuRatio,
          'imiad RSS MB': Math.round(imiadRss),
          'torch RSS MB': peerRss === null ? null : Math.round(peerRss),
          'RSS ratio': rssRatio,
          'imiad AUROC': auroc,
          'torch AUROC': theirs ? theirs[0].auroc : null,
          'max loss rel. diff': lossDiff,
          'time (<=0.9)': ratio === null ? null : ratio.median <= 0.9,
          'RSS (<=1.2)': rssRatio === null ? null : rssRatio <= 1.2,
          'AUROC (<=0.02)': aurocDiff === null ? null : aurocDiff <= 0.02,
        });
        results[`${kind}.t${threads}`] = {
          kind,
          threads,
          backbone: shape,
          imiad: mine,
          peer: theirs,
          load,
          epoch_s: { imiad: imiadEpoch, peer: peerEpoch },
          ratio,
          cpu_ratio: cpuRatio,
          rss_mb: { imiad: imiadRss, peer: peerRss },
          rss_ratio: rssRatio,
          auroc_diff: aurocDiff,
          max_loss_relative_diff: lossDiff,
        };
      }
    }
    printTable(
      `Training: ${epochs} epoch(s) on ${nTrain} generated ${size} px images, batch ${BATCH}${methods.includes('igd') ? ' (IGD: 16)' : ''}, median (min-max) of ${repeats} interleaved run(s)` +
        `${peer ? '' : ' (no python3-torch peer)'}; CPU ratio = CPU seconds of the training loops; RSS = peak resident memory of each side's process`,
      rows,
    );
    for (const line of warnings) process.stdout.write(`WARNING: ${line}\n`);
    writeJson('train', { machine: machineInfo(Math.max(...threadList)), size, batch: BATCH, epochs, train: nTrain, test: nTest, repeats, results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
