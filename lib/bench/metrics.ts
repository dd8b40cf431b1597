/**
 * The metric cases: pixel AUROC + AP + AU-PRO of anomaly maps with masks, in memory (imiad's PixelAccumulator, with its
 * default thread count and with one) against scikit-learn + the official AU-PRO written out in numpy
 * (bench/peers/metrics_official.py), timed in interleaved rounds; the deterministic test set, and its MVTec layout on
 * disk for the end-to-end case. Used by `npm run bench -- metrics` (bench/metrics.ts) and `imiad bench metrics`
 * (lib/bench/suite.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';

import { encodeTiff } from '../metrics/maps';
import { PixelAccumulator, type MaskedAnomalyMap } from '../metrics';
import { type Contender, type Measured, measureInterleaved, ratioSpread, runPeer, type Spread, timed, xorshift32 } from './common';
import { withOneThread } from './coreset';

/** The Python modules of the in-memory peer, and of the files peer. */
export const METRICS_PEER_MODULES = ['numpy', 'scipy', 'sklearn'];
export const METRICS_FILES_PEER_MODULES = ['numpy', 'scipy', 'sklearn', 'tifffile', 'PIL'];

export interface MetricsPeerResult {
  pixel_auroc: number;
  pixel_ap: number;
  aupro: number;
  seconds: { roc_auc_score: number; average_precision_score: number; official_aupro: number };
}

export interface FilesPeerResult {
  images: number;
  image_auroc: number;
  image_ap: number;
  pixel_auroc: number;
  pixel_ap: number;
  aupro: number;
  seconds: { read: number; metrics: number; total: number };
}

export interface Scores {
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

export function maxDifference(a: Scores, b: Scores): number {
  const keys: Array<keyof Scores> = ['auroc', 'ap', 'aupro', 'imageAuroc'];
  return Math.max(...keys.filter((k) => a[k] !== undefined && b[k] !== undefined).map((k) => Math.abs((a[k] as number) - (b[k] as number))));
}

export interface MetricsMemoryOptions {
  images: MaskedAnomalyMap[];
  limit: number;
  repeats: number;
  /** Also time imiad with one thread. */
  oneThread: boolean;
  /** A scratch folder for the peer's raw inputs; undefined: no peer. */
  peerDir?: string;
  onRun?: (name: string, ms: number) => void;
}

export interface MetricsMemoryResult {
  imiad: Measured<Scores>;
  imiadOneThread: Measured<Scores> | null;
  peer: Measured<Scores> | null;
  /** peer / imiad per round (> 1: imiad faster). */
  ratio: Spread | null;
  /** The largest difference between imiad's numbers and the peer's. */
  difference: number | null;
}

/** Pixel AUROC + AP + AU-PRO of the maps in memory, imiad against scikit-learn + the official AU-PRO. */
export async function measureMetricsMemory(o: MetricsMemoryOptions): Promise<MetricsMemoryResult> {
  const { images, limit } = o;
  const evaluate = async (): Promise<Scores> => {
    const acc = new PixelAccumulator();
    await acc.addImages(images);
    const r = await acc.compute({ limits: [limit] });
    return { auroc: r.auroc, ap: r.ap, aupro: r.areaUnderPro[0] };
  };
  const contenders: Array<Contender<Scores>> = [{ name: 'imiad', run: () => timed(evaluate), warmup: 1 }];
  if (o.oneThread) contenders.push({ name: 'imiad 1T', run: () => timed(() => withOneThread(evaluate)) });
  if (o.peerDir) {
    const { width, height } = images[0];
    const mapsFile = path.join(o.peerDir, 'maps.f32');
    const masksFile = path.join(o.peerDir, 'masks.u8');
    const mapsFd = fs.openSync(mapsFile, 'w');
    const masksFd = fs.openSync(masksFile, 'w');
    for (const img of images) {
      fs.writeSync(mapsFd, Buffer.from(img.anomalyMap.buffer, img.anomalyMap.byteOffset, img.anomalyMap.byteLength));
      fs.writeSync(masksFd, img.mask ?? new Uint8Array(width * height));
    }
    fs.closeSync(mapsFd);
    fs.closeSync(masksFd);
    contenders.push({
      name: 'scikit-learn + official AU-PRO',
      run: () => {
        const p = runPeer<MetricsPeerResult>('metrics_official.py', [mapsFile, masksFile, String(images.length), String(height), String(width), String(limit)]);
        const sec = p.seconds;
        return { ms: (sec.roc_auc_score + sec.average_precision_score + sec.official_aupro) * 1000, result: { auroc: p.pixel_auroc, ap: p.pixel_ap, aupro: p.aupro } };
      },
    });
  }
  const measured = await measureInterleaved(contenders, o.repeats, (name, r) => o.onRun?.(name, r.ms));
  const ours = measured[0];
  const ours1 = o.oneThread ? measured[1] : null;
  const peer = o.peerDir ? measured[measured.length - 1] : null;
  return {
    imiad: ours,
    imiadOneThread: ours1,
    peer,
    ratio: peer ? ratioSpread(peer, ours) : null,
    difference: peer ? maxDifference(ours.results[0], peer.results[0]) : null,
  };
}
