/**
 * `npm run bench -- images [--count N] [--size PX]`: images per second for decode + resize (bilinear) + centre crop +
 * ImageNet normalisation of 1024 x 1024 PNGs to the default 256 -> 224 geometry, one image at a time (the naive
 * baseline) against the bounded prefetch of lib/image/pipeline.ts, and, when Debian's python3 has PIL and numpy,
 * the same work in PIL (bench/peers/images.py) in the same run.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { categoryStyle, drawDefect, renderScene, toBytes, type SceneKind } from '../lib/datasets/synth/render';
import { batches, prepareImage } from '../lib/image/pipeline';
import { Random } from '../lib/prng';
import { flag, intFlag, machineInfo, peerAvailable, printTable, runPeer, writeJson, type Row } from './common';

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

async function timeIt(fn: () => Promise<void>, repeats: number): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

export async function main(args: string[]): Promise<void> {
  const count = intFlag(args, 'count', 32);
  const size = intFlag(args, 'size', 1024);
  const repeats = intFlag(args, 'repeats', 3);
  const dir = path.join(os.tmpdir(), `imiad-bench-images-${size}`);
  const files = await makeImages(dir, count, size);
  const geometry = { imageSize: 256, cropSize: 224 };
  const rows: Row[] = [];

  const sequential = await timeIt(async () => {
    for (const f of files) await prepareImage(f, geometry);
  }, repeats);
  rows.push({ pipeline: 'one at a time (baseline)', prefetch: 1, images_per_s: count / sequential, ratio: 1 });
  for (const prefetch of [2, 4, 8]) {
    const t = await timeIt(async () => {
      for await (const b of batches(files, { ...geometry, batchSize: 8, prefetch })) void b;
    }, repeats);
    rows.push({ pipeline: 'batches (bounded prefetch)', prefetch, images_per_s: count / t, ratio: sequential / t });
  }
  if (peerAvailable(['PIL', 'numpy'])) {
    const peer = runPeer<{ seconds: number }>('images.py', [dir, String(count), String(repeats)]);
    rows.push({ pipeline: 'PIL + numpy (peer, one process)', prefetch: 1, images_per_s: count / peer.seconds, ratio: sequential / peer.seconds });
  }
  printTable(`decode + resize + crop + normalise, ${count} PNGs of ${size} x ${size} -> 3 x 224 x 224 (median of ${repeats})`, rows);
  writeJson('images', {
    machine: machineInfo(Number(process.env.UV_THREADPOOL_SIZE ?? 4)),
    sharpConcurrency: sharp.concurrency(),
    count,
    size,
    geometry,
    rows,
  });
}
