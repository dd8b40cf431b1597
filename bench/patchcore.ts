/**
 * `npm run bench -- patchcore [--shapes resnet18,wide_resnet50_2] [--size 256] [--train 20] [--test 20] [--repeats 3]`
 *
 * PatchCore's per-image latency on a synthetic MVTec-layout category (imiad synth), split into decode, backbone,
 * patch embedding, k-NN and map post-processing (upsampling, blur, inverse mapping), with the default
 * (ResNet-18-shaped) backbone and the WideResNet-50-2-shaped one. When Debian's python3-torch, python3-faiss and
 * torchvision are installed, bench/peers/patchcore_torch.py runs the reference pipeline (patchcore-inspection's
 * _embed, faiss IndexFlatL2, scipy's gaussian_filter) in the same run on the same images, with the same ONNX
 * weights (exported here as JSON + float32) and the same memory bank, and the table reports the latency ratio and
 * the Spearman correlation of the image scores. imiad and the peer run in --repeats interleaved rounds (each round
 * predicts every test image once; its figure is the median per-image latency; imiad after one warm-up round, the
 * peer as one process per round). Writes bench/results/patchcore.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { BackboneShape } from '../lib/backbone/builder';
import { defaultBackboneFile } from '../lib/backbone/builder';
import { decodeModel, TensorDataType, type TensorProto } from '../lib/backbone/onnx-proto';
import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { PatchCore, type PatchCoreBreakdown } from '../lib/methods/patchcore';
import {
  type Contender, flag, formatSpread, intFlag, machineInfo, type Measured, measureInterleaved, median, peerAvailable, printTable,
  ratioSpread, type Row, runPeer, watchLoad, writeJson,
} from './common';

interface PeerResult {
  scores: number[];
  times: Record<'decode' | 'backbone' | 'embed' | 'knn' | 'post', number[]>;
  threads: number;
  torch: string;
  faiss: string;
}

const STAGES = ['decode', 'backbone', 'embed', 'knn', 'post'] as const;

/** The median of per-image times after the first image (a warm-up). */
function imageMedian(values: number[]): number {
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
function exportGraph(file: string, dir: string): { graph: string; weights: string; input: string } {
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

export async function main(args: string[]): Promise<void> {
  const shapes = (flag(args, 'shapes', 'resnet18,wide_resnet50_2') as string).split(',') as BackboneShape[];
  const size = intFlag(args, 'size', 256);
  const trainCount = intFlag(args, 'train', 20);
  const testCount = intFlag(args, 'test', 20);
  const repeats = intFlag(args, 'repeats', 3);
  const load = watchLoad('patchcore');
  const threads = os.availableParallelism();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-patchcore-'));
  try {
    const root = path.join(tmp, 'mvtec');
    await synthesize('mvtec', root, { seed: 0, categories: 1, size, train: trainCount, test: testCount });
    const [category] = await loadDataset('mvtec', root);
    const train = category.samples.filter((s) => s.split === 'train');
    const test = category.samples.filter((s) => s.split === 'test');
    const withPeer = peerAvailable(['torch', 'faiss', 'torchvision', 'scipy', 'PIL']);
    const rows: Row[] = [];
    const results: Record<string, unknown> = {};
    for (const shape of shapes) {
      const detector = new PatchCore({ backboneShape: shape, seed: 0 });
      const t0 = process.hrtime.bigint();
      await detector.fit(train);
      const fitSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const bank = detector.memoryBank as { bank: Float32Array; rows: number; dims: number };
      type Round = { stages: Record<(typeof STAGES)[number], number>; scores: ArrayLike<number> };
      // One round: every test image once; its figure is the median per-image latency of the round.
      const contenders: Array<Contender<Round>> = [
        {
          name: 'imiad',
          warmup: 1,
          run: async () => {
            const prediction = await detector.predict(test);
            const bd: PatchCoreBreakdown = detector.lastBreakdown();
            const times = { decode: bd.decodeMs, backbone: bd.backboneMs, embed: bd.embedMs, knn: bd.knnMs, post: bd.postMs };
            const stages = Object.fromEntries(STAGES.map((st) => [st, imageMedian(times[st])])) as Round['stages'];
            const total = imageMedian(bd.decodeMs.map((_, i) => STAGES.reduce((a, st) => a + times[st][i], 0)));
            return { ms: total, result: { stages, scores: prediction.scores } };
          },
        },
      ];
      let peerInfo: { torch: string; faiss: string; threads: number } | null = null;
      if (withPeer) {
        const dir = path.join(tmp, shape);
        fs.mkdirSync(dir);
        const backboneFile = defaultBackboneFile({ shape, seed: 0 });
        const exported = exportGraph(backboneFile, dir);
        const bankFile = path.join(dir, 'bank.f32');
        fs.writeFileSync(bankFile, Buffer.from(bank.bank.buffer, bank.bank.byteOffset, bank.bank.byteLength));
        const job = path.join(dir, 'job.json');
        fs.writeFileSync(
          job,
          JSON.stringify({
            graph: exported.graph,
            weights: exported.weights,
            tensors: ['layer2', 'layer3'],
            bank: bankFile,
            dims: bank.dims,
            images: test.map((s) => s.path),
            imageSize: 256,
            cropSize: 224,
            threads,
          }),
        );
        // OpenMP's default busy-waiting makes torch and faiss several times slower whenever the cores are shared
        // (the same reason imiad's ONNX Runtime sessions do not spin): both sides run without spinning.
        process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
        contenders.push({
          name: 'torch + faiss',
          run: () => {
            const peer = runPeer<PeerResult>('patchcore_torch.py', [job]);
            peerInfo = { torch: peer.torch, faiss: peer.faiss, threads: peer.threads };
            const stages = Object.fromEntries(STAGES.map((st) => [st, imageMedian(peer.times[st])])) as Round['stages'];
            const total = imageMedian(peer.times.decode.map((_, i) => STAGES.reduce((a, st) => a + peer.times[st][i], 0)));
            return { ms: total, result: { stages, scores: peer.scores } };
          },
        });
      }
      process.stdout.write(`${shape}:\n`);
      const [ours, peer] = await measureInterleaved(contenders, repeats, (name, r) => process.stdout.write(`  ${name} ${r.ms.toFixed(1)} ms per image\n`));
      const stagesOf = (m: Measured<Round>) => Object.fromEntries(STAGES.map((st) => [st, median(m.results.map((r) => r.stages[st]))]));
      const imiad = stagesOf(ours);
      rows.push({ model: shape, impl: 'imiad', ...imiad, total: formatSpread(ours.ms), ratio: null, spearman: null, bank_rows: bank.rows });
      const entry: Record<string, unknown> = { fit_seconds: fitSeconds, bank_rows: bank.rows, imiad: { ...imiad, total: ours.ms, scores: Array.from(ours.results[0].scores) } };
      if (peer && peerInfo) {
        const info = peerInfo as { torch: string; faiss: string; threads: number };
        const p = stagesOf(peer);
        const ratio = ratioSpread(ours, peer);
        const rho = spearman(ours.results[0].scores, peer.results[0].scores);
        rows.push({ model: shape, impl: `torch ${info.torch} + faiss ${info.faiss}`, ...p, total: formatSpread(peer.ms), ratio: formatSpread(ratio), spearman: rho, bank_rows: bank.rows });
        entry.peer = { ...p, total: peer.ms, scores: peer.results[0].scores, ...info };
        entry.ratio = ratio;
        entry.spearman = rho;
      }
      results[shape] = entry;
      await detector.dispose();
    }
    printTable(`PatchCore per-image latency, ms (per round the median over ${test.length} test images of ${size} px, crop 224; median (min-max) of ${repeats} interleaved rounds; ratio imiad/peer; ${threads} threads)`, rows);
    if (!withPeer) process.stdout.write('\n(peer skipped: Debian python3 with torch, faiss, torchvision, scipy and PIL not found)\n');
    writeJson('patchcore', { machine: machineInfo(threads), size, train: train.length, test: test.length, repeats, load: load.finish(), results });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
