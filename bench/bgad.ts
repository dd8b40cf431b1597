/**
 * `npm run bench -- bgad [--steps 20] [--size 256] [--batch 16] [--threads N] [--repeats 3] [--fibers 4096]`: fidelity and speed of
 * BGAD's training (native/train/flows.cc kind "bgad", lib/methods/bgad.ts) against a PyTorch peer that follows the
 * official engine (bench/peers/bgad_torch.py). imiad builds the decoders (ResNet-18 layers 1..3 at `size` px: 64, 128
 * and 256 channels at size/4, /8, /16), exports their initial weights, and trains `steps` batches of seeded features:
 * meta-epoch 0 on normals only, then batches where half the images carry a seeded rectangular defect mask, with
 * the official learning rate (5 meta-epochs of 4 batches: warm-up and cosine both move within 20 steps) and the
 * official chunks of 4096 fibers (every level holds at least one chunk at the defaults); the peer loads the same
 * weights and trains on the same batches, masks and fiber shuffles. Reported: the largest relative difference of
 * the two loss trajectories (target 1e-4) and imiad's time per batch over the peer's (target <= 0.9x; an epoch is a
 * sequence of such batches), medians over the steps after the first, per round; the rounds are interleaved
 * (measureInterleaved) from the same exported state, with the load printed. Table + bench/results/bgad.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { trainingAvailable, trainAddonPath, TrainModel, type Nchw, type TrainModelConfig, type TrainState } from '../bindings/train/train';
import { bgadLearningRate } from '../lib/methods/bgad';
import { Random } from '../lib/prng';
import { type Contender, formatSpread, intFlag, machineInfo, maxRelativeDiff, measureInterleaved, median, peerAvailable, printTable, ratioSpread, type Run, runPeer, spreadOf, watchLoad, writeJson } from './common';

export interface Trajectory {
  losses: number[];
  stepSeconds: number[];
}

/** Half of the images (alternately) get one seeded rectangle of 1/8 to 3/8 of the side. */
function masksOf(batch: number, size: number, rng: Random): Float32Array {
  const out = new Float32Array(batch * size * size);
  for (let i = 0; i < batch; i += 2) {
    const h = Math.floor(size / 8 + rng.next() * (size / 4));
    const w = Math.floor(size / 8 + rng.next() * (size / 4));
    const y0 = Math.floor(rng.next() * (size - h));
    const x0 = Math.floor(rng.next() * (size - w));
    for (let y = y0; y < y0 + h; y++) out.fill(1, i * size * size + y * size + x0, i * size * size + y * size + x0 + w);
  }
  return out;
}

export interface BgadJobOptions {
  steps: number;
  size: number;
  batch: number;
  threads: number;
  fibers: number;
  /** Channels of the three levels (default ResNet-18's 64, 128, 256). */
  channels?: number[];
}

export interface BgadJob {
  config: TrainModelConfig;
  state: TrainState;
  plan: Array<{ features: Nchw[]; mask: Nchw | null; epoch: number; lr: number }>;
}

/**
 * Builds the decoders, writes their initial weights, the batches, masks and meta.json for the peer into `dir`:
 * ResNet-18 layers 1..3 shapes at `size` px, meta-epoch 0 on normals, then half the images masked; 4 batches per
 * meta-epoch with the official learning rate.
 */
export function writeBgadJob(dir: string, o: BgadJobOptions): BgadJob {
  const { steps, size, batch, threads, fibers } = o;
  const [c1, c2, c3] = o.channels ?? [64, 128, 256];
  if (size % 16 !== 0) throw new Error(`--size must be a multiple of 16 but is ${size}`);
  const levels = [
    [c1, size / 4, size / 4],
    [c2, size / 8, size / 8],
    [c3, size / 16, size / 16],
  ];
  if (batch * (size / 16) ** 2 < fibers) throw new Error(`--batch x (--size / 16)^2 must hold a chunk of ${fibers} fibers (the official loop trains no chunk on a smaller level)`);
  // 4 batches per meta-epoch, 1 sub-epoch each: warm-up and cosine both move within 20 steps.
  const perEpoch = 4;
  const metaEpochs = Math.max(1, Math.ceil(steps / perEpoch));
  const seed = 1;
  const lr = 2e-4;
  const config: TrainModelConfig = {
    kind: 'bgad',
    channels: levels.map((l) => l[0]),
    seed,
    threads,
    lr,
    weightDecay: 0,
    extra: { blocks: [8], clamp: [1.9], condition: [128], fibers: [fibers], boundary: [0.01, 0.1, 10, 1, 1] },
  };
  const model = new TrainModel(config);
  const state = model.state();
  fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  const rng = new Random(7).fork('bgad-bench');
  const plan: BgadJob['plan'] = [];
  for (let step = 0; step < steps; step++) {
    const epoch = Math.floor(step / perEpoch);
    const features = levels.map(([c, h, w]): Nchw => {
      const data = new Float32Array(batch * c * h * w);
      for (let i = 0; i < data.length; i++) data[i] = rng.normal();
      return { data, shape: [batch, c, h, w] };
    });
    const mask: Nchw | null = epoch === 0 ? null : { data: masksOf(batch, size, rng), shape: [batch, 1, size, size] };
    fs.writeFileSync(path.join(dir, `batch${step}.bin`), Buffer.concat(features.map((f) => Buffer.from(f.data.buffer))));
    if (mask) fs.writeFileSync(path.join(dir, `mask${step}.bin`), Buffer.from(mask.data.buffer));
    plan.push({ features, mask, epoch, lr: bgadLearningRate(lr, metaEpochs, epoch, step % perEpoch, perEpoch) });
  }
  const meta = {
    steps,
    size,
    levels,
    batchShapes: levels.map(([c, h, w]) => [batch, c, h, w]),
    state: state.names.map((name, i) => ({ name, shape: state.shapes[i] })),
    blocks: 8,
    clamp: 1.9,
    condition: 128,
    fibers,
    beta: 0.01,
    tau: 0.1,
    normalizer: 10,
    lambda: 1,
    lr,
    metaEpochs,
    subEpochs: 1,
    epochOfStep: plan.map((p) => p.epoch),
    batchOfStep: plan.map((_, s) => s % perEpoch),
    batches: plan.map(() => perEpoch),
    hasMask: plan.map((p) => p.mask !== null),
    // native/train/flows.cc seeds the fiber shuffles with seed ^ 0x5f1b3d.
    permSeed: seed ^ 0x5f1b3d,
  };
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(meta));
  return { config, state, plan };
}

/** imiad's run of a job from its exported state: every batch's loss and seconds. */
export async function trainBgadJob(job: BgadJob): Promise<Trajectory> {
  const m = new TrainModel(job.config);
  m.loadState(job.state);
  const losses: number[] = [];
  const stepSeconds: number[] = [];
  let epoch = -1;
  for (const p of job.plan) {
    if (p.epoch !== epoch) m.configure('epoch', [(epoch = p.epoch)]);
    m.setLearningRate(p.lr);
    const t = process.hrtime.bigint();
    losses.push(await m.step(p.mask, p.features));
    stepSeconds.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return { losses, stepSeconds };
}

export async function main(args: string[]): Promise<void> {
  if (!trainingAvailable()) throw new Error(`the training addon is not built (${trainAddonPath()}); run npm run build:train`);
  const steps = intFlag(args, 'steps', 20);
  const size = intFlag(args, 'size', 256);
  const batch = intFlag(args, 'batch', 16);
  const threads = intFlag(args, 'threads', os.availableParallelism());
  const repeats = intFlag(args, 'repeats', 3);
  const fibers = intFlag(args, 'fibers', 4096);
  const havePeer = peerAvailable(['torch', 'numpy']);
  if (!havePeer) process.stdout.write('PyTorch peer skipped: /usr/bin/python3 cannot import torch (apt-get install python3-torch)\n');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-bgad-'));
  try {
    const job = writeBgadJob(dir, { steps, size, batch, threads, fibers });
    const imiadRound = async (): Promise<Run<Trajectory>> => {
      const result = await trainBgadJob(job);
      return { ms: median(result.stepSeconds.slice(1)) * 1000, result };
    };
    const peerRound = async (): Promise<Run<Trajectory>> => {
      const r = runPeer<Trajectory & { torch: string }>('bgad_torch.py', [dir, String(threads)]);
      return { ms: median(r.stepSeconds.slice(1)) * 1000, result: r };
    };
    const contenders: Array<Contender<Trajectory>> = [{ name: 'imiad', run: imiadRound }];
    if (havePeer) contenders.push({ name: 'torch', run: peerRound });
    const watch = watchLoad('bgad');
    const done = await measureInterleaved(contenders, repeats);
    const load = watch.finish();
    const losses = done[0].results[0].losses;
    const peer = havePeer ? done[1].results[0] : null;
    const rel = peer ? maxRelativeDiff(losses, peer.losses) : null;
    const ratio = havePeer ? ratioSpread(done[0], done[1]) : null;
    const parameters = new TrainModel(job.config).parameterCount;
    printTable(`BGAD: ${steps} batches of ${batch}, ${size} px ResNet-18 layer 1..3 shapes, chunks of ${fibers} fibers, ${threads} threads; median (min-max) over ${repeats} interleaved rounds of each round's median batch`, [
      {
        method: 'bgad',
        params: parameters,
        'imiad s/batch': formatSpread(spreadOf(done[0].ms.runs.map((v) => v / 1000))),
        'torch s/batch': havePeer ? formatSpread(spreadOf(done[1].ms.runs.map((v) => v / 1000))) : '-',
        'time ratio': ratio === null ? '-' : formatSpread(ratio),
        'max rel loss diff': rel === null ? '-' : rel.toExponential(2),
        agrees: rel === null ? '-' : rel <= 1e-4,
        'time (<=0.9)': ratio === null ? '-' : ratio.median <= 0.9,
      },
    ]);
    if (load.busy) process.stdout.write('WARNING: the machine was busy; these figures are not quiet-machine figures\n');
    writeJson('bgad', { machine: machineInfo(threads), results: [{ method: 'bgad', size, batch, steps, threads, fibers, repeats, parameters, imiad: done[0].results, peer: havePeer ? done[1].results : null, load, ratio, maxRelativeLossDiff: rel }] });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
