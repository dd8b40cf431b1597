/**
 * `npm run bench -- regad [--size 224] [--batch 32] [--shots 2] [--steps 20] [--epoch-steps 4] [--repeats 3]
 * [--threads N] [--lr 1e-4] [--peer-layout nchw]`: RegAD's meta-training step (native/train/regad.cc) against the official code's
 * (bench/peers/regad_torch.py, PyTorch), both from the same initial weights (imiad's default ResNet-18 backbone,
 * imported from its ONNX file, plus the seeded STN and siamese heads, exported to the peer) on the same batches
 * (seeded images in [0, 1]: `--batch` queries with `--shots` supports each).
 *
 * 1. Fidelity: `--steps` steps on each side; the largest relative difference of the per-step losses (target 1e-4),
 *    with the peer's ResNet-18 in imiad's memory layout (channels-last for RegAD: bindings/train/layout.ts,
 *    bench/peers/layout.py); the difference from the peer in torchvision's NCHW is reported beside it.
 * 2. Speed: an epoch slice of `--epoch-steps` steps, timed `--repeats` times per side in interleaved rounds
 *    (bench/common.ts measureInterleaved); imiad in this process, the peer in a child process timing its own loop
 *    (python's start-up and imports are not counted). Ratio = imiad / PyTorch (target <= 0.9x), against the official
 *    forward as it is (it also computes the inverse-warped STN outputs, which training never reads) and against the
 *    same forward without them (`lean`), the peer in the official code's layout (NCHW) unless
 *    `--peer-layout channels-last`. The load average and other processes' CPU use are printed (watchLoad).
 * Table + bench/results/regad.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { resnetLayout, resnetLayoutExtra } from '../bindings/train/layout';
import { trainingAvailable, trainAddonPath, TrainModel, type Nchw } from '../bindings/train/train';
import { defaultBackboneFile } from '../lib/backbone/builder';
import { resnet18Weights } from '../lib/backbone/resnet-weights';
import { Random } from '../lib/prng';
import { flag, formatSpread, intFlag, machineInfo, maxRelativeDiff, type Measured, measureInterleaved, peerAvailable, peerLayoutEnv, peerLayoutFlag, printTable, ratioSpread, type Row, runPeer, watchLoad, writeJson } from './common';

export interface RegadBenchOptions {
  size: number;
  batch: number;
  shots: number;
  steps: number;
  lr: number;
  threads: number;
  seed?: number;
}

export interface PeerResult {
  losses: number[];
  stepSeconds: number[];
  torch: string;
}

/** A RegAD model with the default backbone's weights and a folder the peer reads: state.bin, meta.json, batches. */
export async function prepareRegadRun(o: RegadBenchOptions, dir: string): Promise<{ model: TrainModel; batches: Array<{ query: Nchw; support: Nchw }> }> {
  const weights = await resnet18Weights(defaultBackboneFile({ shape: 'resnet18' }), { upToLayer: 3 });
  const model = new TrainModel({ kind: 'regad', channels: [64, 128, 256], seed: o.seed ?? 0, threads: o.threads, lr: o.lr, momentum: 0.9, weightDecay: 0, extra: { side: [o.size], ...resnetLayoutExtra('regad') }, weights });
  const state = model.state();
  fs.writeFileSync(path.join(dir, 'state.bin'), Buffer.concat(state.arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  const rng = new Random(o.seed ?? 0).fork('regad-bench');
  const plane = 3 * o.size * o.size;
  const images = (n: number): Float32Array => {
    const data = new Float32Array(n * plane);
    for (let i = 0; i < data.length; i++) data[i] = rng.next();
    return data;
  };
  const batches: Array<{ query: Nchw; support: Nchw }> = [];
  for (let step = 0; step < o.steps; step++) {
    const query = images(o.batch);
    const support = images(o.batch * o.shots);
    fs.writeFileSync(path.join(dir, `query${step}.bin`), Buffer.from(query.buffer));
    fs.writeFileSync(path.join(dir, `support${step}.bin`), Buffer.from(support.buffer));
    batches.push({ query: { data: query, shape: [o.batch, 3, o.size, o.size] }, support: { data: support, shape: [o.batch * o.shots, 3, o.size, o.size] } });
  }
  const meta = { side: o.size, batch: o.batch, shots: o.shots, steps: o.steps, lr: o.lr, state: state.names.map((name, i) => ({ name, shape: state.shapes[i] })) };
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(meta));
  return { model, batches };
}

/** imiad's losses and step times over the prepared batches. */
export async function runRegadSteps(model: TrainModel, batches: Array<{ query: Nchw; support: Nchw }>): Promise<{ losses: number[]; stepSeconds: number[] }> {
  const losses: number[] = [];
  const stepSeconds: number[] = [];
  for (const b of batches) {
    const t = process.hrtime.bigint();
    losses.push(await model.step(b.query, [b.support]));
    stepSeconds.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return { losses, stepSeconds };
}

export async function main(args: string[]): Promise<void> {
  if (!trainingAvailable()) throw new Error(`the training addon is not built (${trainAddonPath()}); run npm run build:train`);
  const size = intFlag(args, 'size', 224);
  const batch = intFlag(args, 'batch', 32);
  const shots = intFlag(args, 'shots', 2);
  const steps = intFlag(args, 'steps', 20);
  const epochSteps = intFlag(args, 'epoch-steps', 4);
  const repeats = intFlag(args, 'repeats', 3);
  const threads = intFlag(args, 'threads', os.availableParallelism());
  const lr = Number(flag(args, 'lr', '1e-4'));
  const peerLayout = peerLayoutFlag(args);
  if (size % 16 !== 0) throw new Error(`--size must be a multiple of 16 but is ${size}`);
  const havePeer = peerAvailable(['torch', 'torchvision', 'numpy']);
  if (!havePeer) process.stdout.write('PyTorch peer skipped: /usr/bin/python3 cannot import torch and torchvision (apt-get install python3-torch python3-torchvision)\n');
  const load = watchLoad('regad bench');
  const rows: Row[] = [];

  // 1. Loss trajectories.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-regad-'));
  let fidelity: { layout: string; imiad: number[]; peer: number[] | null; maxRelativeLossDiff: number | null; maxRelativeLossDiffNchw: number | null };
  try {
    const { model, batches } = await prepareRegadRun({ size, batch, shots, steps, lr, threads }, dir);
    const mine = await runRegadSteps(model, batches);
    const peer = havePeer ? runPeer<PeerResult>('regad_torch.py', [dir, String(threads)], peerLayoutEnv(resnetLayout('regad'))) : null;
    const nchw = havePeer && resnetLayout('regad') !== 'nchw' ? runPeer<PeerResult>('regad_torch.py', [dir, String(threads)], peerLayoutEnv('nchw')) : peer;
    fidelity = {
      layout: resnetLayout('regad'),
      imiad: mine.losses,
      peer: peer?.losses ?? null,
      maxRelativeLossDiff: peer ? maxRelativeDiff(mine.losses, peer.losses) : null,
      maxRelativeLossDiffNchw: nchw ? maxRelativeDiff(mine.losses, nchw.losses) : null,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  // 2. Epoch-slice times, interleaved.
  const timingDir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-regad-t-'));
  let timing: Array<Measured<number[]>> = [];
  try {
    const { model, batches } = await prepareRegadRun({ size, batch, shots, steps: epochSteps, lr, threads }, timingDir);
    const contenders = [
      {
        name: 'imiad',
        run: async () => {
          const r = await runRegadSteps(model, batches);
          return { ms: r.stepSeconds.reduce((a, s) => a + s, 0) * 1000, result: r.losses };
        },
      },
      ...(havePeer
        ? (['pytorch', 'pytorch-lean'] as const).map((name) => ({
            name,
            run: () => {
              const r = runPeer<PeerResult>('regad_torch.py', [timingDir, String(threads), ...(name === 'pytorch-lean' ? ['lean'] : [])], peerLayoutEnv(peerLayout));
              return { ms: r.stepSeconds.reduce((a, s) => a + s, 0) * 1000, result: r.losses };
            },
          }))
        : []),
    ];
    timing = await measureInterleaved(contenders, repeats, (name, r, round) => process.stdout.write(`round ${round + 1}: ${name} ${(r.ms / 1000).toFixed(2)} s\n`));
  } finally {
    fs.rmSync(timingDir, { recursive: true, force: true });
  }
  const report = load.finish();
  const [mine, ...peers] = timing;
  const seconds = (m: Measured<unknown>): string => formatSpread({ ...m.ms, median: m.ms.median / 1000, min: m.ms.min / 1000, max: m.ms.max / 1000 });
  const ratios: Record<string, number> = {};
  for (const peer of peers.length ? peers : [null]) {
    // ratioSpread(slow, fast) = slow / fast per round: the peer's time over imiad's; its inverse is imiad's time as a fraction of the peer's.
    const ratio = peer ? 1 / ratioSpread(peer, mine).median : null;
    if (peer && ratio !== null) ratios[peer.name] = ratio;
    rows.push({
      method: 'regad',
      peer: peer ? (peer.name === 'pytorch' ? 'official forward' : 'official, no unused stn outputs') : '-',
      'imiad s/epoch-slice': seconds(mine),
      'torch s/epoch-slice': peer ? seconds(peer) : '-',
      'time ratio (imiad/torch)': ratio === null ? '-' : ratio.toFixed(3),
      target: 0.9,
      'max rel loss diff': fidelity.maxRelativeLossDiff === null ? '-' : fidelity.maxRelativeLossDiff.toExponential(2),
      agrees: fidelity.maxRelativeLossDiff === null ? '-' : fidelity.maxRelativeLossDiff <= 1e-4,
      'loss diff, NCHW peer': fidelity.maxRelativeLossDiffNchw === null ? '-' : fidelity.maxRelativeLossDiffNchw.toExponential(2),
    });
  }
  printTable(
    `RegAD meta-training: ${size} px, ${batch} queries x ${shots} supports, ${steps} steps compared, epoch slice of ${epochSteps} steps x ${repeats} rounds, ${threads} threads; ` +
      `imiad's ResNet-18 in ${resnetLayout('regad')} layout, the timed peer in ${peerLayout} (--peer-layout), the fidelity peer in imiad's layout`,
    rows,
  );
  writeJson('regad', {
    machine: machineInfo(threads),
    load: report,
    options: { size, batch, shots, steps, epochSteps, repeats, threads, lr, peerLayout },
    fidelity,
    timing: timing.map((t) => ({ name: t.name, ms: t.ms })),
    timeRatios: ratios,
  });
}
