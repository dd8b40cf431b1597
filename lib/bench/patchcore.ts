/**
 * One PatchCore latency case: fit on `train` synthetic MVTec-layout images (imiad synth), then per-image latency over
 * the test images, split into decode, backbone, patch embedding, k-NN and map post-processing, against the reference
 * pipeline in torch + faiss (bench/peers/patchcore_torch.py: patchcore-inspection's _embed, faiss IndexFlatL2,
 * scipy's gaussian_filter) given the same ONNX weights (exported as JSON + float32) and the same memory bank, timed in
 * interleaved rounds (each round predicts every test image once; its figure is the median per-image latency). Used by
 * `npm run bench -- patchcore` (bench/patchcore.ts) and `imiad bench patchcore` (lib/bench/suite.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { BackboneShape } from '../backbone/builder';
import { defaultBackboneFile } from '../backbone/builder';
import { decodeModel, TensorDataType, type TensorProto } from '../backbone/onnx-proto';
import { loadDataset } from '../datasets';
import { synthesize } from '../datasets/synth';
import { PatchCore, type PatchCoreBreakdown } from '../methods/patchcore';
import { type Contender, type Measured, measureInterleaved, median, runPeer } from './common';

export const PATCHCORE_PEER_MODULES = ['torch', 'faiss', 'torchvision', 'scipy', 'PIL'];

/** The centre crop of `imageSize` px images: 224 of 256 as PatchCore's defaults, else 7/8 of the side. */
export function patchcoreCropSize(imageSize: number): number {
  return imageSize === 256 ? 224 : Math.round((imageSize * 7) / 8);
}

export interface PatchcorePeerResult {
  scores: number[];
  times: Record<'decode' | 'backbone' | 'embed' | 'knn' | 'post', number[]>;
  threads: number;
  torch: string;
  faiss: string;
}

export const STAGES = ['decode', 'backbone', 'embed', 'knn', 'post'] as const;

/** The median of per-image times after the first image (a warm-up). */
export function imageMedian(values: number[]): number {
  const v = (values.length > 1 ? values.slice(1) : values).slice().sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function ranks(values: ArrayLike<number>): number[] {
  const idx = Array.from({ length: values.length }, (_, i) => i).sort((a, b) => values[a] - values[b]);
  const r = new Array<number>(values.length);
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && values[idx[j + 1]] === values[idx[i]]) j++;
    for (let k = i; k <= j; k++) r[idx[k]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return r;
}

/** Spearman's rank correlation (average ranks for ties). */
export function spearman(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const ra = ranks(a);
  const rb = ranks(b);
  const n = ra.length;
  const ma = ra.reduce((s, v) => s + v, 0) / n;
  const mb = rb.reduce((s, v) => s + v, 0) / n;
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < n; i++) {
    num += (ra[i] - ma) * (rb[i] - mb);
    da += (ra[i] - ma) ** 2;
    db += (rb[i] - mb) ** 2;
  }
  return num / Math.sqrt(da * db);
}

function tensorFloats(t: TensorProto): Float32Array {
  if (t.dataType !== TensorDataType.FLOAT) throw new Error(`initializer ${t.name} is not float32`);
  if (t.rawData) {
    const copy = new Uint8Array(t.rawData);
    return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
  }
  return Float32Array.from(t.floatData ?? []);
}

/** The ONNX graph as JSON (nodes, attributes, initializer offsets) plus one float32 file of all weights. */
export function exportGraph(file: string, dir: string): { graph: string; weights: string; input: string } {
  const model = decodeModel(new Uint8Array(fs.readFileSync(file)));
  const g = model.graph;
  const initializers: Array<{ name: string; dims: number[]; offset: number }> = [];
  const chunks: Float32Array[] = [];
  let offset = 0;
  for (const t of g.initializer) {
    const v = tensorFloats(t);
    initializers.push({ name: t.name, dims: t.dims, offset });
    chunks.push(v);
    offset += v.length;
  }
  const blob = new Float32Array(offset);
  let at = 0;
  for (const c of chunks) {
    blob.set(c, at);
    at += c.length;
  }
  const inits = new Set(g.initializer.map((t) => t.name));
  const input = g.input.find((i) => !inits.has(i.name))?.name ?? 'input';
  const nodes = g.node.map((n) => ({
    op: n.opType,
    inputs: n.input,
    outputs: n.output,
    attributes: n.attribute.map((a) => ({ name: a.name, value: a.ints && a.ints.length > 0 ? a.ints : a.i ?? a.f ?? null })),
  }));
  const graph = path.join(dir, 'graph.json');
  const weights = path.join(dir, 'weights.f32');
  fs.writeFileSync(graph, JSON.stringify({ input, nodes, initializers }));
  fs.writeFileSync(weights, Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength));
  return { graph, weights, input };
}

type Stages = Record<(typeof STAGES)[number], number>;
type Round = { stages: Stages; scores: ArrayLike<number> };

export interface PatchcoreCaseOptions {
  shape: BackboneShape;
  /** Side of the synthetic images; the backbone sees them resized to it and centre-cropped to 7/8 of it. */
  imageSize: number;
  train: number;
  test: number;
  repeats: number;
  peer: boolean;
  onRun?: (name: string, ms: number) => void;
}

export interface PatchcoreCaseResult {
  bankRows: number;
  fitSeconds: number;
  imiad: Measured<Round>;
  imiadStages: Stages;
  peer: Measured<Round> | null;
  peerStages: Stages | null;
  peerInfo: { torch: string; faiss: string; threads: number } | null;
  /** Spearman's correlation of imiad's image scores with the peer's. */
  spearman: number | null;
}

export async function measurePatchcoreCase(o: PatchcoreCaseOptions): Promise<PatchcoreCaseResult> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-patchcore-'));
  const cropSize = patchcoreCropSize(o.imageSize);
  const threads = os.availableParallelism();
  try {
    const root = path.join(tmp, 'mvtec');
    await synthesize('mvtec', root, { seed: 0, categories: 1, size: o.imageSize, train: o.train, test: o.test });
    const [category] = await loadDataset('mvtec', root);
    const train = category.samples.filter((s) => s.split === 'train');
    const test = category.samples.filter((s) => s.split === 'test');
    const detector = new PatchCore({ backboneShape: o.shape, seed: 0, imageSize: o.imageSize, cropSize });
    try {
      const t0 = process.hrtime.bigint();
      await detector.fit(train);
      const fitSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const bank = detector.memoryBank as { bank: Float32Array; rows: number; dims: number };
      const contenders: Array<Contender<Round>> = [
        {
          name: 'imiad',
          warmup: 1,
          run: async () => {
            const prediction = await detector.predict(test);
            const bd: PatchCoreBreakdown = detector.lastBreakdown();
            const times = { decode: bd.decodeMs, backbone: bd.backboneMs, embed: bd.embedMs, knn: bd.knnMs, post: bd.postMs };
            const stages = Object.fromEntries(STAGES.map((st) => [st, imageMedian(times[st])])) as Stages;
            const total = imageMedian(bd.decodeMs.map((_, i) => STAGES.reduce((a, st) => a + times[st][i], 0)));
            return { ms: total, result: { stages, scores: prediction.scores } };
          },
        },
      ];
      let peerInfo: PatchcoreCaseResult['peerInfo'] = null;
      if (o.peer) {
        const dir = path.join(tmp, 'peer');
        fs.mkdirSync(dir);
        const exported = exportGraph(defaultBackboneFile({ shape: o.shape, seed: 0 }), dir);
        const bankFile = path.join(dir, 'bank.f32');
        fs.writeFileSync(bankFile, Buffer.from(bank.bank.buffer, bank.bank.byteOffset, bank.bank.byteLength));
        const job = path.join(dir, 'job.json');
        fs.writeFileSync(
          job,
          JSON.stringify({
            graph: exported.graph, weights: exported.weights, tensors: ['layer2', 'layer3'], bank: bankFile, dims: bank.dims,
            images: test.map((s) => s.path), imageSize: o.imageSize, cropSize, threads,
          }),
        );
        // OpenMP's default busy-waiting makes torch and faiss several times slower whenever the cores are shared
        // (the same reason imiad's ONNX Runtime sessions do not spin): both sides run without spinning.
        process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
        contenders.push({
          name: 'torch + faiss',
          run: () => {
            const peer = runPeer<PatchcorePeerResult>('patchcore_torch.py', [job]);
            peerInfo = { torch: peer.torch, faiss: peer.faiss, threads: peer.threads };
            const stages = Object.fromEntries(STAGES.map((st) => [st, imageMedian(peer.times[st])])) as Stages;
            const total = imageMedian(peer.times.decode.map((_, i) => STAGES.reduce((a, st) => a + peer.times[st][i], 0)));
            return { ms: total, result: { stages, scores: peer.scores } };
          },
        });
      }
      const [ours, peer] = await measureInterleaved(contenders, o.repeats, (name, r) => o.onRun?.(name, r.ms));
      const stagesOf = (m: Measured<Round>): Stages => Object.fromEntries(STAGES.map((st) => [st, median(m.results.map((r) => r.stages[st]))])) as Stages;
      return {
        bankRows: bank.rows,
        fitSeconds,
        imiad: ours,
        imiadStages: stagesOf(ours),
        peer: peer ?? null,
        peerStages: peer ? stagesOf(peer) : null,
        peerInfo,
        spearman: peer ? spearman(ours.results[0].scores, peer.results[0].scores) : null,
      };
    } finally {
      await detector.dispose();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
