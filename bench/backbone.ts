/**
 * `npm run bench -- backbone [--size 224] [--batch 8] [--repeats 3] [--threads N] [--file F.onnx --layers a,b]`:
 * images/s of imiad's default backbones (ResNet-18-shaped and WideResNet-50-2-shaped, seeded He-init weights)
 * through ONNX Runtime, tapping layer2 + layer3 as PatchCore does, and, when Debian's python3 has torch and
 * torchvision, the same trunks in PyTorch eager mode, one batch each per round in --repeats interleaved rounds.
 */
import * as os from 'os';

import { loadBackbone } from '../lib/backbone/session';
import type { BackboneShape } from '../lib/backbone/builder';
import {
  type Contender, flag, formatSpread, intFlag, machineInfo, measureInterleaved, peerAvailable, printTable, randomFloats, ratioSpread,
  type Row, runPeer, timed, watchLoad, writeJson,
} from './common';

interface PeerResult {
  images_per_second: number;
  seconds_per_batch: number;
  torch: string;
}

export async function main(args: string[]): Promise<void> {
  const size = intFlag(args, 'size', 224);
  const batch = intFlag(args, 'batch', 8);
  const repeats = intFlag(args, 'repeats', 3);
  const threads = intFlag(args, 'threads', os.availableParallelism());
  const file = flag(args, 'file');
  const layers = (flag(args, 'layers', 'layer2,layer3') ?? 'layer2,layer3').split(',');
  const input = randomFloats(batch * 3 * size * size, 11).map((v) => v * Math.sqrt(12));
  const withPeer = peerAvailable(['torch', 'torchvision']);
  // ONNX Runtime runs only the nodes the fetched layers need; the peer stops at the same stage.
  const stages = Math.max(...layers.map((l) => (/^layer[1-4]$/.test(l) ? Number(l.slice(5)) : 4)));

  const configs: Array<{ name: string; shape?: BackboneShape; file?: string }> = file
    ? [{ name: file, file }]
    : [
        { name: 'resnet18 (default)', shape: 'resnet18' },
        { name: 'wide_resnet50_2', shape: 'wide_resnet50_2' },
      ];
  const rows: Row[] = [];
  const load = watchLoad('backbone');
  for (const c of configs) {
    const t0 = process.hrtime.bigint();
    const bb = await loadBackbone({ file: c.file, shape: c.shape, layers, threads });
    const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
    // One batch per round; the peer as one process per round (one untimed batch, then one timed).
    const contenders: Contender[] = [{ name: 'imiad', warmup: 1, run: () => timed(() => bb.extract(input, batch, size, size)) }];
    if (withPeer && c.shape) {
      const shape = c.shape;
      contenders.push({
        name: 'torch',
        run: () => {
          const peer = runPeer<PeerResult>('backbone_torch.py', [shape, String(size), String(batch), String(threads), '1', String(stages)]);
          return { ms: peer.seconds_per_batch * 1000, result: null };
        },
      });
    }
    process.stdout.write(`${c.name}:\n`);
    const [ours, peer] = await measureInterleaved(contenders, repeats, (name, r) => process.stdout.write(`  ${name} ${r.ms.toFixed(0)} ms per batch\n`));
    await bb.dispose();
    rows.push({
      backbone: c.name,
      size,
      batch,
      threads,
      load_ms: Math.round(loadMs),
      ms_per_batch: formatSpread(ours.ms),
      images_per_s: (batch * 1000) / ours.ms.median,
      torch_ms_per_batch: peer ? formatSpread(peer.ms) : null,
      speedup_vs_torch: peer ? formatSpread(ratioSpread(peer, ours)) : null,
    });
  }
  printTable(`Backbone throughput (ONNX Runtime, layers ${layers.join('+')}; peer: torch eager, same trunk; median (min-max) of ${repeats} interleaved rounds)`, rows);
  writeJson('backbone', { machine: machineInfo(threads), layers, repeats, load: load.finish(), results: rows });
}
