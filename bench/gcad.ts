/**
 * `npm run bench -- gcad [--train 16] [--size 256] [--epochs 2] [--threads 1,2] [--repeats 3] [--layers layer2]`: GCAD's training
 * (native/train/gcad.cc) against its PyTorch peer (bench/peers/gcad_torch.py, written from the paper's text: no
 * official code exists). Generated MVTec-layout images (`imiad synth`) go through the default ResNet-18-shaped
 * backbone once (the teacher: GCAD's default tap, layer2, or --layers); the images and features are written to files, imiad builds the
 * networks and the teacher statistics and writes the initial state; then, for each thread count, imiad (a child
 * process of this script: `gcad --child <job>`) and the peer train from that state on the same batches, `--repeats`
 * times each, interleaved (bench/common.ts measureInterleaved), and compute the map statistics on the validation
 * images. Reported: epoch time (median over the epochs of a run; the table gives the median and range over the
 * runs), imiad / torch per interleaved pair, CPU seconds of the training loops, peak resident memory of each
 * process, the largest relative difference of the per-step losses and of the map statistics, and the load of the
 * machine. Targets: epoch time <= 0.9x the peer's, losses within 1e-4 relative.
 * Table + bench/results/gcad.json.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { type Nchw, trainAddon, trainingAvailable, trainAddonPath, TrainModel } from '../bindings/train/train';
import { loadBackbone } from '../lib/backbone/session';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { batches } from '../lib/image/pipeline';
import { GCAD_DEFAULTS } from '../lib/methods/gcad';
import { Random } from '../lib/prng';
import { flag, formatSpread, intFlag, machineInfo, maxRelativeDiff, measureInterleaved, median, peerAvailable, printTable, type Row, runPeer, spreadOf, timed, watchLoad, writeJson } from './common';

/** Images and teacher levels of a set of images, NCHW each. */
export interface GcadData {
  n: number;
  images: Float32Array;
  teacher: Float32Array[];
}

/** What both sides of a run are given (bench/peers/gcad_torch.py reads the same file; paths relative to it). */
export interface GcadJob {
  threads: number;
  lr: number;
  weightDecay: number;
  bottleneck: number;
  image: [number, number];
  grid: [number, number];
  /** [c, h, w] of each teacher level. */
  shapes: number[][];
  train: { n: number; images: string; teacher: string[] };
  validation: { n: number; images: string; teacher: string[] } | null;
  /** Epochs, each a list of batches, each a list of training image indices. */
  epochs: number[][][];
  /** The initial state (weights and teacher statistics) as one float32 file, in the order of stateNames. */
  state: string;
  stateNames: Array<{ name: string; shape: number[] }>;
}

/** What one side reports. */
export interface GcadRunResult {
  losses: number[];
  step_seconds: number[];
  epoch_ms: number[];
  map_mean: number[] | null;
  map_std: number[] | null;
  train_cpu_s: number;
  cpu_s: number;
  max_rss_kb: number;
  /** The peer: how far imiad's teacher statistics are from its own. */
  teacher_mean_max_abs_diff?: number;
  teacher_std_max_rel_diff?: number;
}

const writeFloats = (file: string, a: Float32Array): void => fs.writeFileSync(file, Buffer.from(a.buffer, a.byteOffset, a.byteLength));

function readFloats(file: string): Float32Array {
  const b = fs.readFileSync(file);
  const aligned = b.byteOffset % 4 === 0 ? b : Buffer.from(b);
  return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
}

function pick(src: Float32Array, idx: number[], per: number): Float32Array {
  const out = new Float32Array(idx.length * per);
  idx.forEach((i, j) => out.set(src.subarray(i * per, (i + 1) * per), j * per));
  return out;
}

function batchOf(data: GcadData, idx: number[], image: [number, number], shapes: number[][]): { images: Nchw; teacher: Nchw[] } {
  const m = idx.length;
  return {
    images: { data: pick(data.images, idx, 3 * image[0] * image[1]), shape: [m, 3, image[0], image[1]] },
    teacher: shapes.map((s, l) => ({ data: pick(data.teacher[l], idx, s[0] * s[1] * s[2]), shape: [m, s[0], s[1], s[2]] })),
  };
}

function modelOf(job: GcadJob): TrainModel {
  return new TrainModel({
    kind: 'gcad',
    channels: job.shapes.map((s) => s[0]),
    seed: 0,
    threads: job.threads,
    lr: job.lr,
    weightDecay: job.weightDecay,
    beta1: 0.9,
    beta2: 0.999,
    extra: { image: job.image, grid: job.grid, bottleneck: [job.bottleneck] },
  });
}

/**
 * Writes a job into `dir` (job.json, the data files, the initial state): imiad builds the networks (seed 0) and the
 * teacher statistics over the training images (batches of 8, in order); returns the job file.
 */
export async function writeGcadJob(
  dir: string,
  spec: Omit<GcadJob, 'train' | 'validation' | 'state' | 'stateNames'> & { train: GcadData; validation: GcadData | null },
): Promise<string> {
  const files = (name: string, d: GcadData): { n: number; images: string; teacher: string[] } => {
    writeFloats(path.join(dir, `${name}.images.f32`), d.images);
    d.teacher.forEach((t, l) => writeFloats(path.join(dir, `${name}.l${l}.f32`), t));
    return { n: d.n, images: `${name}.images.f32`, teacher: d.teacher.map((_, l) => `${name}.l${l}.f32`) };
  };
  const job: GcadJob = { ...spec, train: files('train', spec.train), validation: spec.validation ? files('validation', spec.validation) : null, state: 'state.f32', stateNames: [] };
  const model = modelOf(job);
  for (let s = 0; s < spec.train.n; s += 8) {
    const idx = Array.from({ length: Math.min(8, spec.train.n - s) }, (_, j) => s + j);
    await model.calibrateStage('teacher', null, batchOf(spec.train, idx, job.image, job.shapes).teacher, s === 0);
  }
  const state = model.state();
  fs.writeFileSync(path.join(dir, job.state), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  job.stateNames = state.names.map((name, i) => ({ name, shape: state.shapes[i] }));
  const file = path.join(dir, 'job.json');
  fs.writeFileSync(file, JSON.stringify(job));
  return file;
}

/** imiad's side of a job, in this process: load the state, train on the job's batches, the map statistics. */
export async function runImiadJob(jobFile: string): Promise<GcadRunResult> {
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as GcadJob;
  const dir = path.dirname(jobFile);
  const read = (s: { n: number; images: string; teacher: string[] }): GcadData => ({
    n: s.n,
    images: readFloats(path.join(dir, s.images)),
    teacher: s.teacher.map((f) => readFloats(path.join(dir, f))),
  });
  const train = read(job.train);
  const model = modelOf(job);
  const raw = readFloats(path.join(dir, job.state));
  let offset = 0;
  const arrays = job.stateNames.map((e) => {
    const n = e.shape.reduce((a, b) => a * b, 1);
    const a = raw.slice(offset, offset + n);
    offset += n;
    return a;
  });
  model.loadState({ names: job.stateNames.map((e) => e.name), shapes: job.stateNames.map((e) => e.shape), arrays });
  const losses: number[] = [];
  const stepSeconds: number[] = [];
  const epochMs: number[] = [];
  const u0 = process.resourceUsage();
  for (const epoch of job.epochs) {
    const te = process.hrtime.bigint();
    for (const idx of epoch) {
      const b = batchOf(train, idx, job.image, job.shapes);
      const t = process.hrtime.bigint();
      losses.push(await model.step(b.images, b.teacher));
      stepSeconds.push(Number(process.hrtime.bigint() - t) / 1e9);
    }
    epochMs.push(Number(process.hrtime.bigint() - te) / 1e6);
  }
  const u1 = process.resourceUsage();
  let mapMean: number[] | null = null;
  let mapStd: number[] | null = null;
  if (job.validation) {
    const v = read(job.validation);
    const b = batchOf(v, Array.from({ length: v.n }, (_, i) => i), job.image, job.shapes);
    await model.calibrateStage('maps', b.images, b.teacher, true);
    const s = model.state();
    const get = (name: string): number[] => Array.from(s.arrays[s.names.indexOf(name)]);
    mapMean = get('map_mean');
    mapStd = get('map_std');
  }
  const u2 = process.resourceUsage();
  const cpu = (u: NodeJS.ResourceUsage): number => (u.userCPUTime + u.systemCPUTime) / 1e6;
  return { losses, step_seconds: stepSeconds, epoch_ms: epochMs, map_mean: mapMean, map_std: mapStd, train_cpu_s: cpu(u1) - cpu(u0), cpu_s: cpu(u2), max_rss_kb: u2.maxRSS };
}

/** Images and teacher features (taps of the default ResNet-18-shaped backbone) of image files. */
async function extract(paths: string[], size: number, threads: number, layers: string[]): Promise<{ data: GcadData; shapes: number[][] }> {
  const backbone = await loadBackbone({ shape: 'resnet18', layers, threads });
  const images: Float32Array[] = [];
  const teacher: Float32Array[][] = layers.map(() => []);
  let shapes: number[][] = [];
  for await (const b of batches(paths, { imageSize: size, cropSize: size, batchSize: 8 })) {
    const f = await backbone.extract(b.data, b.n, size, size);
    images.push(b.data.slice());
    layers.forEach((l, i) => teacher[i].push(f[l].data.slice()));
    shapes = layers.map((l) => [f[l].channels, f[l].height, f[l].width]);
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
  return { data: { n: paths.length, images: cat(images), teacher: teacher.map(cat) }, shapes };
}

function runChild(jobFile: string): GcadRunResult {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'run.js'), 'gcad', '--child', jobFile], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`imiad GCAD child failed (exit ${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as GcadRunResult;
}

export async function main(args: string[]): Promise<void> {
  const child = flag(args, 'child');
  if (child !== undefined) {
    process.stdout.write(`${JSON.stringify({ ...(await runImiadJob(child)), runtime: trainAddon().runtimeStats() })}\n`);
    return;
  }
  const nTrain = intFlag(args, 'train', 16);
  const size = intFlag(args, 'size', 256);
  const epochs = intFlag(args, 'epochs', 2);
  const repeats = intFlag(args, 'repeats', 3);
  const batch = 8;
  const layers = (flag(args, 'layers', GCAD_DEFAULTS.layers.join(',')) as string).split(',');
  const threadList = (flag(args, 'threads', '1,2') as string).split(',').map((t) => {
    const n = Number(t);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--threads: expected integers >= 1 separated by commas but received ${t}`);
    return n;
  });
  if (!trainingAvailable()) {
    process.stderr.write(`bench gcad: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
    process.exitCode = 1;
    return;
  }
  const peer = peerAvailable(['torch', 'numpy']);
  if (!peer) process.stdout.write('PyTorch peer skipped: /usr/bin/python3 cannot import torch (apt-get install python3-torch)\n');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-gcad-'));
  try {
    const root = path.join(dir, 'data');
    const nValidation = Math.max(1, Math.floor(nTrain / 4));
    await synthesize('mvtec', root, { seed: 7, categories: 1, size, train: nTrain + nValidation, test: 4 });
    const [category] = await loadDataset('mvtec', root);
    const normals = category.samples.filter((s) => s.split === 'train').map((s) => s.path);
    const train = await extract(normals.slice(0, nTrain), size, os.availableParallelism(), layers);
    const validation = await extract(normals.slice(nTrain), size, os.availableParallelism(), layers);
    const rng = new Random(0);
    const order = (): number[][] => {
      const o = rng.shuffle(Array.from({ length: nTrain }, (_, i) => i));
      return Array.from({ length: Math.ceil(nTrain / batch) }, (_, s) => o.slice(s * batch, (s + 1) * batch));
    };
    const epochList = Array.from({ length: epochs }, order);
    const grid: [number, number] = [train.shapes[0][1], train.shapes[0][2]];
    const rows: Row[] = [];
    const results: Record<string, unknown> = {};
    const warnings: string[] = [];
    for (const threads of threadList) {
      const sub = path.join(dir, `t${threads}`);
      fs.mkdirSync(sub);
      const jobFile = await writeGcadJob(sub, {
        threads,
        lr: 1e-4,
        weightDecay: 1e-5,
        bottleneck: 64,
        image: [size, size],
        grid,
        shapes: train.shapes,
        epochs: epochList,
        train: train.data,
        validation: validation.data,
      });
      const contenders = [{ name: 'imiad', run: () => timed(() => runChild(jobFile)) }];
      if (peer) contenders.push({ name: 'torch', run: () => timed(() => runPeer<GcadRunResult>('gcad_torch.py', [jobFile])) });
      const watch = watchLoad(`gcad, ${threads} thread(s)`);
      const done = await measureInterleaved(contenders, repeats);
      const load = watch.finish();
      if (load.busy) warnings.push(`${threads} thread(s): the machine was busy; these figures are not quiet-machine figures`);
      const mine = done[0].results;
      const theirs = peer ? done[1].results : null;
      const epochS = (r: GcadRunResult): number => median(r.epoch_ms) / 1000;
      const imiadEpoch = spreadOf(mine.map(epochS));
      const peerEpoch = theirs ? spreadOf(theirs.map(epochS)) : null;
      const ratio = theirs ? spreadOf(mine.map((r, i) => epochS(r) / epochS(theirs[i]))) : null;
      const cpuRatio = theirs ? median(mine.map((r, i) => r.train_cpu_s / theirs[i].train_cpu_s)) : null;
      const rss = (r: GcadRunResult): number => r.max_rss_kb / 1024;
      const lossDiff = theirs ? Math.max(...mine.map((r) => maxRelativeDiff(r.losses, theirs[0].losses))) : null;
      const statDiff =
        theirs && mine[0].map_mean && theirs[0].map_mean && mine[0].map_std && theirs[0].map_std
          ? Math.max(maxRelativeDiff(mine[0].map_mean, theirs[0].map_mean), maxRelativeDiff(mine[0].map_std, theirs[0].map_std))
          : null;
      rows.push({
        threads,
        'imiad epoch s': formatSpread(imiadEpoch),
        'torch epoch s': peerEpoch ? formatSpread(peerEpoch) : null,
        'imiad/torch': ratio ? formatSpread(ratio) : null,
        'CPU ratio': cpuRatio,
        'imiad RSS MB': Math.round(median(mine.map(rss))),
        'torch RSS MB': theirs ? Math.round(median(theirs.map(rss))) : null,
        'max loss rel. diff': lossDiff,
        'map stats rel. diff': statDiff,
        'teacher std rel. diff': theirs ? (theirs[0].teacher_std_max_rel_diff ?? null) : null,
        'time (<=0.9)': ratio === null ? null : ratio.median <= 0.9,
        'losses (<=1e-4)': lossDiff === null ? null : lossDiff <= 1e-4,
      });
      results[`t${threads}`] = { threads, imiad: mine, peer: theirs, load, epoch_s: { imiad: imiadEpoch, peer: peerEpoch }, ratio, cpu_ratio: cpuRatio, max_loss_relative_diff: lossDiff, map_stats_relative_diff: statDiff };
    }
    printTable(
      `GCAD training: ${epochs} epoch(s) on ${nTrain} generated ${size} px images (teacher: default ResNet-18 ${layers.join(' + ')}), batch ${batch}, median (min-max) of ${repeats} interleaved run(s)` +
        `${peer ? '' : ' (no python3-torch peer)'}`,
      rows,
    );
    for (const line of warnings) process.stdout.write(`WARNING: ${line}\n`);
    writeJson('gcad', { machine: machineInfo(Math.max(...threadList)), size, batch, epochs, train: nTrain, layers, repeats, results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
