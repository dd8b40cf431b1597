/**
 * `npm run bench -- draem [--steps 20] [--size 64] [--batch 8] [--threads 1] [--repeats 3] [--widths 128,64]`:
 * fidelity and speed of DRAEM's training step (native/train/draem.cc) against the PyTorch peer that runs the official
 * VitjanZ/DRAEM networks and losses (bench/peers/draem_torch.py, Debian's python3-torch). imiad builds both networks
 * (seed 1), exports their initial weights, and draws `steps` synthetic batches with lib/synthesis from seeded
 * Perlin-noise "clean" images (Perlin textures, the official probabilities); the learning rate follows MultiStepLR
 * as if each step were an epoch of a `steps`-epoch run (so the 80 % / 90 % drops happen inside the trajectory).
 * The peer loads the same weights and trains on the same batches (the batches are passed, not the seed).
 * Reported: the largest relative difference of the two loss trajectories (target 1e-4), and, over `repeats`
 * interleaved rounds (bench/common.ts measureInterleaved, fresh networks each round), the time of the `steps` steps
 * (an "epoch" of steps x batch images) of imiad over the peer's (target <= 0.9x), with the machine's load.
 * Table + bench/results/draem.json.
 */
import * as fs from 'fs';
import * as path from 'path';

import { TrainModel, type Nchw } from '../bindings/train/train';
import { draemLearningRate } from '../lib/methods/draem';
import { Random } from '../lib/prng';
import { AnomalySynthesiser, perlinNoise } from '../lib/synthesis';
import { flag, peerAvailable, runPeer, stepBench, type StepPeerResult, timeSteps } from './common';

export interface DraemJob {
  dir: string;
  size: number;
  batch: number;
  steps: number;
  widths: [number, number];
  seed: number;
  threads: number;
  /** Each step's clean images, augmented images, masks and learning rate. */
  batches: Array<{ clean: Nchw; augmented: Nchw; mask: Nchw; lr: Nchw }>;
}

/** A smooth random RGB image in [0, 1] (CHW): a Perlin field per channel. */
function cleanImage(rng: Random, size: number): Float32Array {
  const out = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    const p = perlinNoise(rng, size, size, 4, 4);
    for (let i = 0; i < p.length; i++) out[c * size * size + i] = Math.min(1, Math.max(0, 0.5 + 0.4 * p[i]));
  }
  return out;
}

/**
 * Writes a job to `dir`: meta.json, the initial weights of a seeded DRAEM (state.bin) and the synthetic batches
 * (batch<i>.bin: clean, augmented, mask, lr as float32). Returns the batches too.
 */
export async function writeDraemJob(dir: string, o: { size: number; batch: number; steps: number; widths: [number, number]; seed: number; threads: number; lr?: number }): Promise<DraemJob> {
  const lr0 = o.lr ?? 1e-4;
  const model = new TrainModel({ kind: 'draem', channels: [], seed: o.seed, threads: o.threads, lr: lr0, beta1: 0.9, beta2: 0.999, extra: { widths: o.widths } });
  const state = model.state();
  fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  const synth = await AnomalySynthesiser.create({ size: o.size });
  const rng = new Random(o.seed).fork('draem-bench');
  const plane = 3 * o.size * o.size;
  const batches: DraemJob['batches'] = [];
  for (let step = 0; step < o.steps; step++) {
    const clean = new Float32Array(o.batch * plane);
    const augmented = new Float32Array(o.batch * plane);
    const mask = new Float32Array(o.batch * o.size * o.size);
    for (let j = 0; j < o.batch; j++) {
      const s = await synth.sample(cleanImage(rng.fork('image', step, j), o.size), rng.fork('synthesis', step, j));
      clean.set(s.clean, j * plane);
      augmented.set(s.augmented, j * plane);
      mask.set(s.mask, j * o.size * o.size);
    }
    const lr = new Float32Array([draemLearningRate(lr0, step, o.steps)]);
    const shape: [number, number, number, number] = [o.batch, 3, o.size, o.size];
    batches.push({ clean: { data: clean, shape }, augmented: { data: augmented, shape }, mask: { data: mask, shape: [o.batch, 1, o.size, o.size] }, lr: { data: lr, shape: [1, 1, 1, 1] } });
    fs.writeFileSync(path.join(dir, `batch${step}.bin`), Buffer.concat([clean, augmented, mask, lr].map((a) => Buffer.from(a.buffer))));
  }
  const meta = { size: o.size, batch: o.batch, steps: o.steps, widths: o.widths, lr: lr0, state: state.names.map((name, i) => ({ name, shape: state.shapes[i] })) };
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(meta));
  return { dir, ...o, batches };
}

/** imiad's run of a job from the seeded initial weights: each step's loss and seconds. */
export async function runDraemJob(job: DraemJob): Promise<{ losses: number[]; stepSeconds: number[] }> {
  const model = new TrainModel({ kind: 'draem', channels: [], seed: job.seed, threads: job.threads, lr: 1e-4, beta1: 0.9, beta2: 0.999, extra: { widths: job.widths } });
  return timeSteps(job.batches, (b) => model.step(b.clean, [b.augmented, b.mask, b.lr]));
}

export type PeerResult = StepPeerResult;

/** The PyTorch peer's run of the job in `dir` (from dist/bench, or from bench/ under ts-jest). */
export function runDraemPeer(job: DraemJob): PeerResult {
  return runPeer<PeerResult>('draem_torch.py', [job.dir, String(job.threads)]);
}

export async function main(args: string[]): Promise<void> {
  const w = (flag(args, 'widths', '128,64') as string).split(',').map(Number);
  if (w.length !== 2 || !w.every((v) => Number.isInteger(v) && v >= 1)) throw new Error(`Expected --widths as two integers but received ${flag(args, 'widths')}`);
  const widths: [number, number] = [w[0], w[1]];
  await stepBench<DraemJob>(args, {
    name: 'draem',
    sizeMultiple: 32,
    title: (f) => `DRAEM: ${f.steps} steps, batch ${f.batch}, ${f.size} px, widths ${widths.join('/')}, ${f.threads} thread(s)`,
    write: (dir, f) => writeDraemJob(dir, { size: f.size, batch: f.batch, steps: f.steps, widths, seed: 1, threads: f.threads }),
    ours: runDraemJob,
    peer: peerAvailable(['torch']) ? runDraemPeer : null,
    extra: { widths },
  });
}
