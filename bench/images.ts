/**
 * `npm run bench -- images [--count N] [--size PX] [--repeats 3]`: images per second for decode + resize (bilinear) + centre crop +
 * ImageNet normalisation of 1024 x 1024 PNGs to the default 256 -> 224 geometry, one image at a time (the naive
 * baseline) against the bounded prefetch of lib/image/pipeline.ts, and, when Debian's python3 has PIL and numpy,
 * the same work in PIL (bench/peers/images.py, one process per round), in --repeats interleaved rounds.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { categoryStyle, drawDefect, renderScene, toBytes, type SceneKind } from '../lib/datasets/synth/render';
import { batches, prepareImage } from '../lib/image/pipeline';
import { Random } from '../lib/prng';
import {
  type Contender, formatSpread, intFlag, machineInfo, measureInterleaved, peerAvailable, printTable, ratioSpread, type Row, runPeer,
  timed, watchLoad, writeJson,
} from './common';

async function makeImages(dir: string, count: number, size: number): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const kinds: SceneKind[] = ['woven', 'leather', 'disc', 'wood'];
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const file = path.join(dir, `${String(i).padStart(3, '0')}.png`);
    files.push(file);
    if (fs.existsSync(file)) continue;
    const rng = new Random(1234).fork('bench', i);
    const style = categoryStyle(kinds[i % kinds.length], rng.fork('style'));
    const scene = renderScene(style, size, size, rng);
    if (i % 2 === 1) drawDefect(scene.canvas, scene.region, 'scratch', rng, style.grey);
    await sharp(toBytes(scene.canvas, false), { raw: { width: size, height: size, channels: 3 } }).png().toFile(file);
  }
  return files;
}

export async function main(args: string[]): Promise<void> {
  const count = intFlag(args, 'count', 32);
  const size = intFlag(args, 'size', 1024);
  const repeats = intFlag(args, 'repeats', 3);
  const dir = path.join(os.tmpdir(), `imiad-bench-images-${size}`);
  const files = await makeImages(dir, count, size);
  const geometry = { imageSize: 256, cropSize: 224 };
  const load = watchLoad('images');
  const contenders: Contender[] = [
    {
      name: 'one at a time (baseline)',
      warmup: 1,
      run: () =>
        timed(async () => {
          for (const f of files) await prepareImage(f, geometry);
        }),
    },
    ...[2, 4, 8].map((prefetch) => ({
      name: `batches (bounded prefetch ${prefetch})`,
      run: () =>
        timed(async () => {
          for await (const b of batches(files, { ...geometry, batchSize: 8, prefetch })) void b;
        }),
    })),
  ];
  if (peerAvailable(['PIL', 'numpy'])) {
    contenders.push({
      name: 'PIL + numpy (peer, one process)',
      run: () => ({ ms: runPeer<{ seconds: number }>('images.py', [dir, String(count), '1']).seconds * 1000, result: null }),
    });
  }
  const measured = await measureInterleaved(contenders, repeats, (name, r) => process.stdout.write(`  ${name} ${r.ms.toFixed(0)} ms\n`));
  const rows: Row[] = measured.map((m) => ({
    pipeline: m.name,
    ms: formatSpread(m.ms),
    images_per_s: (count * 1000) / m.ms.median,
    'x baseline': formatSpread(ratioSpread(measured[0], m)),
  }));
  printTable(`decode + resize + crop + normalise, ${count} PNGs of ${size} x ${size} -> 3 x 224 x 224 (median (min-max) of ${repeats} interleaved rounds)`, rows);
  writeJson('images', {
    machine: machineInfo(Number(process.env.UV_THREADPOOL_SIZE ?? 4)),
    sharpConcurrency: sharp.concurrency(),
    count,
    size,
    geometry,
    repeats,
    load: load.finish(),
    rows,
  });
}
