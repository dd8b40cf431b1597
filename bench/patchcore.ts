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
 * peer as one process per round; lib/bench/patchcore.ts measurePatchcoreCase, the case `imiad bench patchcore` runs
 * too). Writes bench/results/patchcore.json.
 */
import * as os from 'os';

import type { BackboneShape } from '../lib/backbone/builder';
import { measurePatchcoreCase, PATCHCORE_PEER_MODULES, patchcoreCropSize } from '../lib/bench/patchcore';
import { flag, formatSpread, intFlag, machineInfo, peerAvailable, printTable, ratioSpread, type Row, watchLoad, writeJson } from './common';

export async function main(args: string[]): Promise<void> {
  const shapes = (flag(args, 'shapes', 'resnet18,wide_resnet50_2') as string).split(',') as BackboneShape[];
  const size = intFlag(args, 'size', 256);
  const trainCount = intFlag(args, 'train', 20);
  const testCount = intFlag(args, 'test', 20);
  const repeats = intFlag(args, 'repeats', 3);
  const load = watchLoad('patchcore');
  const threads = os.availableParallelism();
  const withPeer = peerAvailable(PATCHCORE_PEER_MODULES);
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  for (const shape of shapes) {
    process.stdout.write(`${shape}:\n`);
    const r = await measurePatchcoreCase({
      shape, imageSize: size, train: trainCount, test: testCount, repeats, peer: withPeer,
      onRun: (name, ms) => process.stdout.write(`  ${name} ${ms.toFixed(1)} ms per image\n`),
    });
    rows.push({ model: shape, impl: 'imiad', ...r.imiadStages, total: formatSpread(r.imiad.ms), ratio: null, spearman: null, bank_rows: r.bankRows });
    const entry: Record<string, unknown> = { fit_seconds: r.fitSeconds, bank_rows: r.bankRows, imiad: { ...r.imiadStages, total: r.imiad.ms, scores: Array.from(r.imiad.results[0].scores) } };
    if (r.peer && r.peerInfo && r.peerStages) {
      const info = r.peerInfo;
      const ratio = ratioSpread(r.imiad, r.peer);
      rows.push({ model: shape, impl: `torch ${info.torch} + faiss ${info.faiss}`, ...r.peerStages, total: formatSpread(r.peer.ms), ratio: formatSpread(ratio), spearman: r.spearman, bank_rows: r.bankRows });
      entry.peer = { ...r.peerStages, total: r.peer.ms, scores: r.peer.results[0].scores, ...info };
      entry.ratio = ratio;
      entry.spearman = r.spearman;
    }
    results[shape] = entry;
  }
  printTable(`PatchCore per-image latency, ms (per round the median over ${testCount} test images of ${size} px, crop ${patchcoreCropSize(size)}; median (min-max) of ${repeats} interleaved rounds; ratio imiad/peer; ${threads} threads)`, rows);
  if (!withPeer) process.stdout.write('\n(peer skipped: Debian python3 with torch, faiss, torchvision, scipy and PIL not found)\n');
  writeJson('patchcore', { machine: machineInfo(threads), size, train: trainCount, test: testCount, repeats, load: load.finish(), results });
}
