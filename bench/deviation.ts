/**
 * `npm run bench -- deviation [--methods devnet,dra] [--size 128] [--batch 12] [--steps 20] [--epochs 1]
 * [--threads 1,2] [--repeats 3] [--train 16] [--anomalies 10] [--peer-layout nchw]`: fidelity and speed of the supervised detectors on a
 * fine-tuned ResNet-18 (native/train/devnet.cc, dra.cc) against PyTorch peers written from the official code
 * (bench/peers/devnet_torch.py, dra_torch.py; Debian's python3-torch and python3-torchvision).
 *
 * imiad builds the detector's network with the default backbone's weights imported, exports its initial state (the
 * backbone and the heads' initialisation) and writes `steps` balanced batches drawn by the detector's own batch
 * source (lib/methods/deviation.ts: rotated, DRA's CutMix pseudo-anomalies and reference images, the reference draws
 * of the deviation loss) from generated images. Then, per thread count, imiad (the libtorch addon, in a child process
 * of this script: `deviation --child <job>`) and the peer train from that state on those batches, `--repeats` times
 * each, interleaved (bench/common.ts measureInterleaved), in their own processes. Reported: the largest relative
 * difference of the loss trajectories (target 1e-4), the epoch time (`steps` steps) of each side, their ratio (target
 * <= 0.9), the CPU seconds and peak memory, and the load of the machine. The timed peer runs in the official
 * code's memory layout (torchvision's NCHW) unless `--peer-layout channels-last`; the trajectories are compared with
 * the peer in imiad's layout (bindings/train/layout.ts: NCHW for DevNet and DRA; bench/peers/layout.py), one more untimed run
 * where the timed one is not in it. Table + bench/results/deviation.json.
 * The official sizes (448 px, batch 48) are `--size 448 --batch 48`: minutes per step on a small CPU.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { resnetLayout } from '../bindings/train/layout';
import { trainingAvailable, trainAddonPath } from '../bindings/train/train';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { DeviationDetector } from '../lib/methods/deviation';
import { DevNet } from '../lib/methods/devnet';
import { Dra } from '../lib/methods/dra';
import { Random } from '../lib/prng';
import { flag, formatSpread, intFlag, machineInfo, maxRelativeDiff, measureInterleaved, median, peerAvailable, peerLayoutEnv, peerLayoutFlag, printTable, type Row, runPeer, spreadOf, timed, watchLoad, writeJson } from './common';

export type DeviationKind = 'devnet' | 'dra';

/** What one training process is given (the peer reads the same file). */
export interface DeviationJob {
  method: DeviationKind;
  size: number;
  batch: number;
  lr: number;
  threads: number;
  epochs: number;
  steps_per_epoch: number;
  state: Array<{ name: string; shape: number[]; file: string }>;
  batches: Array<{ n: number; images_n: number; images: string; labels: string; reference: string; reference_rows: number }>;
}

/** What one training process reports, imiad's or the peer's. */
export interface DeviationRun {
  losses: number[];
  step_s: number[];
  epoch_s: number[];
  train_cpu_s: number;
  max_rss_kb: number;
}

function detectorFor(method: DeviationKind, size: number, batch: number, threads: number): DeviationDetector {
  const params = { imageSize: size, cropSize: size, batchSize: batch, trainThreads: threads, device: 'cpu' as const, seed: 0 };
  return method === 'devnet' ? new DevNet(params) : new Dra(params);
}

function writeFloats(file: string, a: Float32Array): string {
  fs.writeFileSync(file, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  return file;
}

function readFloats(file: string): Float32Array {
  const b = fs.readFileSync(file);
  const aligned = b.byteOffset % 4 === 0 ? b : Buffer.from(b);
  return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
}

/**
 * Writes a job into `dir`: generated images (`train` normals, `anomalies` labelled anomalies at `size` px), the
 * network's initial state and `steps` batches from the detector's batch source.
 */
export async function writeDeviationJob(
  dir: string,
  o: { method: DeviationKind; size: number; batch: number; steps: number; epochs: number; threads: number; train?: number; anomalies?: number },
): Promise<string> {
  const root = path.join(dir, 'data');
  if (!fs.existsSync(root)) await synthesize('mvtec', root, { seed: 7, categories: 1, size: o.size, train: o.train ?? 16, test: 2 * (o.anomalies ?? 10) + 4 });
  const [category] = await loadDataset('mvtec', root);
  const normalSamples = category.samples.filter((s) => s.split === 'train' && s.label === 'normal');
  const anomalySamples = category.samples.filter((s) => s.label === 'anomaly').slice(0, o.anomalies ?? 10);
  const detector = detectorFor(o.method, o.size, o.batch, o.threads);
  const model = detector.createModel(await detector.weights());
  const state = model.state();
  const entries = state.names.map((name, i) => ({ name, shape: state.shapes[i], file: writeFloats(path.join(dir, `${o.method}.w${i}.f32`), state.arrays[i]) }));
  const source = detector.trainingBatches(await detector.decode(normalSamples), await detector.decode(anomalySamples), new Random(0).fork('bench'));
  const batches: DeviationJob['batches'] = [];
  for (let s = 0; s < o.steps; s++) {
    const b = await source.next();
    batches.push({
      n: b.labels.shape[0],
      images_n: b.images.shape[0],
      images: writeFloats(path.join(dir, `${o.method}.b${s}.images.f32`), b.images.data),
      labels: writeFloats(path.join(dir, `${o.method}.b${s}.labels.f32`), b.labels.data),
      reference: writeFloats(path.join(dir, `${o.method}.b${s}.reference.f32`), b.reference.data),
      reference_rows: b.reference.shape[0],
    });
  }
  const job: DeviationJob = { method: o.method, size: o.size, batch: o.batch, lr: detector.lr, threads: o.threads, epochs: o.epochs, steps_per_epoch: o.steps, state: entries, batches };
  const file = path.join(dir, `${o.method}.t${o.threads}.job.json`);
  fs.writeFileSync(file, JSON.stringify(job));
  return file;
}

/** imiad's side of one run, in this process: the same work as the peer (state and batches from the job's files). */
export async function trainDeviationJob(jobFile: string): Promise<DeviationRun> {
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as DeviationJob;
  const detector = detectorFor(job.method, job.size, job.batch, job.threads);
  const model = detector.createModel(null);
  model.loadState({ names: job.state.map((e) => e.name), shapes: job.state.map((e) => e.shape), arrays: job.state.map((e) => readFloats(e.file)) });
  const data = job.batches.map((b) => ({
    images: { data: readFloats(b.images), shape: [b.images_n, 3, job.size, job.size] as [number, number, number, number] },
    labels: { data: readFloats(b.labels), shape: [b.n, 1, 1, 1] as [number, number, number, number] },
    reference: { data: readFloats(b.reference), shape: [b.reference_rows, 1, 1, 5000] as [number, number, number, number] },
  }));
  const losses: number[] = [];
  const stepS: number[] = [];
  const epochS: number[] = [];
  const u0 = process.resourceUsage();
  for (let epoch = 0; epoch < job.epochs; epoch++) {
    const te = process.hrtime.bigint();
    for (let i = 0; i < job.steps_per_epoch; i++) {
      const b = data[(epoch * job.steps_per_epoch + i) % data.length];
      const t = process.hrtime.bigint();
      losses.push(await model.step(b.images, [b.labels, b.reference]));
      stepS.push(Number(process.hrtime.bigint() - t) / 1e9);
    }
    epochS.push(Number(process.hrtime.bigint() - te) / 1e9);
  }
  const u1 = process.resourceUsage();
  return { losses, step_s: stepS, epoch_s: epochS, train_cpu_s: (u1.userCPUTime + u1.systemCPUTime - u0.userCPUTime - u0.systemCPUTime) / 1e6, max_rss_kb: u1.maxRSS };
}

/** Runs imiad's side in a child process (its own peak memory, like the peer's). */
export function runImiadDeviation(jobFile: string): DeviationRun {
  const runner = path.join(__dirname, 'run.js');
  const r = spawnSync(process.execPath, [runner, 'deviation', '--child', jobFile], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`imiad training child failed (exit ${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as DeviationRun;
}

export const PEER_SCRIPTS: Record<DeviationKind, string> = { devnet: 'devnet_torch.py', dra: 'dra_torch.py' };

export async function main(args: string[]): Promise<void> {
  const child = flag(args, 'child');
  if (child !== undefined) {
    process.stdout.write(`${JSON.stringify(await trainDeviationJob(child))}\n`);
    return;
  }
  if (!trainingAvailable()) {
    process.stderr.write(`bench deviation: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
    process.exitCode = 1;
    return;
  }
  const methods = (flag(args, 'methods', 'devnet,dra') as string).split(',') as DeviationKind[];
  for (const m of methods) if (m !== 'devnet' && m !== 'dra') throw new Error(`--methods: expected devnet or dra but received ${m}`);
  const size = intFlag(args, 'size', 128);
  if (size % 64 !== 0) throw new Error(`--size: expected a multiple of 64 but received ${size}`);
  const batch = intFlag(args, 'batch', 12);
  const steps = intFlag(args, 'steps', 20);
  const epochs = intFlag(args, 'epochs', 1);
  const repeats = intFlag(args, 'repeats', 3);
  const nTrain = intFlag(args, 'train', 16);
  const nAnomalies = intFlag(args, 'anomalies', 10);
  const threadList = (flag(args, 'threads', '1,2') as string).split(',').map((t) => {
    const n = Number(t);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--threads: expected integers >= 1 separated by commas but received ${t}`);
    return n;
  });
  const peerLayout = peerLayoutFlag(args);
  const peer = peerAvailable(['torch', 'torchvision', 'numpy']);
  if (!peer) process.stdout.write('PyTorch peer skipped: /usr/bin/python3 cannot import torch and torchvision (apt-get install python3-torch python3-torchvision)\n');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-deviation-'));
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  const warnings: string[] = [];
  try {
    for (const method of methods) {
      for (const threads of threadList) {
        const jobFile = await writeDeviationJob(dir, { method, size, batch, steps, epochs, threads, train: nTrain, anomalies: nAnomalies });
        const contenders = [{ name: 'imiad', run: () => timed(() => runImiadDeviation(jobFile)) }];
        if (peer) contenders.push({ name: 'torch', run: () => timed(() => runPeer<DeviationRun>(PEER_SCRIPTS[method], [jobFile], peerLayoutEnv(peerLayout))) });
        const watch = watchLoad(`deviation ${method}, ${threads} thread(s)`);
        const done = await measureInterleaved(contenders, repeats);
        const load = watch.finish();
        if (load.busy) warnings.push(`${method}, ${threads} thread(s): the machine was busy; these figures are not quiet-machine figures`);
        const mine = done[0].results;
        const theirs = peer ? done[1].results : null;
        const epochOf = (r: DeviationRun): number => median(r.epoch_s);
        const imiadEpoch = spreadOf(mine.map(epochOf));
        const peerEpoch = theirs ? spreadOf(theirs.map(epochOf)) : null;
        // Ratios of the interleaved pairs (run r of imiad against run r of the peer): drift hits both alike.
        const ratio = theirs ? spreadOf(mine.map((r, i) => epochOf(r) / epochOf(theirs[i]))) : null;
        const cpuRatio = theirs ? median(mine.map((r, i) => r.train_cpu_s / theirs[i].train_cpu_s)) : null;
        const rss = (r: DeviationRun): number => r.max_rss_kb / 1024;
        // The trajectories are compared with the peer in imiad's memory layout (the same arithmetic): the timed runs
        // when they are in it, else one more, untimed, run; against a peer in the other layout only for the record.
        const sameLayout = peerLayout === resnetLayout(method);
        const reference = !theirs ? null : sameLayout ? theirs[0] : runPeer<DeviationRun>(PEER_SCRIPTS[method], [jobFile], peerLayoutEnv(resnetLayout(method)));
        const lossDiff = reference ? Math.max(...mine.map((r) => maxRelativeDiff(r.losses, reference.losses)), ...(sameLayout ? theirs ?? [] : []).map((r) => maxRelativeDiff(r.losses, reference.losses))) : null;
        const lossDiffTimedPeer = theirs && !sameLayout ? maxRelativeDiff(mine[0].losses, theirs[0].losses) : null;
        rows.push({
          method,
          threads,
          'imiad epoch s': formatSpread(imiadEpoch),
          'torch epoch s': peerEpoch ? formatSpread(peerEpoch) : null,
          'imiad/torch': ratio ? formatSpread(ratio) : null,
          'CPU ratio': cpuRatio,
          'imiad RSS MB': Math.round(median(mine.map(rss))),
          'torch RSS MB': theirs ? Math.round(median(theirs.map(rss))) : null,
          'max loss rel. diff': lossDiff,
          'losses (<=1e-4)': lossDiff === null ? null : lossDiff <= 1e-4,
          [`loss diff, ${peerLayout} peer`]: lossDiffTimedPeer,
          'time (<=0.9)': ratio === null ? null : ratio.median <= 0.9,
        });
        results[`${method}.t${threads}`] = { method, threads, imiad: mine, peer: theirs, load, epoch_s: { imiad: imiadEpoch, peer: peerEpoch }, ratio, cpu_ratio: cpuRatio, max_loss_relative_diff: lossDiff, layout: resnetLayout(method), peer_layout: peerLayout, max_loss_relative_diff_timed_peer: lossDiffTimedPeer };
      }
    }
    printTable(
      `Supervised detectors (DevNet, DRA): ${epochs} epoch(s) of ${steps} steps, batch ${batch} at ${size} px (2 scales), median (min-max) of ${repeats} interleaved run(s)` +
        `${peer ? '' : ' (no python3-torch peer)'}; imiad's ResNet-18 in its layout (bindings/train/layout.ts), the timed peer in ${peerLayout} (--peer-layout), the losses compared with the peer in imiad's layout; CPU ratio = CPU seconds of the training loops; RSS = peak resident memory of each side's process`,
      rows,
    );
    for (const line of warnings) process.stdout.write(`WARNING: ${line}\n`);
    writeJson('deviation', { machine: machineInfo(Math.max(...threadList)), size, batch, steps, epochs, repeats, train: nTrain, anomalies: nAnomalies, results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
