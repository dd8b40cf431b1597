/**
 * Small heatmap PNGs per experiment, for the report's Fig. 3 (image, ground truth, anomaly map overlay per method).
 * Layout: <store folder>/heatmaps/<experiment key>/<index>-{image,mask,overlay}.png, HEATMAP_SIZE pixels square;
 * the row's `heatmaps` lists them relative to the store's folder. The samples are chosen by selectHeatmapSamples()
 * from the test split alone, so every method run on the same split shows the same images.
 */
import * as fs from 'fs';
import * as path from 'path';

import sharp from 'sharp';

import type { Sample } from '../datasets/types';
import { decodeRaw, readMask } from '../image/mask';
import type { AnomalyMap } from '../methods/types';
import type { HeatmapRecord } from './types';

export const HEATMAP_SIZE = 128;
export const HEATMAP_COUNT = 3;

/**
 * The first anomalous test image (in the split's order) of each defect type, defect types in code-point order, up
 * to `count`; normal images fill up when there are fewer defect types.
 */
export function selectHeatmapSamples(test: Sample[], count = HEATMAP_COUNT): Sample[] {
  const firstOfType = new Map<string, Sample>();
  for (const s of test) if (s.label === 'anomaly' && !firstOfType.has(s.defectType)) firstOfType.set(s.defectType, s);
  const types = [...firstOfType.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const picked = types.slice(0, count).map((t) => firstOfType.get(t)!);
  for (const s of test) {
    if (picked.length >= count) break;
    if (s.label === 'normal') picked.push(s);
  }
  return picked;
}

/** The jet colour map (as in matplotlib's 'jet'), t in [0, 1]. */
export function jet(t: number): [number, number, number] {
  const c = (x: number): number => Math.round(255 * Math.max(0, Math.min(1, x)));
  return [c(1.5 - Math.abs(4 * t - 3)), c(1.5 - Math.abs(4 * t - 2)), c(1.5 - Math.abs(4 * t - 1))];
}

async function rgbThumbnail(file: string, size: number): Promise<Buffer> {
  const raw = await decodeRaw(file);
  return sharp(Buffer.from(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength), { raw: { width: raw.width, height: raw.height, channels: raw.channels as 1 | 2 | 3 | 4 } })
    .removeAlpha()
    .toColourspace('srgb')
    .resize(size, size, { fit: 'fill' })
    .raw()
    .toBuffer();
}

async function maskThumbnail(files: string[], width: number, height: number, size: number): Promise<Buffer> {
  const union = new Uint8Array(width * height);
  for (const f of files) {
    const m = await readMask(f);
    if (m.width !== width || m.height !== height) continue;
    for (let i = 0; i < union.length; i++) if (m.data[i]) union[i] = 255;
  }
  // Nearest neighbour: a mask is never interpolated. sharp widens one-channel raw input to sRGB: take one channel.
  return sharp(Buffer.from(union), { raw: { width, height, channels: 1 } }).resize(size, size, { fit: 'fill', kernel: 'nearest' }).extractChannel(0).raw().toBuffer();
}

/** Half the RGB image, half the jet colour of the grey map (0-255), pixel by pixel. */
export function blendJet(rgb: Buffer, grey: Uint8Array): Buffer {
  const overlay = Buffer.alloc(grey.length * 3);
  for (let p = 0; p < grey.length; p++) {
    const [r, g, b] = jet(grey[p] / 255);
    overlay[3 * p] = Math.round(0.5 * rgb[3 * p] + 0.5 * r);
    overlay[3 * p + 1] = Math.round(0.5 * rgb[3 * p + 1] + 0.5 * g);
    overlay[3 * p + 2] = Math.round(0.5 * rgb[3 * p + 2] + 0.5 * b);
  }
  return overlay;
}

/** The map scaled linearly from [lo, hi] to 0-255, clamped. */
export function scaleMap(map: AnomalyMap, lo: number, hi: number): Uint8Array {
  const span = hi > lo ? hi - lo : 1;
  const scaled = new Uint8Array(map.width * map.height);
  for (let p = 0; p < scaled.length; p++) scaled[p] = Math.round(255 * Math.max(0, Math.min(1, (map.data[p] - lo) / span)));
  return scaled;
}

/**
 * An overlay PNG at the image's own size (the map is at the image's original size): the jet colours of the map over
 * [lo, hi] blended half and half with the image.
 */
export async function overlayPng(imageFile: string, map: AnomalyMap, lo: number, hi: number): Promise<Buffer> {
  const raw = await decodeRaw(imageFile);
  const rgb = await sharp(Buffer.from(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength), { raw: { width: raw.width, height: raw.height, channels: raw.channels as 1 | 2 | 3 | 4 } })
    .removeAlpha()
    .toColourspace('srgb')
    .resize(map.width, map.height, { fit: 'fill' })
    .raw()
    .toBuffer();
  return sharp(blendJet(rgb, scaleMap(map, lo, hi)), { raw: { width: map.width, height: map.height, channels: 3 } }).png().toBuffer();
}

/**
 * Writes image, mask and overlay PNGs for each (sample, map) pair. The map is scaled to [0, 1] over `range` (default:
 * the min and max of the given maps, so the methods' colours are comparable within one figure row only by rank).
 */
export async function saveHeatmaps(
  dir: string,
  storeDir: string,
  items: { sample: Sample; map: AnomalyMap }[],
  opts: { size?: number; range?: [number, number] } = {},
): Promise<HeatmapRecord[]> {
  const size = opts.size ?? HEATMAP_SIZE;
  fs.mkdirSync(dir, { recursive: true });
  let [lo, hi] = opts.range ?? [Infinity, -Infinity];
  if (!opts.range) {
    for (const { map } of items) for (const v of map.data) if (Number.isFinite(v)) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
  }
  const records: HeatmapRecord[] = [];
  for (let i = 0; i < items.length; i++) {
    const { sample, map } = items[i];
    const image = await rgbThumbnail(sample.path, size);
    const scaled = scaleMap(map, lo, hi);
    const mapSmall = await sharp(Buffer.from(scaled), { raw: { width: map.width, height: map.height, channels: 1 } }).resize(size, size, { fit: 'fill' }).extractChannel(0).raw().toBuffer();
    const overlay = blendJet(image, mapSmall);
    const base = path.join(dir, String(i));
    await sharp(image, { raw: { width: size, height: size, channels: 3 } }).png().toFile(`${base}-image.png`);
    await sharp(overlay, { raw: { width: size, height: size, channels: 3 } }).png().toFile(`${base}-overlay.png`);
    let mask: string | null = null;
    if (sample.maskPaths.length > 0) {
      const m = await maskThumbnail(sample.maskPaths, map.width, map.height, size);
      await sharp(m, { raw: { width: size, height: size, channels: 1 } }).png().toFile(`${base}-mask.png`);
      mask = path.relative(storeDir, `${base}-mask.png`);
    }
    records.push({
      sample: sample.path,
      defectType: sample.defectType,
      image: path.relative(storeDir, `${base}-image.png`),
      mask,
      overlay: path.relative(storeDir, `${base}-overlay.png`),
    });
  }
  return records;
}
