/**
 * Training epochs of STPM and RD4AD: imiad's libtorch addon against the PyTorch peer (bench/peers/train_torch.py),
 * training the same architectures on the same teacher features (computed once by ONNX Runtime and written to binary
 * files) with the same batches, each run its own process (imiad's: lib/bench/train-child.ts) so that each side's peak
 * resident memory (getrusage's maxrss, read by the process itself) covers the same work: load the features, train,
 * score the test images (max of the smoothed map, for image AUROC). Runs are interleaved (measureInterleaved). Used by
 * `npm run bench -- train` (bench/train.ts) and `imiad bench train` (lib/bench/suite.ts).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { gaussianBlur } from '../../bindings/filters';
import { binaryClassificationMetrics } from '../../bindings/metrics';
import { type Nchw, trainAddon, TrainModel } from '../../bindings/train/train';
import type { BackboneShape } from '../backbone/builder';
import { loadBackbone } from '../backbone/session';
import { loadDataset } from '../datasets';
import { synthesize } from '../datasets/synth';
import { batches } from '../image/pipeline';
import { Random } from '../prng';
import { packageRoot } from '../../bindings/load';
import { type LoadReport, measureInterleaved, median, runPeer, type Spread, spreadOf, timed, watchLoad } from './common';

export const TRAIN_PEER_MODULES = ['torch', 'scipy', 'sklearn'];

const LAYERS = ['layer1', 'layer2', 'layer3'];
export const BATCH = 8;

export type TrainKind = 'stpm' | 'rd4ad';

interface Features {
  n: number;
  images: Float32Array;
  teacher: Float32Array[];
  shapes: number[][];
}

/** What one training process is given (the peer reads the same file). */
interface Job {
  kind: TrainKind;
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
export interface RunResult {
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

/** imiad's side of one run, in this (child) process: the same work as bench/peers/train_torch.py. */
export async function trainChild(jobFile: string): Promise<void> {
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as Job;
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
  const child = path.join(packageRoot(), 'dist', 'lib', 'bench', 'train-child.js');
  const r = spawnSync(process.execPath, [child, jobFile], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`imiad training child failed (exit ${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as RunResult;
}


/** The synthetic images of a training benchmark, the epochs' shuffled orders and the test labels. */
export interface TrainImages {
  dir: string;
  size: number;
  train: string[];
  test: string[];
  labels: number[];
  orders: number[][];
}

/** Writes `train` + `test` generated MVTec-layout images of `size` px under dir (seed 7) and draws the epochs' orders (seed 0). */
export async function prepareTrainImages(dir: string, o: { size: number; train: number; test: number; epochs: number }): Promise<TrainImages> {
  const root = path.join(dir, 'data');
  await synthesize('mvtec', root, { seed: 7, categories: 1, size: o.size, train: o.train, test: o.test });
  const [category] = await loadDataset('mvtec', root);
  const train = category.samples.filter((s) => s.split === 'train');
  const test = category.samples.filter((s) => s.split === 'test');
  const rng = new Random(0);
  return {
    dir,
    size: o.size,
    train: train.map((s) => s.path),
    test: test.map((s) => s.path),
    labels: Array.from(test, (s) => (s.label === 'anomaly' ? 1 : 0)),
    orders: Array.from({ length: o.epochs }, () => rng.shuffle(Array.from({ length: train.length }, (_, i) => i))),
  };
}

/** The teacher features of one method's images, written as raw float32 files (both sides read the same). */
export interface TrainFeatures {
  kind: TrainKind;
  backbone: BackboneShape;
  lr: number;
  shapes: number[][];
  files: Pick<Job, 'train' | 'test'>;
}

export async function prepareTrainFeatures(images: TrainImages, kind: TrainKind): Promise<TrainFeatures> {
  const shape: BackboneShape = kind === 'stpm' ? 'resnet18' : 'wide_resnet50_2';
  const extractThreads = os.availableParallelism();
  const trainF = await extract(images.train, shape, images.size, extractThreads);
  const testF = await extract(images.test, shape, images.size, extractThreads);
  const write = (name: string, a: Float32Array): string => {
    const file = path.join(images.dir, `${kind}.${name}.f32`);
    fs.writeFileSync(file, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    return file;
  };
  return {
    kind,
    backbone: shape,
    lr: kind === 'stpm' ? 0.4 : 0.005,
    shapes: trainF.shapes,
    files: {
      train: { n: trainF.n, images: kind === 'stpm' ? write('train.images', trainF.images) : null, teacher: trainF.teacher.map((t, l) => write(`train.l${l + 1}`, t)) },
      test: { n: testF.n, images: kind === 'stpm' ? write('test.images', testF.images) : null, teacher: testF.teacher.map((t, l) => write(`test.l${l + 1}`, t)) },
    },
  };
}

export interface TrainCaseResult {
  kind: TrainKind;
  threads: number;
  backbone: BackboneShape;
  imiad: RunResult[];
  peer: RunResult[] | null;
  load: LoadReport;
  /** Per run the median epoch time, in seconds; and each run's whole wall time in ms (process start to exit). */
  epoch_s: { imiad: Spread; peer: Spread | null };
  /** imiad's epoch time / the peer's, per interleaved pair of runs. */
  ratio: Spread | null;
  cpu_ratio: number | null;
  rss_mb: { imiad: number; peer: number | null };
  rss_ratio: number | null;
  auroc_diff: number | null;
  max_loss_relative_diff: number | null;
}

/** imiad and (with `peer`) the PyTorch peer train the same features `repeats` times each, interleaved. */
export async function measureTrainCase(
  images: TrainImages,
  features: TrainFeatures,
  o: { threads: number; repeats: number; peer: boolean; log?: (text: string) => void; onRun?: (name: string, epochMs: number) => void },
): Promise<TrainCaseResult> {
  const { kind } = features;
  const job: Job = { kind, crop: images.size, batch: BATCH, lr: features.lr, threads: o.threads, shapes: features.shapes, orders: images.orders, labels: images.labels, ...features.files };
  const jobFile = path.join(images.dir, `${kind}.t${o.threads}.n${images.train.length}.job.json`);
  fs.writeFileSync(jobFile, JSON.stringify(job));
  const contenders = [{ name: 'imiad', run: () => timed(() => runImiad(jobFile)) }];
  if (o.peer) contenders.push({ name: 'torch', run: () => timed(() => runPeer<RunResult>('train_torch.py', [jobFile])) });
  const watch = watchLoad(`train ${kind}, ${o.threads} thread(s)`, o.log);
  const done = await measureInterleaved(contenders, o.repeats, (name, r) => o.onRun?.(name, median(r.result.epoch_ms)));
  const load = watch.finish();
  const mine = done[0].results;
  const theirs = o.peer ? done[1].results : null;
  // A run's epoch time is the median over its epochs; the table gives the median over the runs and their range.
  const epochS = (r: RunResult): number => median(r.epoch_ms) / 1000;
  // Ratios of the interleaved pairs (run r of imiad against run r of the peer): drift hits both alike.
  const ratio = theirs ? spreadOf(mine.map((r, i) => epochS(r) / epochS(theirs[i]))) : null;
  const rssMb = (r: RunResult): number => r.max_rss_kb / 1024;
  const imiadRss = median(mine.map(rssMb));
  const peerRss = theirs ? median(theirs.map(rssMb)) : null;
  // Both seed libtorch's generator with 0 and initialise in the same module order, so the weights and the
  // loss trajectories agree as far as the two engines compute the same thing.
  const relDiff = (a: number[], b: number[]): number => Math.max(...a.map((l, i) => Math.abs(l - b[i]) / Math.abs(b[i])));
  return {
    kind,
    threads: o.threads,
    backbone: features.backbone,
    imiad: mine,
    peer: theirs,
    load,
    epoch_s: { imiad: spreadOf(mine.map(epochS)), peer: theirs ? spreadOf(theirs.map(epochS)) : null },
    ratio,
    cpu_ratio: theirs ? median(mine.map((r, i) => r.train_cpu_s / theirs[i].train_cpu_s)) : null,
    rss_mb: { imiad: imiadRss, peer: peerRss },
    rss_ratio: peerRss ? imiadRss / peerRss : null,
    auroc_diff: theirs ? Math.abs(mine[0].auroc - theirs[0].auroc) : null,
    max_loss_relative_diff: theirs ? Math.max(...mine.map((r) => relDiff(r.losses, theirs[0].losses)), ...theirs.map((r) => relDiff(r.losses, theirs[0].losses))) : null,
  };
}
