/**
 * The image pipeline in front of the backbone: decode, resize (bilinear), centre crop, normalisation (ImageNet, or [0, 1] for DRAEM) into a
 * Float32Array CHW batch; masks by the same geometry with nearest neighbour; and the inverse mapping of an anomaly
 * map back to the original image for evaluation at original resolution.
 *
 * Geometry follows torchvision's Resize(int) + CenterCrop, the preprocessing of PatchCore's official code:
 * - resize 'shorter' (default): the shorter side becomes imageSize, the longer one int(imageSize * long / short);
 *   resize 'exact': both sides become imageSize.
 * - centre crop: left = round((resizedWidth - cropSize) / 2), top likewise, round half to even as Python's round.
 * Pixel centres are aligned between the spaces: x_resized + 0.5 = (x_original + 0.5) * resizedWidth / width.
 * Decoding runs on sharp's (libuv) thread pool; `batches` keeps a bounded number of decodes in flight.
 */
import sharp from 'sharp';

import { abortError } from '../../bindings/call';
import { invalidRange, invalidType, imiadError } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { readMask, readMaskUnion, type BinaryMask, type RawImage } from './mask';
import { openImage, rethrowDecode, toRgb } from './decode';

// Module-level bindings: hot loops then avoid global lookups, which are slow inside vm contexts (jest).
const Math = globalThis.Math;

export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

/**
 * How a detector's input is normalised (its registry entry's `normalisation`): 'imagenet' subtracts the ImageNet
 * mean and divides by its standard deviation (every detector on an ImageNet backbone); 'unit' keeps the pixels in
 * [0, 1] (DRAEM, whose official code never normalises).
 */
export type InputNormalisation = 'imagenet' | 'unit';

/** The mean and standard deviation that give a normalisation. */
export function normalisationStats(n: InputNormalisation): { mean: readonly [number, number, number]; std: readonly [number, number, number] } {
  if (n === 'imagenet') return { mean: IMAGENET_MEAN, std: IMAGENET_STD };
  if (n === 'unit') return { mean: [0, 0, 0], std: [1, 1, 1] };
  throw invalidType("one of 'imagenet', 'unit'", 'normalisation', n);
}

export interface PreprocessOptions {
  /** Size after resizing (the shorter side, or both sides with resize 'exact'). Default 256. */
  imageSize?: number;
  /** Side of the square centre crop. Default 224; equal to imageSize for no crop. */
  cropSize?: number;
  resize?: 'shorter' | 'exact';
  /** 'imagenet' (default) or 'unit' ([0, 1] pixels); mean and std, when given, override it. */
  normalisation?: InputNormalisation;
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
}

/** Where an image's crop lies: original size, resized size, crop offset and side. */
export interface Geometry {
  width: number;
  height: number;
  resizedWidth: number;
  resizedHeight: number;
  left: number;
  top: number;
  cropSize: number;
}

interface ResolvedOptions {
  imageSize: number;
  cropSize: number;
  resize: 'shorter' | 'exact';
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

function resolveOptions(options: PreprocessOptions = {}): ResolvedOptions {
  if (!is.object(options as unknown)) throw invalidType('object', 'options', options);
  const opts: PreprocessOptions = options;
  const imageSize = opts.imageSize ?? 256;
  const cropSize = opts.cropSize ?? Math.min(224, imageSize);
  if (!is.integer(imageSize) || imageSize < 1 || imageSize > 16384) throw invalidRange('integer between 1 and 16384', 'imageSize', imageSize);
  if (!is.integer(cropSize) || cropSize < 1 || cropSize > imageSize) throw invalidRange(`integer between 1 and imageSize (${imageSize})`, 'cropSize', cropSize);
  const resize = opts.resize ?? 'shorter';
  if (resize !== 'shorter' && resize !== 'exact') throw invalidType("one of 'shorter', 'exact'", 'resize', resize);
  const stats = normalisationStats(opts.normalisation ?? 'imagenet');
  const mean: unknown = opts.mean ?? stats.mean;
  const std: unknown = opts.std ?? stats.std;
  if (!Array.isArray(mean) || mean.length !== 3 || !mean.every(is.number)) throw invalidType('array of 3 finite numbers', 'mean', mean);
  if (!Array.isArray(std) || std.length !== 3 || !std.every((v) => is.number(v) && v > 0)) throw invalidType('array of 3 positive numbers', 'std', std);
  return { imageSize, cropSize, resize, mean: mean as [number, number, number], std: std as [number, number, number] };
}

/** Python's round(): halves to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function geometryFor(width: number, height: number, opts: PreprocessOptions = {}): Geometry {
  const o = resolveOptions(opts);
  let resizedWidth = o.imageSize;
  let resizedHeight = o.imageSize;
  if (o.resize === 'shorter' && width !== height) {
    if (width < height) resizedHeight = Math.floor((o.imageSize * height) / width);
    else resizedWidth = Math.floor((o.imageSize * width) / height);
  }
  return {
    width,
    height,
    resizedWidth,
    resizedHeight,
    left: roundHalfEven((resizedWidth - o.cropSize) / 2),
    top: roundHalfEven((resizedHeight - o.cropSize) / 2),
    cropSize: o.cropSize,
  };
}

/** Writes one image (resized and cropped 8-bit RGB, interleaved) normalised into `out` at sample `index`, CHW. */
function normaliseInto(out: Float32Array, index: number, rgb: Uint8Array, crop: number, o: ResolvedOptions): void {
  const plane = crop * crop;
  const base = index * 3 * plane;
  for (let c = 0; c < 3; c++) {
    const scale = 1 / (255 * o.std[c]);
    const shift = o.mean[c] / o.std[c];
    const dst = base + c * plane;
    for (let i = 0, p = c; i < plane; i++, p += 3) out[dst + i] = rgb[p] * scale - shift;
  }
}

async function resizeCrop(image: sharp.Sharp, g: Geometry): Promise<Uint8Array> {
  const { data, info } = await image
    .resize(g.resizedWidth, g.resizedHeight, { fit: 'fill', kernel: 'linear' })
    .extract({ left: g.left, top: g.top, width: g.cropSize, height: g.cropSize })
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  const px = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return info.channels === 3 ? px : toRgb({ data: px, width: info.width, height: info.height, channels: info.channels }).data;
}

/** One decoded image: its normalised CHW tensor [3, crop, crop] and its geometry. */
export interface PreparedImage {
  tensor: Float32Array;
  geometry: Geometry;
}

/** Decodes, resizes, crops and normalises one file. */
export async function prepareImage(file: string, opts: PreprocessOptions = {}): Promise<PreparedImage> {
  const o = resolveOptions(opts);
  const { image, width, height } = await openImage(file);
  const geometry = geometryFor(width, height, o);
  let rgb: Uint8Array;
  try {
    rgb = await resizeCrop(image, geometry);
  } catch (err) {
    rethrowDecode(file, err);
  }
  const tensor = new Float32Array(3 * o.cropSize * o.cropSize);
  normaliseInto(tensor, 0, rgb, o.cropSize, o);
  return { tensor, geometry };
}

/**
 * Decodes, resizes and crops one file to 8-bit RGB (interleaved, cropSize x cropSize) without normalising: for
 * detectors that augment the pixels before normalisation (DevNet, DRA: lib/methods/deviation.ts).
 */
export async function preparePixels(file: string, opts: PreprocessOptions = {}): Promise<{ rgb: Uint8Array; geometry: Geometry }> {
  const o = resolveOptions(opts);
  const { image, width, height } = await openImage(file);
  const geometry = geometryFor(width, height, o);
  try {
    return { rgb: await resizeCrop(image, geometry), geometry };
  } catch (err) {
    rethrowDecode(file, err);
  }
}

/** Normalises 8-bit RGB pixels (interleaved, side x side) into sample `index` of a CHW batch, as the pipeline does. */
export function normalisePixels(out: Float32Array, index: number, rgb: Uint8Array, side: number, opts: Pick<PreprocessOptions, 'mean' | 'std'> = {}): void {
  const o = resolveOptions({ imageSize: side, cropSize: side, mean: opts.mean, std: opts.std });
  if (rgb.length !== side * side * 3) throw invalidRange(`${side * side * 3} (side ${side} squared x 3)`, 'length of rgb', rgb.length);
  if (out.length < (index + 1) * 3 * side * side) throw invalidRange(`at least ${(index + 1) * 3 * side * side}`, 'length of out', out.length);
  normaliseInto(out, index, rgb, side, o);
}

/** The same for pixels already in memory (augmented images). */
export async function prepareRaw(raw: RawImage, opts: PreprocessOptions = {}): Promise<PreparedImage> {
  const o = resolveOptions(opts);
  const rgb3 = toRgb(raw);
  const geometry = geometryFor(raw.width, raw.height, o);
  const image = sharp(rgb3.data, { raw: { width: raw.width, height: raw.height, channels: 3 } });
  const rgb = await resizeCrop(image, geometry);
  const tensor = new Float32Array(3 * o.cropSize * o.cropSize);
  normaliseInto(tensor, 0, rgb, o.cropSize, o);
  return { tensor, geometry };
}

export interface ImageBatch {
  /** [n, 3, cropSize, cropSize], row-major, normalised as the options say (ImageNet by default). */
  data: Float32Array;
  n: number;
  cropSize: number;
  geometries: Geometry[];
  /** Source of each image (file path, or '' for in-memory images). */
  paths: string[];
  /** Index of the batch's first image in the whole input list. */
  start: number;
}

function assemble(items: PreparedImage[], paths: string[], cropSize: number, start: number): ImageBatch {
  const plane = 3 * cropSize * cropSize;
  const data = new Float32Array(items.length * plane);
  items.forEach((it, i) => data.set(it.tensor, i * plane));
  return { data, n: items.length, cropSize, geometries: items.map((it) => it.geometry), paths, start };
}

export interface BatchOptions extends PreprocessOptions {
  /** Images per batch (default 8). */
  batchSize?: number;
  /** Decodes kept in flight ahead of the consumer (default 4). */
  prefetch?: number;
  signal?: AbortSignal;
}

/**
 * Batches of prepared images in input order. A bounded window of `prefetch` decodes runs concurrently ahead of
 * the consumer (sharp decodes on the libuv pool), so decoding overlaps the backbone without holding the whole
 * dataset in memory. A failing file rejects when its batch is reached, naming the file.
 */
export async function* batches(paths: string[], opts: BatchOptions = {}): AsyncGenerator<ImageBatch> {
  if (!Array.isArray(paths) || !paths.every(is.string)) throw invalidType('array of file paths', 'paths', paths);
  const o = resolveOptions(opts);
  const batchSize = opts.batchSize ?? 8;
  const prefetch = opts.prefetch ?? 4;
  if (!is.integer(batchSize) || batchSize < 1) throw invalidRange('positive integer', 'batchSize', batchSize);
  if (!is.integer(prefetch) || prefetch < 1) throw invalidRange('positive integer', 'prefetch', prefetch);
  const pending: Array<Promise<PreparedImage> | undefined> = new Array(paths.length);
  let started = 0;
  const launch = (upTo: number): void => {
    while (started < Math.min(upTo, paths.length)) {
      const p = prepareImage(paths[started], o);
      // The consumer may stop early; a rejection it never awaits must not become an unhandled one.
      p.catch(() => undefined);
      pending[started++] = p;
    }
  };
  for (let start = 0; start < paths.length; start += batchSize) {
    const end = Math.min(start + batchSize, paths.length);
    const items: PreparedImage[] = [];
    for (let i = start; i < end; i++) {
      if (opts.signal?.aborted) throw abortError();
      launch(i + prefetch);
      items.push(await (pending[i] as Promise<PreparedImage>));
      pending[i] = undefined;
    }
    launch(end + prefetch);
    yield assemble(items, paths.slice(start, end), o.cropSize, start);
  }
}

/** Decodes all files into one batch (with `prefetch` decodes in flight). */
export async function loadBatch(paths: string[], opts: BatchOptions = {}): Promise<ImageBatch> {
  const o = resolveOptions(opts);
  const parts: ImageBatch[] = [];
  for await (const b of batches(paths, { ...opts, batchSize: Math.max(1, paths.length) })) parts.push(b);
  if (parts.length === 0) return { data: new Float32Array(0), n: 0, cropSize: o.cropSize, geometries: [], paths: [], start: 0 };
  return parts[0];
}

/** Prepares in-memory images (e.g. augmented variants) into one batch. */
export async function rawBatch(images: RawImage[], opts: PreprocessOptions = {}): Promise<ImageBatch> {
  const o = resolveOptions(opts);
  const items = await Promise.all(images.map((img) => prepareRaw(img, o)));
  return assemble(items, images.map(() => ''), o.cropSize, 0);
}

/**
 * A mask (at any resolution covering the original image) cut to the crop by the image's geometry, nearest
 * neighbour: crop pixel (x, y) takes the mask pixel whose area contains the centre of resized pixel
 * (x + left, y + top). Never interpolated, so it stays binary.
 */
export function maskToCrop(mask: BinaryMask, g: Geometry): Uint8Array {
  const c = g.cropSize;
  const out = new Uint8Array(c * c);
  const xs = new Int32Array(c);
  for (let x = 0; x < c; x++) xs[x] = Math.min(mask.width - 1, Math.floor(((x + g.left + 0.5) * mask.width) / g.resizedWidth));
  for (let y = 0; y < c; y++) {
    const sy = Math.min(mask.height - 1, Math.floor(((y + g.top + 0.5) * mask.height) / g.resizedHeight));
    const row = sy * mask.width;
    for (let x = 0; x < c; x++) out[y * c + x] = mask.data[row + xs[x]];
  }
  return out;
}

/** Masks of a batch, [n, crop, crop]; a sample's mask is the union of its files, empty when it has none. */
export async function loadMaskBatch(maskPaths: string[][], geometries: Geometry[]): Promise<Uint8Array> {
  if (maskPaths.length !== geometries.length) {
    throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected one geometry per mask list (${maskPaths.length}) but received ${geometries.length}`);
  }
  const c = geometries[0]?.cropSize ?? 0;
  const out = new Uint8Array(maskPaths.length * c * c);
  await Promise.all(
    maskPaths.map(async (files, i) => {
      if (files.length === 0) return;
      const mask = files.length === 1 ? await readMask(files[0]) : await readMaskUnion(files);
      out.set(maskToCrop(mask, geometries[i]), i * c * c);
    }),
  );
  return out;
}

export interface InverseOptions {
  /** Width and height of the map (default: a square crop-sized map, cropSize x cropSize). */
  mapWidth?: number;
  mapHeight?: number;
  /**
   * Value of original pixels outside the crop, which the detector never saw: 'min' (default) gives them the map's
   * minimum (no evidence of an anomaly); 'edge' extends the nearest crop border.
   */
  outside?: 'min' | 'edge';
}

/**
 * Maps an anomaly map over the crop back to the original image size: bilinear resampling of the crop region into
 * original coordinates (pixel centres aligned as in the forward mapping); pixels outside the crop per `outside`.
 */
export function mapToOriginal(map: Float32Array, g: Geometry, opts: InverseOptions = {}): Float32Array {
  const mw = opts.mapWidth ?? g.cropSize;
  const mh = opts.mapHeight ?? g.cropSize;
  if (!(map instanceof Float32Array)) throw invalidType('Float32Array', 'map', map);
  if (map.length !== mw * mh) {
    throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected length of map to be ${mw * mh} (${mw} x ${mh}) but received ${map.length} of type number`);
  }
  const outside = opts.outside ?? 'min';
  let minValue = Infinity;
  for (let i = 0; i < map.length; i++) if (map[i] < minValue) minValue = map[i];
  const out = new Float32Array(g.width * g.height);
  const c = g.cropSize;
  // Source coordinate along one axis in map pixels, or NaN outside the crop.
  const axis = (n: number, resized: number, offset: number, m: number): Float64Array => {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      // Continuous position in the crop, 0..c between its outer edges.
      const u = ((i + 0.5) * resized) / n - offset;
      a[i] = (u < 0 || u > c) && outside === 'min' ? NaN : (u * m) / c - 0.5;
    }
    return a;
  };
  const ax = axis(g.width, g.resizedWidth, g.left, mw);
  const ay = axis(g.height, g.resizedHeight, g.top, mh);
  for (let y = 0; y < g.height; y++) {
    const sy = ay[y];
    const rowOut = y * g.width;
    if (Number.isNaN(sy)) {
      out.fill(minValue, rowOut, rowOut + g.width);
      continue;
    }
    const y0 = Math.max(0, Math.min(mh - 1, Math.floor(sy)));
    const y1 = Math.min(mh - 1, y0 + 1);
    const fy = Math.max(0, Math.min(1, sy - y0));
    for (let x = 0; x < g.width; x++) {
      const sx = ax[x];
      if (Number.isNaN(sx)) {
        out[rowOut + x] = minValue;
        continue;
      }
      const x0 = Math.max(0, Math.min(mw - 1, Math.floor(sx)));
      const x1 = Math.min(mw - 1, x0 + 1);
      const fx = Math.max(0, Math.min(1, sx - x0));
      const top = map[y0 * mw + x0] * (1 - fx) + map[y0 * mw + x1] * fx;
      const bottom = map[y1 * mw + x0] * (1 - fx) + map[y1 * mw + x1] * fx;
      out[rowOut + x] = top * (1 - fy) + bottom * fy;
    }
  }
  return out;
}
