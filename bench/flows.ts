/**
 * `npm run bench -- flows [--methods fastflow,cflow,cfa,csflow] [--steps 20] [--size 128] [--batch 8] [--threads N]
 * [--hidden 128] [--repeats 3]`:
 * fidelity and speed of the trained heads on frozen features (native/train/flows.cc, feature_heads.cc) against a
 * PyTorch peer that follows the official code with FrEIA's old AllInOneBlock written out
 * (bench/peers/flows_torch.py, Debian's python3-torch). imiad builds the head (CFA: and its memory bank from two
 * calibration batches, which the peer recomputes with its own descriptor from the same weights),
 * exports its initial weights, and trains `steps` steps on seeded feature batches shaped like the default
 * ResNet-18's taps at `size` px (FastFlow, CFA: layers 1..3; CFlow: layers 2..4; CS-Flow: layer4 at three scales,
 * subnets of `hidden` channels); the peer loads the same weights and
 * trains on the same batches (CFlow: the same seeded fiber shuffles). Reported: the largest relative difference of
 * the two loss trajectories (target 1e-4; CS-Flow 1e-3) and imiad's time per step over the peer's (target <= 0.9x), medians over
 * the steps after the first, per round; imiad and the peer run `--repeats` interleaved rounds (measureInterleaved), from
 * the same exported state each time, with the load printed. Table + bench/results/flows.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { trainingAvailable, trainAddonPath, TrainModel, type Nchw, type TrainModelConfig } from '../bindings/train/train';
import { Random } from '../lib/prng';
import { type Contender, flag, formatSpread, intFlag, machineInfo, measureInterleaved, median, peerAvailable, printTable, ratioSpread, type Row, type Run, runPeer, spreadOf, watchLoad, writeJson } from './common';

/** One training run of 20 (or --steps) steps: the losses and each step's seconds. */
interface Trajectory {
  losses: number[];
  stepSeconds: number[];
}

interface Setup {
  method: 'fastflow' | 'cflow' | 'cfa' | 'csflow';
  /** [c, h, w] of each level at `size` px. */
  levels: number[][];
  config: TrainModelConfig;
  /** Extra fields the peer reads. */
  meta: Record<string, unknown>;
}

function setup(method: string, size: number, threads: number, hidden: number): Setup {
  if (method === 'fastflow') {
    const levels = [
      [64, size / 4, size / 4],
      [128, size / 8, size / 8],
      [256, size / 16, size / 16],
    ];
    const extra = { sides: levels.flatMap((l) => [l[1], l[2]]), blocks: [8], clamp: [2] };
    return {
      method,
      levels,
      config: { kind: 'fastflow', channels: levels.map((l) => l[0]), seed: 1, threads, lr: 1e-3, weightDecay: 1e-5, extra },
      meta: { blocks: 8, clamp: 2, lr: 1e-3, weightDecay: 1e-5 },
    };
  }
  if (method === 'cflow') {
    const levels = [
      [128, size / 8, size / 8],
      [256, size / 16, size / 16],
      [512, size / 32, size / 32],
    ];
    // Warm-up and cosine both move within the 20 steps: 2 steps per sub-epoch, 2 sub-epochs, 5 meta-epochs.
    const schedule = [2, 5, 2, 2];
    const seed = 1;
    const extra = { blocks: [8], clamp: [1.9], condition: [128], fibers: [256], schedule };
    return {
      method,
      levels,
      config: { kind: 'cflow', channels: levels.map((l) => l[0]), seed, threads, lr: 2e-4, weightDecay: 0, extra },
      // native/train/flows.cc seeds the fiber shuffles with seed ^ 0x5f1b3d.
      meta: { blocks: 8, clamp: 1.9, condition: 128, fibers: 256, lr: 2e-4, schedule, permSeed: seed ^ 0x5f1b3d },
    };
  }
  if (method === 'cfa') {
    const levels = [
      [64, size / 4, size / 4],
      [128, size / 8, size / 8],
      [256, size / 16, size / 16],
    ];
    const extra = { sides: [size / 4, size / 4], k: [3], j: [3], nu: [1e-3], alpha: [0.1] };
    return {
      method,
      levels,
      config: { kind: 'cfa', channels: levels.map((l) => l[0]), seed: 1, threads, lr: 1e-3, weightDecay: 5e-4, extra },
      meta: { lr: 1e-3, weightDecay: 5e-4, calibrationBatches: 2 },
    };
  }
  if (method === 'csflow') {
    // ResNet-18's layer4 (the default backbone's stand-in for EfficientNet-B5 block 35) at three input scales;
    // hidden 128 keeps the peer run short on a CPU (the official 1024 is --hidden 1024).
    const side = size / 32;
    const levels = [
      [512, side, side],
      [512, side / 2, side / 2],
      [512, side / 4, side / 4],
    ];
    const extra = { blocks: [4], hidden: [hidden], clamp: [3], kernels: [3, 3, 3, 5], eps: [1e-4], clipNorm: [1] };
    return {
      method,
      levels,
      config: { kind: 'csflow', channels: levels.map((l) => l[0]), seed: 1, threads, lr: 2e-4, weightDecay: 1e-5, extra },
      meta: { blocks: 4, hidden, clamp: 3, kernels: [3, 3, 3, 5], lr: 2e-4, weightDecay: 1e-5 },
    };
  }
  throw new Error(`--methods: unknown method ${method} (fastflow, cflow, cfa, csflow)`);
}

function batchOf(levels: number[][], batch: number, rng: Random): Nchw[] {
  return levels.map(([c, h, w]) => {
    const data = new Float32Array(batch * c * h * w);
    for (let i = 0; i < data.length; i++) data[i] = rng.normal();
    return { data, shape: [batch, c, h, w] };
  });
}

export async function main(args: string[]): Promise<void> {
  if (!trainingAvailable()) throw new Error(`the training addon is not built (${trainAddonPath()}); run npm run build:train`);
  const methods = (flag(args, 'methods', 'fastflow,cflow,cfa,csflow') ?? '').split(',');
  const steps = intFlag(args, 'steps', 20);
  const size = intFlag(args, 'size', 128);
  const batch = intFlag(args, 'batch', 8);
  const threads = intFlag(args, 'threads', os.availableParallelism());
  const hidden = intFlag(args, 'hidden', 128);
  const repeats = intFlag(args, 'repeats', 3);
  if (size % 128 !== 0) throw new Error(`--size must be a multiple of 128 but is ${size}`);
  const havePeer = peerAvailable(['torch', 'numpy']);
  if (!havePeer) process.stdout.write('PyTorch peer skipped: /usr/bin/python3 cannot import torch (apt-get install python3-torch)\n');
  const rows: Row[] = [];
  const results: unknown[] = [];
  const warnings: string[] = [];
  for (const method of methods) {
    const s = setup(method, size, threads, hidden);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `imiad-bench-${method}-`));
    try {
      const model = new TrainModel(s.config);
      const rng = new Random(7).fork('flows-bench');
      // CFA: the memory bank from two batches through the untrained descriptor, before the weights are exported.
      const calibration = s.method === 'cfa' ? 2 : 0;
      for (let i = 0; i < calibration; i++) {
        const features = batchOf(s.levels, batch, rng);
        fs.writeFileSync(path.join(dir, `batchc${i}.bin`), Buffer.concat(features.map((f) => Buffer.from(f.data.buffer))));
        await model.calibrate(features, i === 0);
      }
      const state = model.state();
      fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
      const batchList: Nchw[][] = [];
      for (let step = 0; step < steps; step++) {
        const features = batchOf(s.levels, batch, rng);
        fs.writeFileSync(path.join(dir, `batch${step}.bin`), Buffer.concat(features.map((f) => Buffer.from(f.data.buffer))));
        batchList.push(features);
      }
      const meta = {
        method,
        steps,
        levels: s.levels,
        batchShapes: s.levels.map(([c, h, w]) => [batch, c, h, w]),
        state: state.names.map((name, i) => ({ name, shape: state.shapes[i] })),
        ...s.meta,
      };
      fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(meta));
      // Each round: imiad from the exported state (a fresh model each time, so every round does the same work) and
      // the peer, interleaved; a round's time is the median step after the first.
      const imiadRound = async (): Promise<Run<Trajectory>> => {
        const m = new TrainModel(s.config);
        m.loadState(state);
        const losses: number[] = [];
        const stepSeconds: number[] = [];
        for (const features of batchList) {
          const t = process.hrtime.bigint();
          losses.push(await m.step(null, features));
          stepSeconds.push(Number(process.hrtime.bigint() - t) / 1e9);
        }
        return { ms: median(stepSeconds.slice(1)) * 1000, result: { losses, stepSeconds } };
      };
      const peerRound = async (): Promise<Run<Trajectory>> => {
        const r = runPeer<Trajectory & { torch: string }>('flows_torch.py', [dir, String(threads)]);
        return { ms: median(r.stepSeconds.slice(1)) * 1000, result: r };
      };
      const contenders: Array<Contender<Trajectory>> = [{ name: 'imiad', run: imiadRound }];
      if (havePeer) contenders.push({ name: 'torch', run: peerRound });
      const watch = watchLoad(`flows ${method}`);
      const done = await measureInterleaved(contenders, repeats);
      const load = watch.finish();
      if (load.busy) warnings.push(`${method}: the machine was busy; these figures are not quiet-machine figures`);
      const losses = done[0].results[0].losses;
      const peer = havePeer ? done[1].results[0] : null;
      const rel = peer ? Math.max(...losses.map((l, i) => Math.abs(l - peer.losses[i]) / Math.max(Math.abs(peer.losses[i]), 1e-12))) : null;
      const ratio = havePeer ? ratioSpread(done[0], done[1]) : null;
      rows.push({
        method,
        params: model.parameterCount,
        'imiad s/step': formatSpread(spreadOf(done[0].ms.runs.map((v) => v / 1000))),
        'torch s/step': havePeer ? formatSpread(spreadOf(done[1].ms.runs.map((v) => v / 1000))) : '-',
        'time ratio': ratio === null ? '-' : formatSpread(ratio),
        'max rel loss diff': rel === null ? '-' : rel.toExponential(2),
        target: method === 'csflow' ? 1e-3 : 1e-4,
        agrees: rel === null ? '-' : rel <= (method === 'csflow' ? 1e-3 : 1e-4),
        'time (<=0.9)': ratio === null ? '-' : ratio.median <= 0.9,
      });
      results.push({ method, size, batch, steps, threads, repeats, parameters: model.parameterCount, imiad: done[0].results, peer: havePeer ? done[1].results : null, load, ratio, maxRelativeLossDiff: rel });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  printTable(`flow heads: ${steps} steps, batch ${batch}, ${size} px feature shapes, ${threads} threads; median (min-max) over ${repeats} interleaved rounds of each round's median step`, rows);
  for (const line of warnings) process.stdout.write(`WARNING: ${line}\n`);
  writeJson('flows', { machine: machineInfo(threads), results });
}
