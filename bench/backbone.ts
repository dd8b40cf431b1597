/**
 * `npm run bench -- backbone [--size 224] [--batch 8] [--repeats 5] [--threads N] [--file F.onnx --layers a,b]`:
 * images/s of imiad's default backbones (ResNet-18-shaped and WideResNet-50-2-shaped, seeded He-init weights)
 * through ONNX Runtime, tapping layer2 + layer3 as PatchCore does, and, when Debian's python3 has torch and
 * torchvision, the same trunks in PyTorch eager mode in the same run.
 */
import * as os from 'os';

import { loadBackbone } from '../lib/backbone/session';
import type { BackboneShape } from '../lib/backbone/builder';
import { flag, intFlag, machineInfo, peerAvailable, printTable, randomFloats, runPeer, timeMs, writeJson, type Row } from './common';

interface PeerResult {
  images_per_second: number;
  seconds_per_batch: number;
  torch: string;
}

export async function main(args: string[]): Promise<void> {
  const size = intFlag(args, 'size', 224);
  const batch = intFlag(args, 'batch', 8);
  const repeats = intFlag(args, 'repeats', 5);
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
  for (const c of configs) {
    const t0 = process.hrtime.bigint();
    const bb = await loadBackbone({ file: c.file, shape: c.shape, layers, threads });
    const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const ms = await timeMs(() => bb.extract(input, batch, size, size), repeats, 1);
    await bb.dispose();
    let peer: PeerResult | null = null;
    if (withPeer && c.shape) {
      peer = runPeer<PeerResult>('backbone_torch.py', [c.shape, String(size), String(batch), String(threads), String(repeats), String(stages)]);
    }
    const imagesPerSecond = (batch * 1000) / ms;
    rows.push({
      backbone: c.name,
      size,
      batch,
      threads,
      load_ms: Math.round(loadMs),
      ms_per_batch: ms,
      images_per_s: imagesPerSecond,
      torch_images_per_s: peer ? peer.images_per_second : null,
      speedup_vs_torch: peer ? imagesPerSecond / peer.images_per_second : null,
    });
  }
  printTable(`Backbone throughput (ONNX Runtime, layers ${layers.join('+')}; peer: torch eager, same trunk)`, rows);
  writeJson('backbone', { machine: machineInfo(threads), layers, results: rows });
}
