/**
 * Typed wrappers of the metric kernels (native/components, native/curves): every argument is validated here first,
 * in the project's message format, then the addon runs the work off the event loop and returns a Promise.
 */
import { abortError, callKernel, type CallOptions } from './call';
import { imiadError, invalidRange, invalidType } from './errors';
import * as is from './is';
import { cpuAddon } from './load';
import { optionalProgress, optionalSignal, requireInteger } from './validate';

type Cancel = Int32Array;
type Progress = ((done: number, total: number) => void) | undefined;

interface NativeBinaryMetrics {
  auroc: number;
  ap: number;
  f1Max: number;
  positives: number;
  negatives: number;
  thresholds: number;
}

interface NativePixelMetrics extends NativeBinaryMetrics {
  areaUnderPro: Float64Array;
  units: number;
}

interface NativeAccumulator {
  addBinary(maps: Float32Array[], masks: (Uint8Array | null)[], widths: Float64Array, heights: Float64Array, regions: boolean, cancel: Cancel, progress: Progress): Promise<void>;
  addChannels(maps: Float32Array[], channels: Uint8Array[][], widths: Float64Array, heights: Float64Array, saturation: Float64Array[], cancel: Cancel, progress: Progress): Promise<void>;
  compute(limits: Float64Array, cancel: Cancel, progress: Progress): Promise<NativePixelMetrics>;
  reserve(pixels: number): void;
  pixels(): number;
}

interface MetricsAddon {
  labelComponents(mask: Uint8Array, width: number, height: number, cancel: Cancel): Promise<{ labels: Uint32Array; count: number }>;
  binaryMetrics(scores: Float64Array, labels: Uint8Array, cancel: Cancel): Promise<NativeBinaryMetrics>;
  trapezoid(x: Float64Array, y: Float64Array, xMax: number): Promise<number>;
  PixelAccumulator: new () => NativeAccumulator;
}

const addon = (): MetricsAddon => cpuAddon<MetricsAddon>();

/** The largest side accepted for a map or mask. */
export const MAX_SIDE = 1 << 30;

export interface KernelOptions {
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

function callOptions(opts: unknown): CallOptions {
  if (opts === undefined) return {};
  if (!is.object(opts)) throw invalidType('object', 'options', opts);
  return { signal: optionalSignal(opts.signal), onProgress: optionalProgress(opts.onProgress) };
}

function requireLength(values: ArrayLike<unknown>, expected: number, name: string): void {
  if (values.length !== expected) {
    throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected length of ${name} to be ${expected} but received ${values.length} of type number`);
  }
}

function requireFinite(values: Float32Array | Float64Array, name: string): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0) {
      throw imiadError('RangeError', 'ERR_IMIAD_NOT_FINITE', `Expected finite numbers in ${name} but received ${v} of type number at index ${i}`);
    }
  }
}

function requireUint8(value: unknown, name: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw invalidType('Uint8Array', name, value);
  return value;
}

function requireFloat32(value: unknown, name: string): Float32Array {
  if (!is.float32Array(value)) throw invalidType('Float32Array', name, value);
  return value;
}

export interface ComponentLabels {
  /** 0 = background, 1..count = 8-connected components in raster order of their first pixel. */
  labels: Uint32Array;
  count: number;
}

/** 8-connected component labelling of a binary mask (nonzero = foreground), as scipy.ndimage.label with a 3x3 structure. */
export function labelComponents(mask: Uint8Array, width: number, height: number, opts?: KernelOptions): Promise<ComponentLabels> {
  requireUint8(mask, 'mask');
  requireInteger(width, 'width', 1, MAX_SIDE);
  requireInteger(height, 'height', 1, MAX_SIDE);
  requireLength(mask, width * height, 'mask');
  const o = callOptions(opts);
  return callKernel((cancel) => addon().labelComponents(mask, width, height, cancel), o, labelComponents);
}

export interface BinaryClassificationMetrics {
  /** Area under the ROC curve, tied scores merged (scikit-learn's roc_auc_score). */
  auroc: number;
  /** Average precision, sum (R_n - R_{n-1}) P_n over distinct thresholds (scikit-learn's average_precision_score). */
  ap: number;
  /** Maximum F1 over the same thresholds. */
  f1Max: number;
  positives: number;
  negatives: number;
  /** Number of distinct scores. */
  thresholds: number;
}

function toFloat64(values: unknown, name: string): Float64Array {
  if (values instanceof Float64Array) return values;
  if (values instanceof Float32Array) return Float64Array.from(values);
  if (Array.isArray(values)) {
    const out = new Float64Array(values.length);
    for (let i = 0; i < values.length; i++) {
      if (typeof values[i] !== 'number') throw invalidType('number', `${name}[${i}]`, values[i]);
      out[i] = values[i] as number;
    }
    return out;
  }
  throw invalidType('Float64Array, Float32Array or number[]', name, values);
}

function toLabels(values: unknown, name: string): Uint8Array {
  if (values instanceof Uint8Array) return values;
  if (Array.isArray(values)) {
    const out = new Uint8Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = values[i] as unknown;
      if (v !== 0 && v !== 1 && v !== true && v !== false) throw invalidType('0, 1, true or false', `${name}[${i}]`, v);
      out[i] = v === 1 || v === true ? 1 : 0;
    }
    return out;
  }
  throw invalidType('Uint8Array, number[] or boolean[]', name, values);
}

function requireBothClasses(positives: number, negatives: number, what: string): void {
  if (positives === 0 || negatives === 0) {
    const only = positives === 0 ? 'normal' : 'anomalous';
    throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected both normal and anomalous ${what} but received only ${only} ones`);
  }
}

/**
 * AUROC, AP and F1-max of binary classification scores (image level, or any moderate number of scores held as
 * doubles). labels: nonzero / true = anomalous.
 */
export async function binaryClassificationMetrics(
  scores: Float64Array | Float32Array | number[],
  labels: Uint8Array | number[] | boolean[],
  opts?: KernelOptions,
): Promise<BinaryClassificationMetrics> {
  const s = toFloat64(scores, 'scores');
  const l = toLabels(labels, 'labels');
  if (s.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected non-empty scores but received Float64Array(0) of type object');
  requireLength(l, s.length, 'labels');
  requireFinite(s, 'scores');
  const o = callOptions(opts);
  const r = await callKernel((cancel) => addon().binaryMetrics(s, l, cancel), o, binaryClassificationMetrics);
  requireBothClasses(r.positives, r.negatives, 'samples');
  return { ...r };
}

/**
 * The official generic_util.trapezoid (MVTec AD) / util.trapz (MVTec LOCO AD): area under the piecewise-linear curve
 * through (x, y), x ascending, up to xMax with y linearly interpolated there. Without xMax, the whole curve.
 */
export function trapezoid(x: Float64Array | number[], y: Float64Array | number[], xMax?: number): Promise<number> {
  const xs = toFloat64(x, 'x');
  const ys = toFloat64(y, 'y');
  requireLength(ys, xs.length, 'y');
  if (xMax !== undefined && !is.number(xMax)) throw invalidType('finite number', 'xMax', xMax);
  return callKernel(() => addon().trapezoid(xs, ys, xMax ?? Number.NaN), {}, trapezoid);
}

export interface MaskedAnomalyMap {
  /** Anomaly scores at the image's original size, row-major. */
  anomalyMap: Float32Array;
  /** Ground truth, nonzero = anomalous; omitted or null = all normal. */
  mask?: Uint8Array | null;
  width: number;
  height: number;
}

export interface ChannelAnomalyMap {
  anomalyMap: Float32Array;
  /** MVTec LOCO AD: one binary mask per ground-truth PNG (a channel each, never split into components). */
  channels: Uint8Array[];
  /** The saturation area of each channel (see lib/metrics/spro.ts saturationArea). */
  saturationAreas: number[];
  width: number;
  height: number;
}

export interface PixelCurveMetrics extends BinaryClassificationMetrics {
  /** AU-PRO (binary masks) or AU-sPRO (channels) per FPR limit, normalised by the limit; NaN without regions. */
  areaUnderPro: number[];
  limits: number[];
  /** Ground-truth regions (8-connected components) or channels added. */
  units: number;
}

function requireSize(width: unknown, height: unknown, name: string): void {
  requireInteger(width, `${name}.width`, 1, MAX_SIDE);
  requireInteger(height, `${name}.height`, 1, MAX_SIDE);
}

/** Checks images[i]: an object with an integer size and a finite Float32Array anomaly map of width * height values. */
function requireImageMap(img: { width: number; height: number; anomalyMap: Float32Array }, name: string): Float32Array {
  if (!is.object(img)) throw invalidType('object', name, img);
  requireSize(img.width, img.height, name);
  const map = requireFloat32(img.anomalyMap, `${name}.anomalyMap`);
  requireLength(map, img.width * img.height, `${name}.anomalyMap`);
  requireFinite(map, `${name}.anomalyMap`);
  return map;
}

export function requireLimits(limits: unknown, name = 'limits'): number[] {
  if (!Array.isArray(limits) || limits.length === 0) throw invalidType('non-empty number[]', name, limits);
  for (let i = 0; i < limits.length; i++) {
    const v = limits[i] as unknown;
    if (!is.number(v)) throw invalidType('number in (0, 1]', `${name}[${i}]`, v);
    if (!(v > 0 && v <= 1)) throw invalidRange('number in (0, 1]', `${name}[${i}]`, v);
  }
  return limits as number[];
}

/**
 * Collects the scored pixels of many test images (8 bytes each; images may be added one batch at a time and
 * released) and computes pixel AUROC, AP, F1-max and the area under the PRO or sPRO curve at once. Calls are queued,
 * so they never overlap.
 */
export class PixelAccumulator {
  readonly #native: NativeAccumulator;
  #queue: Promise<unknown> = Promise.resolve();
  #kind: 'binary' | 'channels' | undefined;

  constructor() {
    this.#native = new (addon().PixelAccumulator)();
  }

  /** Pixels added so far. */
  get pixels(): number {
    return this.#native.pixels();
  }

  #enqueue<T>(run: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(run, run);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  #kindOf(kind: 'binary' | 'channels'): void {
    if (this.#kind !== undefined && this.#kind !== kind) {
      throw imiadError('Error', 'ERR_IMIAD_ARGUMENT', `Cannot mix binary masks and LOCO channels in one PixelAccumulator`);
    }
    this.#kind = kind;
  }

  /** Reserves room for `pixels` pixels, avoiding re-allocation when the total is known. */
  async reserve(pixels: number): Promise<void> {
    requireInteger(pixels, 'pixels', 0, Number.MAX_SAFE_INTEGER);
    await this.#enqueue(async () => this.#native.reserve(pixels));
  }

  /**
   * Adds images with binary masks. With `regions` (default true) each mask's 8-connected components become PRO
   * regions; without, only ROC / PR are meaningful.
   */
  addImages(images: MaskedAnomalyMap[], opts?: KernelOptions & { regions?: boolean }): Promise<void> {
    if (!Array.isArray(images)) throw invalidType('Array', 'images', images);
    const maps: Float32Array[] = [];
    const masks: (Uint8Array | null)[] = [];
    const widths = new Float64Array(images.length);
    const heights = new Float64Array(images.length);
    images.forEach((img, i) => {
      const name = `images[${i}]`;
      const map = requireImageMap(img, name);
      let mask: Uint8Array | null = null;
      if (img.mask !== undefined && img.mask !== null) {
        mask = requireUint8(img.mask, `${name}.mask`);
        requireLength(mask, img.width * img.height, `${name}.mask`);
      }
      maps.push(map);
      masks.push(mask);
      widths[i] = img.width;
      heights[i] = img.height;
    });
    const regions = opts?.regions ?? true;
    if (typeof regions !== 'boolean') throw invalidType('boolean', 'regions', regions);
    const o = callOptions(opts === undefined ? undefined : { signal: opts.signal, onProgress: opts.onProgress });
    this.#kindOf('binary');
    return this.#enqueue(() =>
      callKernel((cancel, progress) => this.#native.addBinary(maps, masks, widths, heights, regions, cancel, progress), o, this.addImages),
    );
  }

  /** Adds MVTec LOCO AD images: one channel per ground-truth PNG with its saturation area; none for good images. */
  addChannelImages(images: ChannelAnomalyMap[], opts?: KernelOptions): Promise<void> {
    if (!Array.isArray(images)) throw invalidType('Array', 'images', images);
    const maps: Float32Array[] = [];
    const channels: Uint8Array[][] = [];
    const saturation: Float64Array[] = [];
    const widths = new Float64Array(images.length);
    const heights = new Float64Array(images.length);
    images.forEach((img, i) => {
      const name = `images[${i}]`;
      const map = requireImageMap(img, name);
      if (!Array.isArray(img.channels)) throw invalidType('Uint8Array[]', `${name}.channels`, img.channels);
      if (!Array.isArray(img.saturationAreas)) throw invalidType('number[]', `${name}.saturationAreas`, img.saturationAreas);
      requireLength(img.saturationAreas, img.channels.length, `${name}.saturationAreas`);
      const sats = new Float64Array(img.channels.length);
      img.channels.forEach((ch, c) => {
        const m = requireUint8(ch, `${name}.channels[${c}]`);
        requireLength(m, img.width * img.height, `${name}.channels[${c}]`);
        let area = 0;
        for (let p = 0; p < m.length; p++) if (m[p] !== 0) area++;
        const sat = img.saturationAreas[c];
        const satName = `${name}.saturationAreas[${c}]`;
        if (!is.integer(sat)) throw invalidType(`integer between 1 and ${area}`, satName, sat);
        if (sat < 1 || sat > area) throw invalidRange(`integer between 1 and ${area}`, satName, sat);
        sats[c] = sat;
      });
      maps.push(map);
      channels.push(img.channels);
      saturation.push(sats);
      widths[i] = img.width;
      heights[i] = img.height;
    });
    const o = callOptions(opts);
    this.#kindOf('channels');
    return this.#enqueue(() =>
      callKernel((cancel, progress) => this.#native.addChannels(maps, channels, widths, heights, saturation, cancel, progress), o, this.addChannelImages),
    );
  }

  /** Computes the metrics over every pixel added so far; `limits` are FPR integration limits in (0, 1] (default [0.3]). */
  compute(opts?: KernelOptions & { limits?: number[] }): Promise<PixelCurveMetrics> {
    const limits = requireLimits(opts?.limits ?? [0.3]);
    const o = callOptions(opts === undefined ? undefined : { signal: opts.signal, onProgress: opts.onProgress });
    if (o.signal?.aborted) return Promise.reject(abortError());
    return this.#enqueue(async () => {
      if (this.#native.pixels() === 0) {
        throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected at least one image before computing metrics');
      }
      const r = await callKernel((cancel, progress) => this.#native.compute(Float64Array.from(limits), cancel, progress), o, this.compute);
      return {
        auroc: r.auroc,
        ap: r.ap,
        f1Max: r.f1Max,
        positives: r.positives,
        negatives: r.negatives,
        thresholds: r.thresholds,
        areaUnderPro: Array.from(r.areaUnderPro),
        limits: [...limits],
        units: r.units,
      };
    });
  }
}
