/**
 * `npm run bench -- semirest [--size 256] [--train 16] [--test 8] [--anomalies 4] [--epochs 2] [--threads 1]
 * [--steps 20] [--batch 16] [--repeats 3]`: SemiREST's speed (lib/methods/semirest.ts, native/train/semirest.cc).
 * SemiREST has no public code, so there is no official peer to compare with.
 *
 * 1. End to end on `imiad synth` data (one category, --size px, the supervised setting with --anomalies labelled
 *    anomalies): the fit's preparation (bank features + the pool's residuals), the time of one training epoch over the
 *    pool, and the per-image prediction latency (backbone, and matching + transformer + maps), median and p95.
 * 2. The transformer's training step against a PyTorch writing of the same transformer (bench/peers/semirest_torch.py,
 *    written from the paper's description as docs/detectors-semirest.md fixes it, NOT official code), from the same
 *    exported weights and the same batches (random residual maps [batch, 256, g, g] with g = size / 8 and blob
 *    labels): the largest relative difference of the two 20-step loss trajectories (a check of the port, 1e-4) and,
 *    over --repeats interleaved rounds (bench/common.ts measureInterleaved), imiad's time over the peer's.
 * The machine's load is watched and printed. Table + bench/results/semirest.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { trainingAvailable, trainAddonPath, TrainModel, type Nchw } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { SemiRest } from '../lib/methods/semirest';
import { Random } from '../lib/prng';
import { supervisedSplit } from '../lib/settings/supervised';
import { compareSteps, formatSpread, intFlag, machineInfo, peerAvailable, printTable, runPeer, spreadOf, type StepPeerResult, timeSteps, watchLoad, writeJson } from './common';

const ARCH = { dim: 96, depth: 4, heads: 3, window: 8, mlpRatio: 4 };
const CHANNELS = 256;
const LR = 2e-4;
const WEIGHT_DECAY = 0.05;
const GAMMA = 2;

export interface SemiRestJob {
  dir: string;
  grid: number;
  batch: number;
  steps: number;
  seed: number;
  threads: number;
  window: number;
  batches: Array<{ residuals: Nchw; labels: Nchw }>;
}

function createModel(job: { seed: number; threads: number; window: number }): TrainModel {
  return new TrainModel({
    kind: 'semirest',
    channels: [CHANNELS],
    seed: job.seed,
    threads: job.threads,
    lr: LR,
    weightDecay: WEIGHT_DECAY,
    beta1: 0.9,
    beta2: 0.999,
    extra: { arch: [ARCH.dim, ARCH.depth, ARCH.heads, job.window, ARCH.mlpRatio], gamma: [GAMMA] },
  });
}

/** Writes the seeded transformer's initial weights and `steps` random batches (residual maps with raised blobs). */
export function writeSemiRestJob(dir: string, o: { grid: number; batch: number; steps: number; seed: number; threads: number }): SemiRestJob {
  const window = Math.min(ARCH.window, o.grid);
  const model = createModel({ ...o, window });
  const state = model.state();
  fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  const rng = new Random(o.seed).fork('semirest-bench');
  const g = o.grid;
  const P = g * g;
  const batches: SemiRestJob['batches'] = [];
  for (let s = 0; s < o.steps; s++) {
    const r = new Float32Array(o.batch * CHANNELS * P);
    const y = new Float32Array(o.batch * P);
    for (let i = 0; i < r.length; i++) r[i] = rng.normal() * 0.5;
    for (let j = 0; j < o.batch; j++) {
      if (j % 2 === 0) continue;
      const cy = rng.int(g);
      const cx = rng.int(g);
      const rad = 1 + rng.int(Math.max(1, g >> 3));
      for (let yy = 0; yy < g; yy++) {
        for (let xx = 0; xx < g; xx++) {
          if ((yy - cy) ** 2 + (xx - cx) ** 2 > rad * rad) continue;
          y[j * P + yy * g + xx] = 1;
          for (let c = 0; c < CHANNELS; c++) r[(j * CHANNELS + c) * P + yy * g + xx] += 1.5;
        }
      }
    }
    batches.push({ residuals: { data: r, shape: [o.batch, CHANNELS, g, g] }, labels: { data: y, shape: [o.batch, 1, g, g] } });
    fs.writeFileSync(path.join(dir, `batch${s}.bin`), Buffer.concat([r, y].map((a) => Buffer.from(a.buffer))));
  }
  const meta = {
    arch: [ARCH.dim, ARCH.depth, ARCH.heads, window, ARCH.mlpRatio],
    channels: CHANNELS,
    grid: g,
    batch: o.batch,
    steps: o.steps,
    lr: LR,
    weightDecay: WEIGHT_DECAY,
    gamma: GAMMA,
    state: state.names.map((name, i) => ({ name, shape: state.shapes[i] })),
  };
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(meta));
  return { dir, ...o, window, batches };
}

export async function runSemiRestJob(job: SemiRestJob): Promise<{ losses: number[]; stepSeconds: number[] }> {
  const model = createModel(job);
  return timeSteps(job.batches, (b) => model.step(null, [b.residuals, b.labels]));
}

export type PeerResult = StepPeerResult;

export function runSemiRestPeer(job: SemiRestJob): PeerResult {
  return runPeer<PeerResult>('semirest_torch.py', [job.dir, String(job.threads)]);
}

function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

export async function main(args: string[]): Promise<void> {
  if (!trainingAvailable()) {
    process.stdout.write(`semirest bench skipped: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
    return;
  }
  const size = intFlag(args, 'size', 256, 32);
  const trainCount = intFlag(args, 'train', 16, 2);
  const testCount = intFlag(args, 'test', 8, 2);
  const anomalies = intFlag(args, 'anomalies', 4);
  const epochs = intFlag(args, 'epochs', 2);
  const threads = intFlag(args, 'threads', 1);
  const steps = intFlag(args, 'steps', 20);
  const batch = intFlag(args, 'batch', 16);
  const repeats = intFlag(args, 'repeats', 3);
  if (size % 8 !== 0) throw new Error(`Expected --size to be a multiple of 8 but received ${size}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-semirest-'));
  const load = watchLoad('semirest bench');
  try {
    // 1. End to end.
    const root = path.join(dir, 'mvtec');
    await synthesize('mvtec', root, { seed: 3, categories: 1, size, train: trainCount, test: testCount + anomalies + 4 });
    const [category] = await loadDataset('mvtec', root);
    const split = supervisedSplit(category, { seed: 0, anomalies });
    const detector = new SemiRest({ imageSize: size, cropSize: size, epochs, batchSize: batch, trainThreads: threads, threads, device: 'cpu' });
    const normals = split.train.filter((s) => s.sample.label === 'normal').length;
    // The last 'residuals' progress ends the preparation (bank + pool residuals); the epochs follow.
    let prepEnd = process.hrtime.bigint();
    let poolMaps = 0;
    const t0 = process.hrtime.bigint();
    await detector.fit(
      split.train.map((s) => s.sample),
      {
        onProgress: (_d, t, m) => {
          if (m === 'residuals') {
            prepEnd = process.hrtime.bigint();
            poolMaps = t - normals;
          }
        },
      },
    );
    const t1 = process.hrtime.bigint();
    const prepSeconds = Number(prepEnd - t0) / 1e9;
    const epochSeconds = Number(t1 - prepEnd) / 1e9 / epochs;
    const testSamples = split.test.map((s) => s.sample);
    await detector.predict(testSamples.slice(0, 1)); // warm-up (backbone session, k-NN indexes)
    await detector.predict(testSamples);
    const timing = detector.lastTiming();
    const backbone = timing.backboneMs;
    const method = timing.methodMs;
    const total = backbone.map((b, i) => b + method[i]);
    await detector.dispose();

    // 2. The transformer step against the PyTorch writing.
    const grid = size / 8;
    const jobDir = path.join(dir, 'job');
    fs.mkdirSync(jobDir);
    const job = writeSemiRestJob(jobDir, { grid, batch, steps, seed: 1, threads });
    const havePeer = peerAvailable(['torch', 'numpy']);
    const { ours, peer, rel, ratio } = await compareSteps(() => runSemiRestJob(job), havePeer ? () => runSemiRestPeer(job) : null, repeats);
    const report = load.finish();
    const ms = (v: number): string => v.toFixed(1);
    printTable(`SemiREST end to end: ${size} px, ${split.train.length} training images (${anomalies} labelled anomalies), pool of ${poolMaps} maps, batch ${batch}, ${threads} thread(s); no official code exists, so no official peer`, [
      {
        'prep s (bank + residuals)': prepSeconds.toFixed(2),
        's/epoch': epochSeconds.toFixed(2),
        'latency ms p50': ms(quantile(total, 0.5)),
        'latency ms p95': ms(quantile(total, 0.95)),
        'backbone ms p50': ms(quantile(backbone, 0.5)),
        'match+transformer+map ms p50': ms(quantile(method, 0.5)),
        busy: report.busy,
      },
    ]);
    printTable(`SemiREST transformer step vs a PyTorch writing of it (not official code): ${steps} steps, batch ${batch}, ${CHANNELS} x ${grid} x ${grid} residuals`, [
      {
        'imiad s/steps': formatSpread(spreadOf(ours.ms.runs.map((v) => v / 1000))),
        'torch s/steps': peer ? formatSpread(spreadOf(peer.ms.runs.map((v) => v / 1000))) : '- (python3 lacks torch/numpy)',
        'time ratio': ratio ? formatSpread(ratio) : '-',
        'max rel loss diff': rel === null ? '-' : rel.toExponential(2),
        busy: report.busy,
      },
    ]);
    writeJson('semirest', {
      machine: machineInfo(threads),
      load: report,
      size,
      train: split.train.length,
      anomalies,
      epochs,
      batch,
      threads,
      poolMaps,
      prepSeconds,
      epochSeconds,
      latencyMs: { p50: quantile(total, 0.5), p95: quantile(total, 0.95), backboneP50: quantile(backbone, 0.5), methodP50: quantile(method, 0.5) },
      step: { steps, repeats, imiad: ours, peer: peer ?? null, maxRelativeLossDiff: rel, timeRatio: ratio },
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
