/**
 * `npm run bench -- train [--epochs 1] [--train 16] [--test 16] [--size 256] [--threads N] [--methods stpm,rd4ad]`:
 * training epochs of STPM and RD4AD on generated images (default 256 px, batch 8, the default backbone shapes:
 * ResNet-18 for STPM, WRN-50-2 for RD4AD). The teacher's features are computed once by ONNX Runtime and written to
 * binary files; imiad (libtorch addon) and, when Debian's python3-torch is installed, the PyTorch peer
 * (bench/peers/train_torch.py) train the same architectures on them with the same batches, so the epoch times
 * compare the training engines alone. Then both score the test images (max of the smoothed map) for image AUROC.
 * Target: imiad's epoch time <= 0.9x the peer's, image AUROC within 0.02. Table + bench/results/train.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { gaussianBlur } from '../bindings/filters';
import { binaryClassificationMetrics } from '../bindings/metrics';
import { type Nchw, trainingAvailable, trainAddonPath, TrainModel } from '../bindings/train/train';
import type { BackboneShape } from '../lib/backbone/builder';
import { loadBackbone } from '../lib/backbone/session';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { batches } from '../lib/image/pipeline';
import { Random } from '../lib/prng';
import { flag, intFlag, machineInfo, peerAvailable, printTable, type Row, runPeer, writeJson } from './common';

const LAYERS = ['layer1', 'layer2', 'layer3'];
const BATCH = 8;

interface Features {
  n: number;
  images: Float32Array;
  teacher: Float32Array[];
  shapes: number[][];
}

async function extract(paths: string[], shape: BackboneShape, size: number, threads: number): Promise<Features> {
  const backbone = await loadBackbone({ shape, layers: LAYERS, threads });
  const images: Float32Array[] = [];
  const teacher: Float32Array[][] = [[], [], []];
  let shapes: number[][] = [];
  for await (const b of batches(paths, { imageSize: size, cropSize: size, batchSize: BATCH })) {
    const f = await backbone.extract(b.data, b.n, size, size);
    images.push(b.data.slice());
    LAYERS.forEach((l, i) => teacher[i].push(f[l].data.slice()));
    shapes = LAYERS.map((l) => [f[l].channels, f[l].height, f[l].width]);
  }
  await backbone.dispose();
  const cat = (parts: Float32Array[]): Float32Array => {
    const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  return { n: paths.length, images: cat(images), teacher: teacher.map(cat), shapes };
}

function slice(f: Features, idx: number[], size: number, withImages: boolean): { images: Nchw | null; teacher: Nchw[] } {
  const pick = (src: Float32Array, per: number): Float32Array => {
    const out = new Float32Array(idx.length * per);
    idx.forEach((i, j) => out.set(src.subarray(i * per, (i + 1) * per), j * per));
    return out;
  };
  const m = idx.length;
  return {
    images: withImages ? { data: pick(f.images, 3 * size * size), shape: [m, 3, size, size] } : null,
    teacher: f.shapes.map((s, l) => ({ data: pick(f.teacher[l], s[0] * s[1] * s[2]), shape: [m, s[0], s[1], s[2]] })),
  };
}

export async function main(args: string[]): Promise<void> {
  const epochs = intFlag(args, 'epochs', 1);
  const nTrain = intFlag(args, 'train', 16);
  const nTest = intFlag(args, 'test', 16);
  const size = intFlag(args, 'size', 256);
  const threads = intFlag(args, 'threads', os.availableParallelism());
  const methods = (flag(args, 'methods', 'stpm,rd4ad') as string).split(',') as ('stpm' | 'rd4ad')[];
  if (!trainingAvailable()) {
    process.stderr.write(`bench train: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
    process.exitCode = 1;
    return;
  }
  const peer = peerAvailable(['torch', 'scipy', 'sklearn']);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-train-'));
  try {
    const root = path.join(dir, 'data');
    await synthesize('mvtec', root, { seed: 7, categories: 1, size, train: nTrain, test: nTest });
    const [category] = await loadDataset('mvtec', root);
    const train = category.samples.filter((s) => s.split === 'train');
    const test = category.samples.filter((s) => s.split === 'test');
    const labels = Uint8Array.from(test.map((s) => (s.label === 'anomaly' ? 1 : 0)));
    const rng = new Random(0);
    const orders = Array.from({ length: epochs }, () => rng.shuffle(Array.from({ length: train.length }, (_, i) => i)));
    const rows: Row[] = [];
    const results: Record<string, unknown> = {};
    for (const kind of methods) {
      const shape: BackboneShape = kind === 'stpm' ? 'resnet18' : 'wide_resnet50_2';
      const lr = kind === 'stpm' ? 0.4 : 0.005;
      const trainF = await extract(train.map((s) => s.path), shape, size, threads);
      const testF = await extract(test.map((s) => s.path), shape, size, threads);
      const model = new TrainModel({ kind, channels: trainF.shapes.map((s) => s[0]), seed: 0, threads, lr });
      const epochMs: number[] = [];
      const losses: number[] = [];
      for (const order of orders) {
        const t0 = process.hrtime.bigint();
        let sum = 0;
        let steps = 0;
        for (let s = 0; s < order.length; s += BATCH) {
          const b = slice(trainF, order.slice(s, s + BATCH), size, kind === 'stpm');
          sum += await model.step(b.images, b.teacher);
          steps += 1;
        }
        epochMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
        losses.push(sum / steps);
      }
      const scores = new Float64Array(testF.n);
      for (let i = 0; i < testF.n; i++) {
        const b = slice(testF, [i], size, kind === 'stpm');
        const raw = await model.maps(b.images, b.teacher, size);
        const smooth = await gaussianBlur(raw, { count: 1, height: size, width: size, sigma: 4 });
        let max = -Infinity;
        for (const v of smooth) if (v > max) max = v;
        scores[i] = max;
      }
      const auroc = (await binaryClassificationMetrics(scores, labels)).auroc;
      let peerResult: { epoch_ms: number[]; losses: number[]; auroc: number; torch: string } | null = null;
      if (peer) {
        const write = (name: string, a: Float32Array): string => {
          const file = path.join(dir, `${kind}.${name}.f32`);
          fs.writeFileSync(file, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
          return file;
        };
        const job = {
          kind,
          crop: size,
          batch: BATCH,
          lr,
          threads,
          shapes: trainF.shapes,
          orders,
          labels: Array.from(labels),
          train: { n: trainF.n, images: kind === 'stpm' ? write('train.images', trainF.images) : null, teacher: trainF.teacher.map((t, l) => write(`train.l${l + 1}`, t)) },
          test: { n: testF.n, images: kind === 'stpm' ? write('test.images', testF.images) : null, teacher: testF.teacher.map((t, l) => write(`test.l${l + 1}`, t)) },
        };
        const jobFile = path.join(dir, `${kind}.job.json`);
        fs.writeFileSync(jobFile, JSON.stringify(job));
        peerResult = runPeer('train_torch.py', [jobFile]);
      }
      const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
      const imiadEpoch = median(epochMs);
      const peerEpoch = peerResult ? median(peerResult.epoch_ms) : null;
      const ratio = peerEpoch ? imiadEpoch / peerEpoch : null;
      const aurocDiff = peerResult ? Math.abs(auroc - peerResult.auroc) : null;
      // Both seed libtorch's generator with 0 and initialise in the same module order, so the weights and the
      // loss trajectories agree as far as the two engines compute the same thing.
      const lossDiff = peerResult ? Math.max(...losses.map((l, i) => Math.abs(l - peerResult!.losses[i]) / Math.abs(peerResult!.losses[i]))) : null;
      rows.push({
        method: kind,
        backbone: shape,
        images: trainF.n,
        epochs,
        'imiad epoch s': imiadEpoch / 1000,
        'torch epoch s': peerEpoch === null ? null : peerEpoch / 1000,
        'imiad/torch': ratio,
        'imiad AUROC': auroc,
        'torch AUROC': peerResult ? peerResult.auroc : null,
        'max loss rel. diff': lossDiff,
        'time target (<=0.9)': ratio === null ? null : ratio <= 0.9,
        'AUROC target (<=0.02)': aurocDiff === null ? null : aurocDiff <= 0.02,
      });
      results[kind] = { backbone: shape, parameters: model.parameterCount, imiad: { epoch_ms: epochMs, losses, auroc }, peer: peerResult, ratio, auroc_diff: aurocDiff, max_loss_relative_diff: lossDiff };
    }
    printTable(`Training: ${epochs} epoch(s) on ${nTrain} generated ${size} px images, batch ${BATCH}, ${threads} thread(s)${peer ? '' : ' (no python3-torch peer)'}`, rows);
    writeJson('train', { machine: machineInfo(threads), size, batch: BATCH, epochs, train: nTrain, test: nTest, results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
