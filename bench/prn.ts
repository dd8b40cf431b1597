/**
 * `npm run bench -- prn [--steps 20] [--size 64] [--batch 8] [--threads 1] [--repeats 3] [--layers 3] [--k 2]`:
 * fidelity and speed of PRN's training step (native/train/prn.cc) against the PyTorch peer written from the reference
 * xcyao00/PRNet code (bench/peers/prn_torch.py, Debian's python3-torch). imiad runs its seeded ResNet-18 (ONNX) on
 * smooth random images (Perlin fields) for the prototypes (k-means over 2 x k images) and for every batch, whose masks
 * are lib/synthesis pseudo-anomaly masks; it builds the head (seed 1), sets the prototypes, and exports the initial
 * weights with the prototypes (state.bin) and each batch's 4 feature levels and masks. The peer loads the same state
 * and trains on the same batches (features passed, not the seed): the frozen encoder is outside the comparison.
 * Reported: the largest relative difference of the two loss trajectories (target 1e-4), and, over `repeats`
 * interleaved rounds (bench/common.ts measureInterleaved, fresh models each round), the time of the `steps` steps of
 * imiad over the peer's (target <= 0.9x), with the machine's load. Table + bench/results/prn.json.
 */
import * as fs from 'fs';
import * as path from 'path';

import { TrainModel, type Nchw } from '../bindings/train/train';
import { FeatureExtractor, layerOf, resolveBackboneParams } from '../lib/methods/features';
import { IMAGENET_MEAN, IMAGENET_STD } from '../lib/image/pipeline';
import { Random } from '../lib/prng';
import { AnomalySynthesiser, perlinNoise } from '../lib/synthesis';
import { intFlag, peerAvailable, runPeer, stepBench, type StepPeerResult, timeSteps } from './common';

export interface PrnJob {
  dir: string;
  size: number;
  batch: number;
  steps: number;
  layers: number;
  k: number;
  seed: number;
  threads: number;
  lr: number;
  channels: number[];
  sides: number[];
  /** The initial state (weights, batch-norm statistics, prototypes) every run starts from. */
  state: ReturnType<TrainModel['state']>;
  /** Each step's 4 feature levels and masks. */
  batches: Nchw[][];
}

/** A smooth random RGB image, ImageNet-normalised (CHW): a Perlin field per channel. */
function image(rng: Random, size: number): Float32Array {
  const out = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    const p = perlinNoise(rng, size, size, 4, 4);
    for (let i = 0; i < p.length; i++) out[c * size * size + i] = (Math.min(1, Math.max(0, 0.5 + 0.4 * p[i])) - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
  }
  return out;
}

function prnModel(job: Pick<PrnJob, 'seed' | 'threads' | 'lr' | 'channels' | 'sides' | 'k' | 'layers'>): TrainModel {
  return new TrainModel({
    kind: 'prn',
    channels: job.channels,
    seed: job.seed,
    threads: job.threads,
    lr: job.lr,
    weightDecay: 1e-2,
    beta1: 0.9,
    beta2: 0.999,
    extra: { sides: job.sides, k: [job.k], attentionLayers: [job.layers], kmeansInit: [1] },
  });
}

/** Writes a job to `dir` (meta.json, state.bin, batch<i>.bin: levels 1..4 then the masks, float32) and returns it. */
export async function writePrnJob(dir: string, o: { size: number; batch: number; steps: number; layers: number; k: number; seed: number; threads: number; lr?: number }): Promise<PrnJob> {
  const lr = o.lr ?? 1e-4;
  const extractor = new FeatureExtractor(resolveBackboneParams({ imageSize: o.size, cropSize: o.size, backboneShape: 'resnet18' }, ['layer1', 'layer2', 'layer3', 'layer4']));
  const backbone = await extractor.load();
  const rng = new Random(o.seed).fork('prn-bench');
  const plane = 3 * o.size * o.size;
  const features = async (n: number, tag: string): Promise<Nchw[]> => {
    const data = new Float32Array(n * plane);
    for (let j = 0; j < n; j++) data.set(image(rng.fork(tag, j), o.size), j * plane);
    const out = await backbone.extract(data, n, o.size, o.size);
    return ['layer1', 'layer2', 'layer3', 'layer4'].map((l) => {
      const f = layerOf(out, l);
      return { data: f.data, shape: [n, f.channels, f.height, f.width] };
    });
  };
  const normals = await features(2 * o.k, 'normal');
  const channels = normals.map((f) => f.shape[1]);
  const sides = normals.map((f) => f.shape[2]);
  const model = prnModel({ ...o, lr, channels, sides });
  await model.calibrateStage('prototypes', null, normals, true);
  const state = model.state();
  fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  const synth = await AnomalySynthesiser.create({ size: o.size, cleanProbability: 0 });
  const batches: Nchw[][] = [];
  for (let step = 0; step < o.steps; step++) {
    const levels = await features(o.batch, `batch${step}`);
    const mask = new Float32Array(o.batch * o.size * o.size);
    // Half of the batch anomalous, as PRN's batches are.
    for (let j = o.batch - Math.floor(o.batch / 2); j < o.batch; j++) {
      const s = await synth.sample(new Float32Array(plane).fill(0.5), rng.fork('mask', step, j));
      mask.set(s.mask, j * o.size * o.size);
    }
    const views = [...levels, { data: mask, shape: [o.batch, 1, o.size, o.size] as Nchw['shape'] }];
    batches.push(views);
    fs.writeFileSync(path.join(dir, `batch${step}.bin`), Buffer.concat(views.map((v) => Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength))));
  }
  await extractor.dispose();
  const meta = { size: o.size, batch: o.batch, steps: o.steps, lr, weightDecay: 1e-2, focalWeight: 5, channels, sides, attentionLayers: o.layers, state: state.names.map((name, i) => ({ name, shape: state.shapes[i] })) };
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(meta));
  return { dir, ...o, lr, channels, sides, state, batches };
}

/** imiad's run of a job from its exported state: each step's loss and seconds. */
export async function runPrnJob(job: PrnJob): Promise<{ losses: number[]; stepSeconds: number[] }> {
  const model = prnModel(job);
  model.loadState(job.state);
  return timeSteps(job.batches, (b) => model.step(null, b));
}

export type PeerResult = StepPeerResult;

/** The PyTorch peer's run of the job in `dir`. */
export function runPrnPeer(job: PrnJob): PeerResult {
  return runPeer<PeerResult>('prn_torch.py', [job.dir, String(job.threads)]);
}

export async function main(args: string[]): Promise<void> {
  const layers = intFlag(args, 'layers', 3);
  const k = intFlag(args, 'k', 2);
  await stepBench<PrnJob>(args, {
    name: 'prn',
    sizeMultiple: 32,
    title: (f) => `PRN: ${f.steps} steps, batch ${f.batch}, ${f.size} px, ${layers} attention layer(s) per level, ${f.threads} thread(s)`,
    write: (dir, f) => writePrnJob(dir, { size: f.size, batch: f.batch, steps: f.steps, layers, k, seed: 1, threads: f.threads }),
    ours: runPrnJob,
    peer: peerAvailable(['torch']) ? runPrnPeer : null,
    extra: { layers, k },
  });
}
