/**
 * `npm run bench -- metrics [--cases memory,files] [--files] [--images 20] [--size 1024] [--limit 0.3] [--repeats 3]`
 *
 * Two cases, each timed in --repeats interleaved rounds against its peer (bench/common.ts measureInterleaved):
 *  - memory: pixel AUROC + AP + AU-PRO of --images anomaly maps of --size x --size with masks, in memory, in one
 *    evaluation (imiad's PixelAccumulator, with its default thread count and with one), against scikit-learn's
 *    roc_auc_score + average_precision_score and a numpy implementation of the official AU-PRO on the same data
 *    (bench/peers/metrics_official.py, reading raw arrays: its reading is not timed).
 *  - files (--files: this case alone): `imiad evaluate` end to end (runEvaluate, lib/cli/evaluate.ts) on an MVTec
 *    layout written to a temporary folder, float32 TIFF maps and PNG masks, against the same Python reading the same
 *    files as the official scripts do (tifffile, PIL; bench/peers/metrics_files.py), reading timed on both sides.
 * The peers need Debian's python3 with numpy, scipy and scikit-learn (and tifffile and PIL for files). The numbers
 * must agree to 1e-6, or the benchmark fails. Target of the files case: imiad >= 20x the peer.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

import { runEvaluate } from '../lib/cli/evaluate';
import { encodeTiff } from '../lib/metrics/maps';
import { PixelAccumulator, type MaskedAnomalyMap } from '../lib/metrics';
import {
  type Contender, flag, formatSpread, intFlag, machineInfo, measureInterleaved, peerAvailable, printTable, ratioSpread,
  type Row, runPeer, timed, watchLoad, writeJson, xorshift32,
} from './common';
import { cpuAddon } from '../bindings/load';

interface PeerResult {
  pixel_auroc: number;
  pixel_ap: number;
  aupro: number;
  seconds: { roc_auc_score: number; average_precision_score: number; official_aupro: number };
}

interface FilesPeerResult {
  images: number;
  image_auroc: number;
  image_ap: number;
  pixel_auroc: number;
  pixel_ap: number;
  aupro: number;
  seconds: { read: number; metrics: number; total: number };
}

interface Scores {
  auroc: number;
  ap: number;
  aupro: number;
  imageAuroc?: number;
}

/** Deterministic test set: a third of the images normal, the rest with 1-4 elliptic defects whose scores are raised. */
export function makeData(count: number, size: number): MaskedAnomalyMap[] {
  const next = xorshift32(0x9e3779b9);
  const images: MaskedAnomalyMap[] = [];
  for (let i = 0; i < count; i++) {
    const mask = new Uint8Array(size * size);
    if (i % 3 !== 0) {
      const defects = 1 + Math.floor(next() * 4);
      for (let d = 0; d < defects; d++) {
        const cx = next() * size;
        const cy = next() * size;
        const rx = 4 + next() * size * 0.08;
        const ry = 4 + next() * size * 0.08;
        for (let y = Math.max(0, Math.floor(cy - ry)); y < Math.min(size, Math.ceil(cy + ry)); y++) {
          for (let x = Math.max(0, Math.floor(cx - rx)); x < Math.min(size, Math.ceil(cx + rx)); x++) {
            if (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1) mask[y * size + x] = 255;
          }
        }
      }
    }
    const map = new Float32Array(size * size);
    for (let p = 0; p < map.length; p++) map[p] = next() + next() + (mask[p] ? 0.9 * next() + 0.3 : 0);
    images.push({ anomalyMap: map, mask, width: size, height: size });
  }
  return images;
}

/** Writes the test set as an MVTec category `bench` under root (PNG images and masks) and its maps under maps. */
export async function writeLayout(images: MaskedAnomalyMap[], root: string, maps: string): Promise<void> {
  const size = { width: images[0].width, height: images[0].height };
  const cat = path.join(root, 'bench');
  for (const d of ['train/good', 'test/good', 'test/defect', 'ground_truth/defect']) fs.mkdirSync(path.join(cat, d), { recursive: true });
  // Every test image is the same grey picture: only its size is read.
  const picture = path.join(cat, 'train', 'good', '000.png');
  await sharp({ create: { ...size, channels: 3, background: { r: 128, g: 128, b: 128 } } }).png().toFile(picture);
  for (let i = 0; i < images.length; i++) {
    const img = images[i];
    const stem = String(i).padStart(3, '0');
    const anomalous = img.mask?.some((v) => v !== 0) ?? false;
    const defect = anomalous ? 'defect' : 'good';
    fs.copyFileSync(picture, path.join(cat, 'test', defect, `${stem}.png`));
    if (anomalous && img.mask) {
      await sharp(Buffer.from(img.mask.buffer, img.mask.byteOffset, img.mask.byteLength), { raw: { ...size, channels: 1 } })
        .toColourspace('b-w')
        .png()
        .toFile(path.join(cat, 'ground_truth', defect, `${stem}_mask.png`));
    }
    const dir = path.join(maps, 'bench', 'test', defect);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${stem}.tiff`), encodeTiff({ data: img.anomalyMap, ...size }));
  }
}

function withOneThread<T>(fn: () => Promise<T>): () => Promise<T> {
  return async () => {
    const saved = process.env.IMIAD_THREADS;
    process.env.IMIAD_THREADS = '1';
    try {
      return await fn();
    } finally {
      if (saved === undefined) delete process.env.IMIAD_THREADS;
      else process.env.IMIAD_THREADS = saved;
    }
  };
}

function maxDifference(a: Scores, b: Scores): number {
  const keys: Array<keyof Scores> = ['auroc', 'ap', 'aupro', 'imageAuroc'];
  return Math.max(...keys.filter((k) => a[k] !== undefined && b[k] !== undefined).map((k) => Math.abs((a[k] as number) - (b[k] as number))));
}

export async function main(args: string[]): Promise<void> {
  const count = intFlag(args, 'images', 20);
  const size = intFlag(args, 'size', 1024);
  const limit = Number(flag(args, 'limit', '0.3'));
  const repeats = intFlag(args, 'repeats', 3);
  const cases = args.includes('--files') ? ['files'] : (flag(args, 'cases', 'memory,files') ?? '').split(',');
  const threads = cpuAddon<{ threadCount: () => number }>().threadCount();
  const load = watchLoad('metrics');
  process.stdout.write(`metrics: ${count} maps of ${size} x ${size} (${((count * size * size) / 1e6).toFixed(1)} M pixels), AU-PRO limit ${limit}, ${threads} threads\n`);
  const images = makeData(count, size);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-metrics-'));
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  let failed = false;
  const progressLine = (name: string, r: { ms: number }): void => void process.stdout.write(`  ${name} ${r.ms.toFixed(0)} ms\n`);
  try {
    if (cases.includes('memory')) {
      process.stdout.write('memory: maps and masks in memory\n');
      const evaluate = async (): Promise<Scores> => {
        const acc = new PixelAccumulator();
        await acc.addImages(images);
        const r = await acc.compute({ limits: [limit] });
        return { auroc: r.auroc, ap: r.ap, aupro: r.areaUnderPro[0] };
      };
      const contenders: Array<Contender<Scores>> = [
        { name: 'imiad', run: () => timed(evaluate), warmup: 1 },
        { name: 'imiad 1T', run: () => timed(withOneThread(evaluate)) },
      ];
      const withPeer = peerAvailable(['numpy', 'scipy', 'sklearn']);
      if (withPeer) {
        const mapsFile = path.join(dir, 'maps.f32');
        const masksFile = path.join(dir, 'masks.u8');
        const mapsFd = fs.openSync(mapsFile, 'w');
        const masksFd = fs.openSync(masksFile, 'w');
        for (const img of images) {
          fs.writeSync(mapsFd, Buffer.from(img.anomalyMap.buffer, img.anomalyMap.byteOffset, img.anomalyMap.byteLength));
          fs.writeSync(masksFd, img.mask ?? new Uint8Array(size * size));
        }
        fs.closeSync(mapsFd);
        fs.closeSync(masksFd);
        contenders.push({
          name: 'scikit-learn + official AU-PRO',
          run: () => {
            const p = runPeer<PeerResult>('metrics_official.py', [mapsFile, masksFile, String(count), String(size), String(size), String(limit)]);
            const sec = p.seconds;
            return { ms: (sec.roc_auc_score + sec.average_precision_score + sec.official_aupro) * 1000, result: { auroc: p.pixel_auroc, ap: p.pixel_ap, aupro: p.aupro } };
          },
        });
      } else {
        process.stdout.write('peer skipped: /usr/bin/python3 lacks numpy, scipy or scikit-learn\n');
      }
      const [ours, ours1, peer] = await measureInterleaved(contenders, repeats, progressLine);
      const difference = peer ? maxDifference(ours.results[0], peer.results[0]) : null;
      const ratio = peer ? ratioSpread(peer, ours) : null;
      rows.push({
        case: `memory, ${count} maps`,
        'imiad ms': formatSpread(ours.ms),
        'imiad 1T ms': formatSpread(ours1.ms),
        'peer ms': peer ? formatSpread(peer.ms) : null,
        'x peer': ratio ? formatSpread(ratio) : null,
        'x peer 1T': peer ? formatSpread(ratioSpread(peer, ours1)) : null,
        '|difference|': difference,
      });
      results.memory = { imiad: ours.ms, imiadOneThread: ours1.ms, peer: peer?.ms ?? null, ratio, scores: ours.results[0], peerScores: peer?.results[0] ?? null, difference };
      failed ||= difference !== null && difference > 1e-6;
    }
    if (cases.includes('files')) {
      process.stdout.write('files: writing TIFF maps and PNG masks ...\n');
      const root = path.join(dir, 'dataset');
      const maps = path.join(dir, 'maps');
      await writeLayout(images, root, maps);
      const evaluate = async (): Promise<Scores> => {
        const r = (await runEvaluate({ dataset: 'mvtec', root, maps, proLimit: String(limit) })).bench as { pixel_auroc: number; pixel_ap: number; aupro: Record<string, number>; image_auroc: number };
        return { auroc: r.pixel_auroc, ap: r.pixel_ap, aupro: Object.values(r.aupro)[0], imageAuroc: r.image_auroc };
      };
      const contenders: Array<Contender<Scores>> = [{ name: 'imiad evaluate', run: () => timed(evaluate), warmup: 1 }];
      if (peerAvailable(['numpy', 'scipy', 'sklearn', 'tifffile', 'PIL'])) {
        contenders.push({
          name: 'tifffile + PIL + scikit-learn + official AU-PRO',
          run: () => {
            const p = runPeer<FilesPeerResult>('metrics_files.py', [root, maps, 'bench', String(limit)]);
            return { ms: p.seconds.total * 1000, result: { auroc: p.pixel_auroc, ap: p.pixel_ap, aupro: p.aupro, imageAuroc: p.image_auroc } };
          },
        });
      } else {
        process.stdout.write('peer skipped: /usr/bin/python3 lacks numpy, scipy, scikit-learn, tifffile or PIL\n');
      }
      const [ours, peer] = await measureInterleaved(contenders, repeats, progressLine);
      const difference = peer ? maxDifference(ours.results[0], peer.results[0]) : null;
      const ratio = peer ? ratioSpread(peer, ours) : null;
      rows.push({
        case: `files, ${count} maps`,
        'imiad ms': formatSpread(ours.ms),
        'imiad 1T ms': null,
        'peer ms': peer ? formatSpread(peer.ms) : null,
        'x peer': ratio ? formatSpread(ratio) : null,
        'x peer 1T': null,
        '|difference|': difference,
      });
      results.files = { imiad: ours.ms, peer: peer?.ms ?? null, ratio, targetMet: ratio ? ratio.median >= 20 : null, scores: ours.results[0], peerScores: peer?.results[0] ?? null, difference };
      failed ||= difference !== null && difference > 1e-6;
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  printTable(`Pixel AUROC + AP + AU-PRO (files: + image AUROC/AP, reading the files): median (min-max) of ${repeats} interleaved rounds, ms`, rows);
  if (failed) process.stdout.write('\nthe peers\' numbers differ from imiad\'s by more than 1e-6\n');
  writeJson('metrics', { machine: machineInfo(threads), images: count, size, pixels: count * size * size, limit, repeats, load: load.finish(), results });
  if (failed) process.exitCode = 1;
}
