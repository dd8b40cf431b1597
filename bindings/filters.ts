/**
 * Filters of anomaly maps (Gaussian blur as scipy.ndimage.gaussian_filter, bilinear resize as torch's
 * F.interpolate(align_corners=False)) and PatchCore's feature operations (3 x 3 neighbourhood aggregation, adaptive
 * average pooling, the reference `_embed` pipeline). Definitions: native/filters.h.
 */
import { callKernel, type CallOptions } from './call';
import { imiadError, invalidType } from './errors';
import * as is from './is';
import { cpuAddon } from './load';
import { optionalSignal, requireInteger, requireOptions } from './validate';

type Cancel = Int32Array;
interface FiltersAddon {
  gaussianBlur(maps: Float32Array, count: number, h: number, w: number, sigma: number, truncate: number, cancel: Cancel): Promise<Float32Array>;
  resizeBilinear(maps: Float32Array, count: number, h: number, w: number, oh: number, ow: number, cancel: Cancel): Promise<Float32Array>;
  neighbourhoodAverage(maps: Float32Array, count: number, h: number, w: number, patch: number, cancel: Cancel): Promise<Float32Array>;
  adaptiveAvgPool1d(rows: Float32Array, dims: number, target: number, cancel: Cancel): Promise<Float32Array>;
  patchEmbedding(layers: Float32Array[], shapes: number[], n: number, patch: number, pretrain: number, target: number, cancel: Cancel): Promise<Float32Array>;
  gatherChannels(layers: Float32Array[], shapes: number[], n: number, channels: Uint32Array, cancel: Cancel): Promise<Float32Array>;
}

const addon = (): FiltersAddon => cpuAddon<FiltersAddon>();

const MAX_SIDE = 1 << 20;
const MAX_COUNT = 0xffffffff;

/** A feature map batch, NCHW (the shape lib/backbone returns). */
export interface FeatureMapLike {
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
}

export interface MapOptions {
  /** Number of maps (n * channels for NCHW features). */
  count: number;
  height: number;
  width: number;
  signal?: AbortSignal;
}

function requireMaps(maps: unknown, name: string, count: number, height: number, width: number, formula: string): Float32Array {
  if (!is.float32Array(maps)) throw invalidType('Float32Array', name, maps);
  const expected = count * height * width;
  if (maps.length !== expected) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_DIMS',
      `Expected length of ${name} to be ${formula} (${expected}) but received ${maps.length} of type number`,
    );
  }
  return maps;
}

function mapShape(opts: unknown): { count: number; height: number; width: number; signal?: AbortSignal } {
  const o = requireOptions(opts);
  return {
    count: requireInteger(o.count, 'count', 1, MAX_COUNT),
    height: requireInteger(o.height, 'height', 1, MAX_SIDE),
    width: requireInteger(o.width, 'width', 1, MAX_SIDE),
    signal: optionalSignal(o.signal),
  };
}

function optionalPositive(value: unknown, name: string, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (!is.number(value) || value <= 0 || value > max) throw invalidType(`number in (0, ${max}]`, name, value);
  return value;
}

/**
 * Gaussian blur of each map, exactly as scipy.ndimage.gaussian_filter(map, sigma, truncate=truncate) (mode
 * 'reflect') on float32 maps: PatchCore's smoothing of anomaly maps (sigma 4 by default).
 */
export async function gaussianBlur(maps: Float32Array, opts: MapOptions & { sigma?: number; truncate?: number }): Promise<Float32Array> {
  const { count, height, width, signal } = mapShape(opts);
  const sigma = optionalPositive(opts.sigma, 'sigma', 1e4, 4);
  const truncate = optionalPositive(opts.truncate, 'truncate', 100, 4);
  requireMaps(maps, 'maps', count, height, width, 'count * height * width');
  return callKernel((cancel) => addon().gaussianBlur(maps, count, height, width, sigma, truncate, cancel), { signal }, gaussianBlur);
}

/** Bilinear resize of each map, as torch.nn.functional.interpolate(size, mode='bilinear', align_corners=False). */
export async function resizeBilinear(
  maps: Float32Array,
  opts: MapOptions & { outHeight: number; outWidth: number },
): Promise<Float32Array> {
  const { count, height, width, signal } = mapShape(opts);
  const outHeight = requireInteger(opts.outHeight, 'outHeight', 1, MAX_SIDE);
  const outWidth = requireInteger(opts.outWidth, 'outWidth', 1, MAX_SIDE);
  requireMaps(maps, 'maps', count, height, width, 'count * height * width');
  return callKernel((cancel) => addon().resizeBilinear(maps, count, height, width, outHeight, outWidth, cancel), { signal }, resizeBilinear);
}

/** Upsamples (or downsamples) an NCHW feature map to another grid, bilinearly: a coarser layer onto a finer one. */
export async function resizeFeatureMap(
  layer: FeatureMapLike,
  n: number,
  height: number,
  width: number,
  opts: CallOptions = {},
): Promise<FeatureMapLike> {
  const channels = requireInteger(layer?.channels, 'layer.channels', 1, MAX_COUNT);
  const count = requireInteger(n, 'n', 1, MAX_COUNT) * channels;
  const data = await resizeBilinear(layer.data, {
    count,
    height: layer.height,
    width: layer.width,
    outHeight: height,
    outWidth: width,
    signal: opts.signal,
  });
  return { data, channels, height, width };
}

/**
 * The mean over each cell's p x p neighbourhood, zeros outside the map, always divided by p * p: torch's Unfold
 * (padding (p - 1) / 2) followed by a mean over the window, i.e. PatchCore's local aggregation when the pooled
 * dimension is the channel count.
 */
export async function neighbourhoodAverage(maps: Float32Array, opts: MapOptions & { patchSize?: number }): Promise<Float32Array> {
  const { count, height, width, signal } = mapShape(opts);
  const patchSize = opts.patchSize === undefined ? 3 : requireInteger(opts.patchSize, 'patchSize', 1, 63);
  if (patchSize % 2 === 0) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Expected odd integer for patchSize but received ${patchSize} of type number`);
  requireMaps(maps, 'maps', count, height, width, 'count * height * width');
  return callKernel((cancel) => addon().neighbourhoodAverage(maps, count, height, width, patchSize, cancel), { signal }, neighbourhoodAverage);
}

/** torch.nn.functional.adaptive_avg_pool1d on each row of a [rows, dims] matrix: [rows, targetDims]. */
export async function adaptiveAvgPool1d(rows: Float32Array, opts: { dims: number; targetDims: number; signal?: AbortSignal }): Promise<Float32Array> {
  const o = requireOptions(opts);
  const dims = requireInteger(o.dims, 'dims', 1, 1 << 24);
  const targetDims = requireInteger(o.targetDims, 'targetDims', 1, 1 << 24);
  const signal = optionalSignal(o.signal);
  if (!is.float32Array(rows)) throw invalidType('Float32Array', 'rows', rows);
  if (rows.length === 0 || rows.length % dims !== 0) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_DIMS',
      `Expected length of rows to be a non-zero multiple of dims (${dims}) but received ${rows.length} of type number`,
    );
  }
  return callKernel((cancel) => addon().adaptiveAvgPool1d(rows, dims, targetDims, cancel), { signal }, adaptiveAvgPool1d);
}

export interface PatchEmbeddingOptions {
  /** Images in the batch (every layer holds n maps). */
  n: number;
  /** Neighbourhood size p (PatchCore's default 3). */
  patchSize?: number;
  /** Each layer's p*p*C patch vector is pooled to this (PatchCore's pretrain_embed_dimension, default 1024). */
  pretrainDims?: number;
  /** The layers' concatenated vectors are pooled to this (target_embed_dimension, default 1024). */
  targetDims?: number;
  signal?: AbortSignal;
}

export interface PatchEmbedding {
  /** [n * height * width, dims], rows in (image, y, x) order. */
  embeddings: Float32Array;
  dims: number;
  height: number;
  width: number;
}

/** Checks 1 to 16 NCHW layers of n images each; returns their (channels, height, width) triples, flattened. */
function requireLayers(layers: unknown, n: number): number[] {
  if (!Array.isArray(layers) || layers.length === 0 || layers.length > 16) {
    throw invalidType('array of 1 to 16 feature maps', 'layers', layers);
  }
  const shapes: number[] = [];
  layers.forEach((layer: unknown, i) => {
    const name = `layers[${i}]`;
    if (!is.object(layer)) throw invalidType('feature map { data, channels, height, width }', name, layer);
    const channels = requireInteger(layer.channels, `${name}.channels`, 1, MAX_SIDE);
    const height = requireInteger(layer.height, `${name}.height`, 1, MAX_SIDE);
    const width = requireInteger(layer.width, `${name}.width`, 1, MAX_SIDE);
    requireMaps(layer.data, `${name}.data`, n * channels, height, width, 'n * channels * height * width');
    shapes.push(channels, height, width);
  });
  return shapes;
}

/**
 * PatchCore's patch features, exactly as the reference `PatchCore._embed` (amazon-science/patchcore-inspection):
 * p x p neighbourhoods unfolded with zero padding, every layer after the first resized bilinearly (its unfolded
 * patches, as the reference does) to the first layer's grid, each layer's patch vector adaptive-average-pooled to
 * pretrainDims, the concatenation pooled to targetDims.
 */
export async function patchEmbedding(layers: FeatureMapLike[], opts: PatchEmbeddingOptions): Promise<PatchEmbedding> {
  const o = requireOptions(opts);
  const n = requireInteger(o.n, 'n', 1, MAX_COUNT);
  const patchSize = o.patchSize === undefined ? 3 : requireInteger(o.patchSize, 'patchSize', 1, 63);
  if (patchSize % 2 === 0) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Expected odd integer for patchSize but received ${patchSize} of type number`);
  const pretrainDims = o.pretrainDims === undefined ? 1024 : requireInteger(o.pretrainDims, 'pretrainDims', 1, 1 << 20);
  const targetDims = o.targetDims === undefined ? 1024 : requireInteger(o.targetDims, 'targetDims', 1, 1 << 20);
  const signal = optionalSignal(o.signal);
  const shapes = requireLayers(layers, n);
  const embeddings = await callKernel(
    (cancel) => addon().patchEmbedding(layers.map((l) => l.data), shapes, n, patchSize, pretrainDims, targetDims, cancel),
    { signal },
    patchEmbedding,
  );
  return { embeddings, dims: targetDims, height: layers[0].height, width: layers[0].width };
}

/**
 * PaDiM's embedding (the reference's `embedding_concat` + `index_select`): the layers' channels concatenated at the
 * first layer's grid, coarser layers upsampled by nearest neighbour (cell (y, x) reads (floor(y H_l / H_0),
 * floor(x W_l / W_0))), keeping only `channels` (indices into the concatenation, in the order given). The result,
 * [n, channels.length, H_0 * W_0], is the layout gaussianFit takes.
 */
export async function gatherChannels(
  layers: FeatureMapLike[],
  opts: { n: number; channels: Uint32Array | readonly number[]; signal?: AbortSignal },
): Promise<FeatureMapLike> {
  const o = requireOptions(opts);
  const n = requireInteger(o.n, 'n', 1, MAX_COUNT);
  const signal = optionalSignal(o.signal);
  const shapes = requireLayers(layers, n);
  let total = 0;
  for (let i = 0; i < shapes.length; i += 3) total += shapes[i];
  const raw = o.channels;
  if (!(raw instanceof Uint32Array || Object.prototype.toString.call(raw) === '[object Uint32Array]' || Array.isArray(raw)) || (raw as ArrayLike<number>).length === 0) {
    throw invalidType('non-empty Uint32Array or array of channel indices', 'channels', raw);
  }
  const list = raw as ArrayLike<number>;
  for (let j = 0; j < list.length; j++) {
    if (!is.integer(list[j]) || list[j] < 0 || list[j] >= total) {
      throw imiadError(
        'RangeError',
        'ERR_IMIAD_RANGE',
        `Expected integer between 0 and ${total - 1} for channels[${j}] but received ${String(list[j])} of type ${typeof list[j]}`,
      );
    }
  }
  const channels = Uint32Array.from(list);
  const data = await callKernel(
    (cancel) => addon().gatherChannels(layers.map((l) => l.data), shapes, n, channels, cancel),
    { signal },
    gatherChannels,
  );
  return { data, channels: channels.length, height: shapes[1], width: shapes[2] };
}
