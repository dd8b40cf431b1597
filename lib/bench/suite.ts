/**
 * `imiad bench`: each kernel swept over sizes, imiad against the Python peers found on the machine, every size
 * measured like the repository's benches (lib/bench/common.ts measureInterleaved: interleaved rounds, medians with
 * their spread, the load watched), then the growth exponent of each contender fitted over the sweep and the curve
 * drawn (lib/bench/scaling.ts). The per-size measurements are the cases that `npm run bench` runs too
 * (lib/bench/knn.ts, coreset.ts, metrics.ts, patchcore.ts, train.ts). The CLI is lib/cli/bench.ts.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { invalidRange } from '../../bindings/errors';
import { cpuAddon } from '../../bindings/load';
import { type LoadReport, missingPeerModules, peerPython, ratioSpread, randomFloats, type Spread, watchLoad } from './common';
import { coresetData, measureCoresetCase } from './coreset';
import { FAISS_CPU_PEERS, FAISS_GPU_PEER, measureKnnCase, writePeerInputs } from './knn';
import { makeData, measureMetricsMemory, METRICS_PEER_MODULES } from './metrics';
import { measurePatchcoreCase, PATCHCORE_PEER_MODULES } from './patchcore';
import { growthExponent, type Growth, seriesOf } from './scaling';
import { measureTrainCase, prepareTrainFeatures, prepareTrainImages, TRAIN_PEER_MODULES } from './train';

export const BENCH_KERNELS = ['knn', 'knn-queries', 'coreset', 'metrics', 'patchcore', 'train'] as const;
export type BenchKernel = (typeof BENCH_KERNELS)[number];

export interface BenchOptions {
  /** The sweep (its meaning per kernel: BENCH_DEFAULTS[kernel].sweep); default BENCH_DEFAULTS[kernel].sizes. */
  sizes?: number[];
  repeats: number;
  device: 'cpu' | 'cuda';
  peers: 'auto' | 'none';
  /** k-NN and coreset feature width (default 1024 and 128). */
  dims?: number;
  /** k-NN queries (default 784: the patches of one 224 px image at stride 8). */
  queries?: number;
  /** knn-queries: the bank's rows (default 16384). */
  rows?: number;
  /** Metrics: the side of each square anomaly map (default 1024). PatchCore and train: the image side (default 256). */
  imageSize?: number;
  /** Progress and notes (stderr in the CLI). */
  log: (line: string) => void;
}

/** Whether one peer ran, and if not why and how to install what it lacks. */
export interface PeerNote {
  name: string;
  found: boolean;
  /** The Python modules it needs that the peers' Python lacks. */
  missing: string[];
  reason?: string;
  install?: string;
}

export interface BenchPoint {
  /** The size swept (see BenchResult.size). */
  size: number;
  /** Wall time in ms per contender: median, min, max and every round. */
  contenders: Record<string, Spread>;
  /** Per peer: its time / imiad's, per round (> 1: imiad faster). */
  speedup: Record<string, Spread>;
  /** Agreement checks and extra figures (same indices, same selection, metric differences, bank rows...). */
  checks: Record<string, number | string | boolean | null>;
}

export interface BenchResult {
  kernel: BenchKernel;
  title: string;
  /** What `size` counts. */
  size: string;
  /** The letter of the growth formula (time ~ N^b). */
  variable: string;
  device: 'cpu' | 'cuda';
  repeats: number;
  parameters: Record<string, number | string>;
  peers: PeerNote[];
  points: BenchPoint[];
  /** Per contender: the fitted exponent b of time ~ size^b. */
  growth: Record<string, Growth>;
  load: LoadReport;
  notes: string[];
}

/** Per kernel: the default sweep, what --sizes counts, what the curve's x (a point's size) counts, the growth letter. */
export const BENCH_DEFAULTS: Record<BenchKernel, { sizes: number[]; sweep: string; size: string; variable: string }> = {
  knn: { sizes: [4096, 16384, 65536, 262144], sweep: 'bank rows', size: 'bank rows', variable: 'N' },
  'knn-queries': { sizes: [196, 784, 3136, 12544], sweep: 'queries', size: 'queries', variable: 'Q' },
  coreset: { sizes: [10000, 40000, 160000, 400000], sweep: 'rows', size: 'rows', variable: 'N' },
  metrics: { sizes: [10, 20, 50, 100, 200], sweep: 'anomaly maps', size: 'anomaly maps', variable: 'M' },
  patchcore: { sizes: [10, 20, 40, 80], sweep: 'training images (the curve: against the memory bank rows)', size: 'memory bank rows', variable: 'N' },
  train: { sizes: [8, 16, 32], sweep: 'training images per epoch', size: 'training images per epoch', variable: 'N' },
};

/** Debian package and pip name of each Python module a peer needs. */
const INSTALL: Record<string, [string, string]> = {
  faiss: ['python3-faiss', 'faiss-cpu'],
  torch: ['python3-torch', 'torch'],
  torchvision: ['python3-torchvision', 'torchvision'],
  numpy: ['python3-numpy', 'numpy'],
  scipy: ['python3-scipy', 'scipy'],
  sklearn: ['python3-sklearn', 'scikit-learn'],
  tifffile: ['python3-tifffile', 'tifffile'],
  PIL: ['python3-pil', 'pillow'],
};

/** How to install the modules named (Debian's packages or pip), and where imiad looks for Python. */
export function installHint(modules: string[]): string {
  const deb = modules.map((m) => INSTALL[m]?.[0] ?? `python3-${m}`);
  const pip = modules.map((m) => INSTALL[m]?.[1] ?? m);
  return `sudo apt-get install ${deb.join(' ')} (or pip install ${pip.join(' ')} and set IMIAD_PEER_PYTHON to that python)`;
}

/** Runs a Python snippet with the peers' Python: true when it exits 0. */
function pythonSays(code: string): boolean {
  return spawnSync(peerPython(), ['-c', code], { stdio: 'ignore' }).status === 0;
}

/** Whether a peer can run: its modules import, and with `gpu` its GPU check passes. */
export function findPeer(name: string, modules: string[], mode: 'auto' | 'none', gpu?: { check: string; reason: string; install: string }): PeerNote {
  if (mode === 'none') return { name, found: false, missing: [], reason: '--peers none' };
  const missing = missingPeerModules(modules);
  if (missing.length > 0) {
    const python = peerPython();
    const where = fs.existsSync(python) ? `${python} lacks ${missing.join(', ')}` : `no Python at ${python}`;
    return { name, found: false, missing, reason: where, install: installHint(missing) };
  }
  if (gpu && !pythonSays(gpu.check)) return { name, found: false, missing: [], reason: gpu.reason, install: gpu.install };
  return { name, found: true, missing: [] };
}

interface Sweep {
  title: string;
  parameters: Record<string, number | string>;
  peers: PeerNote[];
  points: BenchPoint[];
  notes: string[];
}

function requireSizes(sizes: number[], kernel: BenchKernel, min: number): void {
  for (const s of sizes) {
    if (!Number.isSafeInteger(s) || s < min) {
      throw invalidRange(`integers >= ${min}`, `--sizes of bench ${kernel}`, s);
    }
  }
}

const msLine = (name: string, ms: number): string => `  ${name} ${ms < 10 ? ms.toFixed(2) : ms.toFixed(0)} ms`;

/** k-NN swept over the bank's rows (queries fixed: `knn`) or over the queries (bank fixed: `knn-queries`). */
async function sweepKnnOver(axis: 'rows' | 'queries', o: BenchOptions, sizes: number[]): Promise<Sweep> {
  const dims = o.dims ?? 1024;
  const k = 1;
  const gpu = o.device === 'cuda';
  const spec = gpu ? FAISS_GPU_PEER : FAISS_CPU_PEERS[0];
  const note = findPeer(spec.label, ['faiss', 'numpy'], o.peers, gpu
    ? { check: 'import faiss, sys; sys.exit(0 if faiss.get_num_gpus() > 0 else 1)', reason: 'faiss sees no GPU (a CPU-only faiss build)', install: 'pip install faiss-gpu (a faiss built with CUDA), and set IMIAD_PEER_PYTHON to that python' }
    : undefined);
  const fixedRows = o.rows ?? 16384;
  const fixedQueries = o.queries ?? 784;
  const maxRows = axis === 'rows' ? Math.max(...sizes) : fixedRows;
  const maxQueries = axis === 'queries' ? Math.max(...sizes) : fixedQueries;
  const bank = randomFloats(maxRows * dims, 1);
  const allQueries = randomFloats(maxQueries * dims, 2);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-knn-'));
  const points: BenchPoint[] = [];
  let files: ReturnType<typeof writePeerInputs> | undefined;
  try {
    for (const size of sizes) {
      const rows = axis === 'rows' ? size : fixedRows;
      const nq = axis === 'queries' ? size : fixedQueries;
      const queries = allQueries.subarray(0, nq * dims);
      // The peer reads the first `rows` rows of the bank file and exactly the queries of the case: the files are
      // written once over the rows, once per size over the queries.
      if (note.found && (files === undefined || axis === 'queries')) files = writePeerInputs(bank, queries, tmp);
      o.log(`knn: ${nq} queries x ${rows} rows x ${dims} dims, k = ${k}`);
      const r = await measureKnnCase({
        bank, queries, dims, rows, k, repeats: o.repeats, device: o.device, peers: note.found ? [spec] : [], files, plainQueries: 0,
        onRun: (name, ms) => o.log(msLine(name, ms)),
      });
      const point: BenchPoint = { size, contenders: { imiad: r.ours.ms }, speedup: {}, checks: { 'first search ms': r.prepareMs } };
      for (const p of r.peers) {
        point.contenders[p.peer] = p.ms;
        point.speedup[p.peer] = ratioSpread(p.measured, r.ours);
        point.checks[`${p.peer}: queries with other neighbours`] = p.differing;
      }
      points.push(point);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const where = `on the ${o.device.toUpperCase()}${gpu ? '' : ` (${cpuAddon<{ knnKernel: string }>().knnKernel} kernel)`}`;
  return axis === 'rows'
    ? { title: `Exact k-NN (L2), ${fixedQueries} queries x ${dims} dims, k = ${k}, ${where}`, parameters: { queries: fixedQueries, dims, k }, peers: [note], points, notes: [] }
    : { title: `Exact k-NN (L2), ${fixedRows} bank rows x ${dims} dims, k = ${k}, ${where}`, parameters: { rows: fixedRows, dims, k }, peers: [note], points, notes: [] };
}

/** The reference-form torch loop is left out above this many rows: its time grows as N^2 or faster (hours at 400,000). */
export const CORESET_REFERENCE_MAX_ROWS = 40000;

async function sweepCoreset(o: BenchOptions, sizes: number[]): Promise<Sweep> {
  const dims = o.dims ?? 128;
  const seed = 1;
  process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
  const gpu = o.device === 'cuda';
  const gpuCheck = gpu
    ? { check: 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)', reason: 'torch sees no GPU (a CPU-only torch build)', install: 'pip install torch (a CUDA build), and set IMIAD_PEER_PYTHON to that python' }
    : undefined;
  const strong = findPeer('torch strong', ['torch', 'numpy'], o.peers, gpuCheck);
  const reference = { ...strong, name: 'torch reference' };
  const forms = strong.found ? (['strong', 'reference'] as const) : [];
  const file = path.join(os.tmpdir(), `imiad-bench-coreset-${process.pid}.f32`);
  const points: BenchPoint[] = [];
  try {
    for (const rows of sizes) {
      const count = Math.max(1, Math.floor(rows / 10));
      o.log(`coreset: ${count} of ${rows} rows x ${dims} dims (patch-like data)`);
      const x = coresetData('patch', rows, dims, seed);
      const formsHere = forms.filter((f) => f !== 'reference' || rows <= CORESET_REFERENCE_MAX_ROWS);
      const r = await measureCoresetCase({
        x, rows, dims, count, projectionDims: 0, seed, repeats: o.repeats, device: o.device, oneThread: false, plain: false, checkFloat64: false,
        peers: formsHere, peerFile: file, peerThreads: 0, peerDevice: o.device, onRun: (name, ms) => o.log(msLine(name, ms)),
      });
      const point: BenchPoint = { size: rows, contenders: { imiad: r.imiad.ms }, speedup: {}, checks: {} };
      for (const form of formsHere) {
        const m = r.peers[form]!;
        point.contenders[m.name] = m.ms;
        point.speedup[m.name] = ratioSpread(m, r.imiad);
        const d = r.firstDifference[form];
        point.checks[`${m.name}: same selection`] = d === -1 ? 'yes' : `from ${d}`;
      }
      points.push(point);
    }
  } finally {
    fs.rmSync(file, { force: true });
  }
  return {
    title: `Greedy coreset, 10 % of the rows selected, exact ${dims}-dim distances, patch-like data, on the ${o.device.toUpperCase()}`,
    parameters: { dims, fraction: 0.1, data: 'patch', seed },
    peers: [strong, reference],
    points,
    notes: [
      'torch strong: the greedy loop with the row norms computed once; torch reference: the step of patchcore-inspection\'s sampler as written there (norms recomputed every step).',
      ...(forms.length > 0 && sizes.some((n) => n > CORESET_REFERENCE_MAX_ROWS)
        ? [`torch reference: not run above ${CORESET_REFERENCE_MAX_ROWS} rows (its time grows as N^2 or faster: hours at 400,000 rows)`]
        : []),
    ],
  };
}

async function sweepMetrics(o: BenchOptions, sizes: number[]): Promise<Sweep> {
  const side = o.imageSize ?? 1024;
  const limit = 0.3;
  const note = findPeer('scikit-learn + official AU-PRO', METRICS_PEER_MODULES, o.peers);
  const all = makeData(Math.max(...sizes), side);
  const points: BenchPoint[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-metrics-'));
  try {
    for (const count of sizes) {
      o.log(`metrics: ${count} maps of ${side} x ${side}`);
      const r = await measureMetricsMemory({
        images: all.slice(0, count), limit, repeats: o.repeats, oneThread: false, peerDir: note.found ? dir : undefined, onRun: (name, ms) => o.log(msLine(name, ms)),
      });
      const scores = r.imiad.results[0];
      const point: BenchPoint = { size: count, contenders: { imiad: r.imiad.ms }, speedup: {}, checks: { 'pixel AUROC': scores.auroc, 'pixel AP': scores.ap, 'AU-PRO 0.3': scores.aupro } };
      if (r.peer) {
        point.contenders[r.peer.name] = r.peer.ms;
        point.speedup[r.peer.name] = r.ratio!;
        point.checks['|difference|'] = r.difference;
      }
      points.push(point);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return {
    title: `Pixel AUROC + AP + AU-PRO (FPR <= ${limit}) of ${side} x ${side} anomaly maps with masks, in memory, on the CPU`,
    parameters: { side, limit },
    peers: [note],
    points,
    notes: o.device === 'cuda' ? ['the metrics have no GPU kernel: they ran on the CPU'] : [],
  };
}

async function sweepPatchcore(o: BenchOptions, sizes: number[]): Promise<Sweep> {
  const imageSize = o.imageSize ?? 256;
  const testCount = 10;
  const note = findPeer('torch + faiss', PATCHCORE_PEER_MODULES, o.peers);
  const points: BenchPoint[] = [];
  for (const train of sizes) {
    o.log(`patchcore: ${train} training images of ${imageSize} px, ${testCount} test images`);
    const r = await measurePatchcoreCase({
      shape: 'resnet18', imageSize, train, test: testCount, repeats: o.repeats, peer: note.found, onRun: (name, ms) => o.log(`  ${name} ${ms.toFixed(1)} ms per image`),
    });
    const point: BenchPoint = { size: r.bankRows, contenders: { imiad: r.imiad.ms }, speedup: {}, checks: { 'training images': train, 'imiad k-NN ms': r.imiadStages.knn } };
    if (r.peer) {
      point.contenders[r.peer.name] = r.peer.ms;
      point.speedup[r.peer.name] = ratioSpread(r.peer, r.imiad);
      point.checks['peer k-NN ms'] = r.peerStages!.knn;
      point.checks['Spearman of the scores'] = r.spearman;
    }
    points.push(point);
  }
  return {
    title: `PatchCore per-image latency (ResNet-18-shaped backbone, ${imageSize} px, ${testCount} test images, median per image) against its memory bank, on the ${o.device.toUpperCase()}`,
    parameters: { backbone: 'resnet18', imageSize, test: testCount },
    peers: [note],
    points,
    notes: ['the bank grows with the training images (10 % of their patches); the backbone\'s share of the time does not'],
  };
}

async function sweepTrain(o: BenchOptions, sizes: number[]): Promise<Sweep> {
  const imageSize = o.imageSize ?? 256;
  const testCount = 8;
  const threads = os.availableParallelism();
  const note = findPeer('torch', TRAIN_PEER_MODULES, o.peers);
  const points: BenchPoint[] = [];
  for (const train of sizes) {
    o.log(`train: STPM, one epoch of ${train} images of ${imageSize} px, batch 8, ${threads} thread(s)`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-train-'));
    try {
      const images = await prepareTrainImages(dir, { size: imageSize, train, test: testCount, epochs: 1 });
      const features = await prepareTrainFeatures(images, 'stpm');
      const r = await measureTrainCase(images, features, { threads, repeats: o.repeats, peer: note.found, log: (t) => o.log(t.trimEnd()), onRun: (name, ms) => o.log(msLine(`${name} epoch`, ms)) });
      const epochMs = (s: Spread): Spread => ({ median: s.median * 1000, min: s.min * 1000, max: s.max * 1000, runs: s.runs.map((v) => v * 1000) });
      const point: BenchPoint = { size: train, contenders: { imiad: epochMs(r.epoch_s.imiad) }, speedup: {}, checks: { 'imiad RSS MB': Math.round(r.rss_mb.imiad), 'imiad AUROC': r.imiad[0].auroc } };
      if (r.epoch_s.peer && r.ratio) {
        point.contenders.torch = epochMs(r.epoch_s.peer);
        point.speedup.torch = { median: 1 / r.ratio.median, min: 1 / r.ratio.max, max: 1 / r.ratio.min, runs: r.ratio.runs.map((v) => 1 / v) };
        point.checks['torch RSS MB'] = r.rss_mb.peer === null ? null : Math.round(r.rss_mb.peer);
        point.checks['max loss rel. diff'] = r.max_loss_relative_diff;
      }
      points.push(point);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  return {
    title: `STPM training, time of one epoch (ResNet-18-shaped teacher, ${imageSize} px, batch 8, ${threads} thread(s)), on the CPU`,
    parameters: { method: 'stpm', imageSize, batch: 8, threads, epochs: 1 },
    peers: [note],
    points,
    notes: o.device === 'cuda' ? ['the training benchmark times the training addon on the CPU (--device applies to the k-NN and coreset kernels)'] : [],
  };
}

const SWEEPS: Record<BenchKernel, (o: BenchOptions, sizes: number[]) => Promise<Sweep>> = {
  knn: (o, sizes) => sweepKnnOver('rows', o, sizes),
  'knn-queries': (o, sizes) => sweepKnnOver('queries', o, sizes),
  coreset: sweepCoreset,
  metrics: sweepMetrics,
  patchcore: sweepPatchcore,
  train: sweepTrain,
};

/** Sweeps one kernel and fits the growth of every contender. */
export async function benchKernel(kernel: BenchKernel, o: BenchOptions): Promise<BenchResult> {
  const defaults = BENCH_DEFAULTS[kernel];
  const sizes = o.sizes ?? defaults.sizes;
  requireSizes(sizes, kernel, kernel === 'coreset' ? 10 : 1);
  const load = watchLoad(`bench ${kernel}`, (text) => o.log(text.trimEnd()));
  const sweep = await SWEEPS[kernel](o, [...sizes].sort((a, b) => a - b));
  const report = load.finish();
  const growth = Object.fromEntries(seriesOf(sweep.points).map((s) => [s.name, growthExponent(s.points)]));
  return { kernel, title: sweep.title, size: defaults.size, variable: defaults.variable, device: o.device, repeats: o.repeats, parameters: sweep.parameters, peers: sweep.peers, points: sweep.points, growth, load: report, notes: sweep.notes };
}
