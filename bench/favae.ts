/**
 * `npm run bench -- favae [--steps 20] [--batch 8] [--epoch-batches 4] [--repeats 3] [--threads N]
 * [--teacher vgg16|resnet18]`: fidelity and speed of FAVAE's training (native/train/favae.cc) against a PyTorch peer
 * written from the official code (bench/peers/favae_torch.py: open-iad's net_favae.py and arch/favae.py
 * train_model, Debian's python3-torch). imiad builds the VAE and adapters, exports its initial weights, and both
 * sides train on the same seeded batches ([0, 1] images at 128 px and teacher features shaped like VGG16's
 * conv2_2 / conv3_3 / conv4_3, or the default ResNet-18's layer1..3) with the same reparameterisation noise.
 * Reported:
 * - fidelity: the largest relative difference of the two loss trajectories over `steps` steps (target 1e-4), imiad
 *   running the official two decoder passes per step (extra decoderPasses 2) so that the arithmetic is the same;
 * - speed: the time of one epoch of `epoch-batches` batches on each side (the training steps only; imiad's default
 *   step, one decoder pass, against the official loop's two), `repeats`
 *   interleaved runs (bench/common.ts measureInterleaved), their ratio (target <= 0.9x), and the machine's load.
 * Table + bench/results/favae.json.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { type Nchw, trainingAvailable, trainAddonPath, TrainModel } from '../bindings/train/train';
import { Random } from '../lib/prng';
import { flag, formatSpread, intFlag, machineInfo, maxRelativeDiff, measureInterleaved, median, peerPython, printTable, type Row, runPeer, spreadOf, timed, watchLoad, writeJson } from './common';

/** Teacher levels [c, side] and the decoder taps matched to them (native/train/favae.cc). */
export const FAVAE_TEACHERS = {
  vgg16: { levels: [[128, 64], [256, 32], [512, 16]], taps: [22, 16, 10], tapChannels: [128, 256, 512] },
  resnet18: { levels: [[64, 32], [128, 16], [256, 8]], taps: [16, 10, 7], tapChannels: [256, 512, 512] },
} as const;
export type FavaeTeacher = keyof typeof FAVAE_TEACHERS;

export interface FavaeJob {
  teacher: FavaeTeacher;
  /** Samples per batch of each step. */
  batchSizes: number[];
  threads: number;
  seed: number;
  lr: number;
  weightDecay: number;
  /** Decoder passes per step: 2 = the official loop's (bit-for-bit the peer's arithmetic), 1 = imiad's default. */
  decoderPasses: 1 | 2;
}

/** True when the peer's python can import torch. */
export function favaePeerAvailable(): boolean {
  return fs.existsSync(peerPython()) && spawnSync(peerPython(), ['-c', 'import torch, numpy'], { stdio: 'ignore' }).status === 0;
}

function batchOf(levels: readonly (readonly number[])[], n: number, rng: Random): { images: Nchw; teacher: Nchw[] } {
  const images = new Float32Array(n * 3 * 128 * 128);
  for (let i = 0; i < images.length; i++) images[i] = rng.next();
  const teacher = levels.map(([c, s]): Nchw => {
    const data = new Float32Array(n * c * s * s);
    for (let i = 0; i < data.length; i++) data[i] = rng.normal();
    return { data, shape: [n, c, s, s] };
  });
  return { images: { data: images, shape: [n, 3, 128, 128] }, teacher };
}

/** A fresh imiad model for the job, and its batches; writes state.bin, batch<k>.bin and meta.json into `dir`. */
export function prepareFavaeJob(job: FavaeJob, dir: string, extraMeta: Record<string, unknown> = {}): { model: TrainModel; batches: Array<{ images: Nchw; teacher: Nchw[] }> } {
  const t = FAVAE_TEACHERS[job.teacher];
  const model = new TrainModel({
    kind: 'favae',
    channels: t.levels.map((l) => l[0]),
    seed: job.seed,
    threads: job.threads,
    lr: job.lr,
    weightDecay: job.weightDecay,
    extra: { sides: t.levels.map((l) => l[1]), size: [128], zdim: [100], kld: [1], decoderPasses: [job.decoderPasses] },
  });
  const state = model.state();
  fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  const rng = new Random(job.seed).fork('favae-bench');
  const batches = job.batchSizes.map((n, k) => {
    const b = batchOf(t.levels, n, rng);
    fs.writeFileSync(path.join(dir, `batch${k}.bin`), Buffer.concat([b.images, ...b.teacher].map((x) => Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength))));
    return b;
  });
  const meta = {
    taps: t.taps,
    tapChannels: t.tapChannels,
    teacherChannels: t.levels.map((l) => l[0]),
    teacherShapes: t.levels.map(([c, s]) => [c, s, s]),
    batchSizes: job.batchSizes,
    zdim: 100,
    kld: 1,
    lr: job.lr,
    weightDecay: job.weightDecay,
    seed: job.seed,
    state: state.names.map((name, i) => ({ name, shape: state.shapes[i] })),
    ...extraMeta,
  };
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(meta));
  return { model, batches };
}

export interface PeerResult {
  losses: number[];
  stepSeconds?: number[];
  epochSeconds?: number[];
  torch: string;
  loaded: number;
}

/** Runs bench/peers/favae_torch.py on a prepared folder. */
export function runFavaePeer(dir: string, threads: number): PeerResult {
  return runPeer<PeerResult>('favae_torch.py', [dir, String(threads)]);
}

/** imiad's and the peer's loss trajectories over the job's batches (one step each). */
export async function favaeTrajectories(job: FavaeJob, opts: { peer?: boolean } = {}): Promise<{ imiad: number[]; imiadSeconds: number[]; peer: PeerResult | null; parameters: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-favae-'));
  try {
    const { model, batches } = prepareFavaeJob(job, dir);
    const imiad: number[] = [];
    const imiadSeconds: number[] = [];
    for (const b of batches) {
      const t = process.hrtime.bigint();
      imiad.push(await model.step(b.images, b.teacher));
      imiadSeconds.push(Number(process.hrtime.bigint() - t) / 1e9);
    }
    const peer = opts.peer !== false && favaePeerAvailable() ? runFavaePeer(dir, job.threads) : null;
    return { imiad, imiadSeconds, peer, parameters: model.parameterCount };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function main(args: string[]): Promise<void> {
  if (!trainingAvailable()) throw new Error(`the training addon is not built (${trainAddonPath()}); run npm run build:train`);
  const steps = intFlag(args, 'steps', 20);
  const batch = intFlag(args, 'batch', 8);
  const epochBatches = intFlag(args, 'epoch-batches', 4);
  const repeats = intFlag(args, 'repeats', 3);
  const threads = intFlag(args, 'threads', os.availableParallelism());
  const teacher = (flag(args, 'teacher', 'vgg16') ?? 'vgg16') as FavaeTeacher;
  if (!(teacher in FAVAE_TEACHERS)) throw new Error(`--teacher: expected vgg16 or resnet18 but received ${teacher}`);
  const havePeer = favaePeerAvailable();
  if (!havePeer) process.stdout.write(`PyTorch peer skipped: ${peerPython()} cannot import torch (apt-get install python3-torch)\n`);
  const base = { teacher, threads, seed: 1, lr: 5e-3, weightDecay: 1e-5 };

  // Fidelity: one trajectory of `steps` steps on each side.
  const traj = await favaeTrajectories({ ...base, decoderPasses: 2, batchSizes: Array.from({ length: steps }, () => batch) });
  const rel = traj.peer ? maxRelativeDiff(traj.imiad, traj.peer.losses) : null;

  // Speed: epochs of `epochBatches` batches, a fresh model per run on each side, interleaved.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-favae-epoch-'));
  let rows: Row[] = [];
  let speed: unknown = null;
  try {
    // imiad's default step (one decoder pass) against the official loop's (two).
    const job: FavaeJob = { ...base, decoderPasses: 1, batchSizes: Array.from({ length: epochBatches }, () => batch) };
    const contenders = [
      {
        name: 'imiad',
        run: () =>
          timed(async () => {
            const { model, batches } = prepareFavaeJob(job, dir, { epochs: 1 });
            const t = process.hrtime.bigint();
            for (const b of batches) await model.step(b.images, b.teacher);
            return Number(process.hrtime.bigint() - t) / 1e9;
          }),
      },
    ];
    if (havePeer) {
      contenders.push({
        name: 'torch',
        run: () =>
          timed(() => {
            prepareFavaeJob(job, dir, { epochs: 1 });
            return (runFavaePeer(dir, threads).epochSeconds as number[])[0];
          }),
      });
    }
    const watch = watchLoad(`favae epoch, ${threads} thread(s)`);
    const done = await measureInterleaved(contenders, repeats);
    const load = watch.finish();
    const mine = spreadOf(done[0].results);
    const theirs = havePeer ? spreadOf(done[1].results) : null;
    const ratio = theirs ? spreadOf(done[0].results.map((s, i) => s / done[1].results[i])) : null;
    speed = { imiadEpochS: mine, peerEpochS: theirs, ratio, load };
    rows = [
      {
        teacher,
        params: traj.parameters,
        batch,
        'imiad s/step': median(traj.imiadSeconds.slice(1)).toFixed(3),
        'torch s/step': traj.peer?.stepSeconds ? median(traj.peer.stepSeconds.slice(1)).toFixed(3) : '-',
        'imiad epoch s': formatSpread(mine),
        'torch epoch s': theirs ? formatSpread(theirs) : '-',
        'imiad/torch': ratio ? formatSpread(ratio) : '-',
        'time (<=0.9)': ratio ? ratio.median <= 0.9 : null,
        'max rel loss diff': rel === null ? '-' : rel.toExponential(2),
        'loss (<=1e-4)': rel === null ? null : rel <= 1e-4,
        busy: load.busy,
      },
    ];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  printTable(`FAVAE: ${steps} steps of batch ${batch} (${teacher} teacher shapes, 128 px), epochs of ${epochBatches} batches, ${repeats} interleaved runs, ${threads} threads`, rows);
  writeJson('favae', { machine: machineInfo(threads), steps, batch, epochBatches, repeats, teacher, trajectories: traj, maxRelativeLossDiff: rel, speed });
}
