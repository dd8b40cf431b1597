/**
 * `npm run bench -- train [--epochs 1] [--train 16] [--test 16] [--size 256] [--threads 1,2] [--repeats 3]
 * [--methods stpm,rd4ad]`: training epochs of STPM and RD4AD on generated images (default 256 px, batch 8, the
 * default backbone shapes: ResNet-18 for STPM, WRN-50-2 for RD4AD). The teacher's features are computed once by ONNX
 * Runtime and written to binary files; then, for each method and thread count, imiad (the libtorch addon, in a child
 * process: lib/bench/train-child.ts) and, when Debian's python3-torch is installed, the PyTorch peer
 * (bench/peers/train_torch.py) train the same architectures on them with the same batches, `--repeats` times each,
 * interleaved (lib/bench/train.ts measureTrainCase, the case `imiad bench train` runs too), so the epoch times compare
 * the training engines alone. Each run is its own process, so each side's peak resident memory covers the same work.
 * Reported: medians over the repeats with the min-max range, the CPU seconds and page faults of the training loops,
 * the load average before and after, and a warning when the machine was busy.
 * Targets: imiad's epoch time <= 0.9x the peer's, peak memory <= 1.2x, image AUROC within 0.02, losses identical.
 * Table + bench/results/train.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { measureTrainCase, prepareTrainFeatures, prepareTrainImages, BATCH, TRAIN_PEER_MODULES, type TrainKind } from '../lib/bench/train';
import { flag, formatSpread, intFlag, machineInfo, peerAvailable, printTable, type Row, writeJson } from './common';

export async function main(args: string[]): Promise<void> {
  const epochs = intFlag(args, 'epochs', 1);
  const nTrain = intFlag(args, 'train', 16);
  const nTest = intFlag(args, 'test', 16);
  const size = intFlag(args, 'size', 256);
  const repeats = intFlag(args, 'repeats', 3);
  const threadList = (flag(args, 'threads', '1,2') as string).split(',').map((t) => {
    const n = Number(t);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--threads: expected integers >= 1 separated by commas but received ${t}`);
    return n;
  });
  const methods = (flag(args, 'methods', 'stpm,rd4ad') as string).split(',') as TrainKind[];
  for (const m of methods) if (m !== 'stpm' && m !== 'rd4ad') throw new Error(`--methods: expected stpm or rd4ad but received ${m}`);
  if (!trainingAvailable()) {
    process.stderr.write(`bench train: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
    process.exitCode = 1;
    return;
  }
  const peer = peerAvailable(TRAIN_PEER_MODULES);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-train-'));
  try {
    const images = await prepareTrainImages(dir, { size, train: nTrain, test: nTest, epochs });
    const rows: Row[] = [];
    const results: Record<string, unknown> = {};
    const warnings: string[] = [];
    for (const kind of methods) {
      const features = await prepareTrainFeatures(images, kind);
      for (const threads of threadList) {
        const r = await measureTrainCase(images, features, { threads, repeats, peer });
        if (r.load.busy) warnings.push(`${kind}, ${threads} thread(s): the machine was busy; these figures are not quiet-machine figures`);
        rows.push({
          method: kind,
          threads,
          'imiad epoch s': formatSpread(r.epoch_s.imiad),
          'torch epoch s': r.epoch_s.peer ? formatSpread(r.epoch_s.peer) : null,
          'imiad/torch': r.ratio ? formatSpread(r.ratio) : null,
          'CPU ratio': r.cpu_ratio,
          'imiad RSS MB': Math.round(r.rss_mb.imiad),
          'torch RSS MB': r.rss_mb.peer === null ? null : Math.round(r.rss_mb.peer),
          'RSS ratio': r.rss_ratio,
          'imiad AUROC': r.imiad[0].auroc,
          'torch AUROC': r.peer ? r.peer[0].auroc : null,
          'max loss rel. diff': r.max_loss_relative_diff,
          'time (<=0.9)': r.ratio === null ? null : r.ratio.median <= 0.9,
          'RSS (<=1.2)': r.rss_ratio === null ? null : r.rss_ratio <= 1.2,
          'AUROC (<=0.02)': r.auroc_diff === null ? null : r.auroc_diff <= 0.02,
        });
        results[`${kind}.t${threads}`] = r;
      }
    }
    printTable(
      `Training: ${epochs} epoch(s) on ${nTrain} generated ${size} px images, batch ${BATCH}, median (min-max) of ${repeats} interleaved run(s)` +
        `${peer ? '' : ' (no python3-torch peer)'}; CPU ratio = CPU seconds of the training loops; RSS = peak resident memory of each side's process`,
      rows,
    );
    for (const line of warnings) process.stdout.write(`WARNING: ${line}\n`);
    writeJson('train', { machine: machineInfo(Math.max(...threadList)), size, batch: BATCH, epochs, train: nTrain, test: nTest, repeats, results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
