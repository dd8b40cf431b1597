/**
 * What every feature-embedding detector shares: the backbone options, the image pipeline in front of it, batched
 * extraction with the backbone's time kept apart from the detector's, and the inverse mapping of crop-sized maps to
 * the original images.
 */
import { imiadError, invalidType } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { gaussianBlur, resizeBilinear } from '../../bindings/filters';
import { type BackboneShape, BACKBONE_SHAPES } from '../backbone/builder';
import { type Backbone, type FeatureMap, loadBackbone } from '../backbone/session';
import type { Sample } from '../datasets/types';
import { batches, type Geometry, mapToOriginal } from '../image/pipeline';
import type { AnomalyMap, RunOptions, Timing } from './types';

/** Options every backbone-based detector accepts. */
export interface BackboneParams {
  /** An ONNX file; absent = imiad's seeded default backbone. */
  backbone?: string;
  /** Shape of the default backbone (default 'resnet18'). */
  backboneShape?: BackboneShape;
  /** Seed of the default backbone's weights (default 0). */
  backboneSeed?: number;
  /** Layers to tap (each method has its own default). */
  layers?: string[];
  /** Resize (shorter side) before the centre crop (default 256). */
  imageSize?: number;
  /** Centre crop side, the backbone's input (default 224). */
  cropSize?: number;
  /** Images per backbone batch while fitting (default 8); prediction runs one image at a time for latency. */
  batchSize?: number;
  /** Seed of the method's own randomness (coreset, channel subset). Default 0. */
  seed?: number;
  /** A fitted state larger than this is an ERR_IMIAD_MEMORY error (default: half of this machine's memory). */
  memoryBudgetBytes?: number;
  /** ONNX Runtime threads (default: every core). */
  threads?: number;
}

export interface ResolvedBackboneParams {
  backbone?: string;
  backboneShape: BackboneShape;
  backboneSeed: number;
  layers: string[];
  imageSize: number;
  cropSize: number;
  batchSize: number;
  seed: number;
  memoryBudgetBytes?: number;
  threads?: number;
}

/** An optional integer parameter in [min, max]; `fallback` when absent. */
export function optionalInt(value: unknown, name: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (!is.integer(value) || value < min || value > max) throw invalidType(`integer between ${min} and ${max}`, name, value);
  return value;
}

/** The optional Gaussian smoothing sigma of the anomaly maps: a number >= 0, 4 when absent. */
export function optionalSigma(value: unknown): number {
  if (value !== undefined && !(is.number(value) && value >= 0)) throw invalidType('number >= 0', 'sigma', value);
  return (value as number | undefined) ?? 4;
}

export function resolveBackboneParams(params: unknown, defaultLayers: string[]): ResolvedBackboneParams {
  if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
  const p = (params ?? {}) as BackboneParams;
  if (p.backbone !== undefined && !(is.string(p.backbone) && p.backbone.length > 0)) throw invalidType('path of an ONNX file', 'backbone', p.backbone);
  if (p.backboneShape !== undefined && !BACKBONE_SHAPES.includes(p.backboneShape)) {
    throw invalidType(`one of ${BACKBONE_SHAPES.map((s) => `'${s}'`).join(', ')}`, 'backboneShape', p.backboneShape);
  }
  const layers = p.layers ?? defaultLayers;
  if (!Array.isArray(layers) || layers.length === 0 || !layers.every((l) => is.string(l) && l.length > 0)) {
    throw invalidType('non-empty array of layer names', 'layers', layers);
  }
  if (p.memoryBudgetBytes !== undefined && !(is.number(p.memoryBudgetBytes) && p.memoryBudgetBytes > 0)) {
    throw invalidType('positive number', 'memoryBudgetBytes', p.memoryBudgetBytes);
  }
  const imageSize = optionalInt(p.imageSize, 'imageSize', 1, 16384, 256);
  return {
    backbone: p.backbone,
    backboneShape: p.backboneShape ?? 'resnet18',
    backboneSeed: optionalInt(p.backboneSeed, 'backboneSeed', 0, 0xffffffff, 0),
    layers: [...layers],
    imageSize,
    cropSize: optionalInt(p.cropSize, 'cropSize', 1, imageSize, Math.min(224, imageSize)),
    batchSize: optionalInt(p.batchSize, 'batchSize', 1, 4096, 8),
    seed: optionalInt(p.seed, 'seed', 0, Number.MAX_SAFE_INTEGER, 0),
    memoryBudgetBytes: p.memoryBudgetBytes,
    threads: p.threads === undefined ? undefined : optionalInt(p.threads, 'threads', 1, 1024, 1),
  };
}

/** One batch of images through the backbone. */
export interface FeatureBatch {
  /** Index of the batch's first sample. */
  start: number;
  n: number;
  geometries: Geometry[];
  features: Record<string, FeatureMap>;
  /** Backbone wall time of this batch, in milliseconds. */
  backboneMs: number;
  /** Time spent waiting for decoded images, in milliseconds. */
  decodeMs: number;
}

/** A lazily loaded backbone plus the pipeline settings in front of it. */
export class FeatureExtractor {
  private backbone: Backbone | null = null;

  constructor(readonly params: ResolvedBackboneParams) {}

  async load(): Promise<Backbone> {
    if (!this.backbone) {
      this.backbone = await loadBackbone({
        file: this.params.backbone,
        shape: this.params.backboneShape,
        seed: this.params.backboneSeed,
        layers: this.params.layers,
        threads: this.params.threads,
      });
    }
    return this.backbone;
  }

  /** Feature batches of the samples, in order; decoding runs ahead of the backbone. */
  async *run(samples: Sample[], batchSize: number, opts: RunOptions = {}): AsyncGenerator<FeatureBatch> {
    const backbone = await this.load();
    const crop = this.params.cropSize;
    const paths = samples.map((s) => s.path);
    const it = batches(paths, { imageSize: this.params.imageSize, cropSize: crop, batchSize, prefetch: Math.max(4, batchSize * 2), signal: opts.signal });
    for (;;) {
      const t0 = process.hrtime.bigint();
      const next = await it.next();
      const decodeMs = Number(process.hrtime.bigint() - t0) / 1e6;
      if (next.done) return;
      const b = next.value;
      if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
      const t1 = process.hrtime.bigint();
      const features = await backbone.extract(b.data, b.n, crop, crop);
      const backboneMs = Number(process.hrtime.bigint() - t1) / 1e6;
      yield { start: b.start, n: b.n, geometries: b.geometries, features, backboneMs, decodeMs };
    }
  }

  async dispose(): Promise<void> {
    const b = this.backbone;
    this.backbone = null;
    if (b) await b.dispose();
  }
}

/** The layer's feature map, or an error naming the layers the backbone returned. */
export function layerOf(features: Record<string, FeatureMap>, name: string): FeatureMap {
  const f = features[name];
  if (!f) throw imiadError('Error', 'ERR_IMIAD_LAYER', `Expected layer '${name}' among the backbone's outputs (${Object.keys(features).join(', ')})`);
  return f;
}

/**
 * Score grids [n, h, w] to final maps at the original image sizes, as the reference implementations post-process:
 * bilinear upsampling to the crop (F.interpolate, align_corners=False), Gaussian blur sigma 4 (scipy), then the
 * inverse of resize + crop. Pixels outside the crop get the map's minimum. Also returns each smoothed crop map's
 * maximum (the image score of methods that score images by their map).
 */
export async function scoreGridsToMaps(
  grids: Float32Array,
  n: number,
  h: number,
  w: number,
  geometries: Geometry[],
  crop: number,
  opts: { sigma?: number; signal?: AbortSignal } = {},
): Promise<{ maps: AnomalyMap[]; maxima: Float64Array }> {
  const up = h === crop && w === crop ? grids : await resizeBilinear(grids, { count: n, height: h, width: w, outHeight: crop, outWidth: crop, signal: opts.signal });
  const sigma = opts.sigma ?? 4;
  const smooth = sigma > 0 ? await gaussianBlur(up, { count: n, height: crop, width: crop, sigma, signal: opts.signal }) : up;
  const maps: AnomalyMap[] = [];
  const maxima = new Float64Array(n);
  const plane = crop * crop;
  for (let i = 0; i < n; i++) {
    const g = geometries[i];
    const m = smooth.subarray(i * plane, (i + 1) * plane);
    let max = -Infinity;
    for (let j = 0; j < plane; j++) if (m[j] > max) max = m[j];
    maxima[i] = max;
    maps.push({ data: mapToOriginal(m, g), width: g.width, height: g.height });
  }
  return { maps, maxima };
}

/** Checks a fitted state against the memory budget before it is allocated. */
export function requireBudget(what: string, needed: number, budget: number | undefined, fallback: number): void {
  const b = budget ?? fallback;
  if (needed > b) {
    throw imiadError('RangeError', 'ERR_IMIAD_MEMORY', `${what} needs ${needed} bytes but the memory budget is ${b} bytes (set memoryBudgetBytes to allow it)`);
  }
}

export function elapsedMs(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export function requireFitted(fitted: boolean, name: string): void {
  if (!fitted) throw imiadError('Error', 'ERR_IMIAD_STATE', `${name}: call fit() before predict()`);
}

export function requireSamples(samples: unknown, name: string): Sample[] {
  if (!Array.isArray(samples)) throw invalidType('array of samples', name, samples);
  if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected at least one sample in ${name} but received none`);
  samples.forEach((s, i) => {
    if (!is.object(s) || !is.string((s as unknown as Sample).path)) throw invalidType('sample { path, ... }', `${name}[${i}]`, s);
  });
  return samples as Sample[];
}

/** FitOptions.continueTraining, checked: true only when asked for explicitly. */
export function continuesTraining(opts: unknown): boolean {
  if (opts === undefined) return false;
  if (!is.object(opts)) throw invalidType('object', 'options', opts);
  const v = (opts as { continueTraining?: unknown }).continueTraining;
  if (v !== undefined && typeof v !== 'boolean') throw invalidType('boolean', 'continueTraining', v);
  return v === true;
}

/** What predictInBatches needs of a batch: its size, its first sample's index and the backbone's time on it. */
export interface ScoredBatch {
  n: number;
  start: number;
  backboneMs: number;
}

/**
 * The trained detectors' predict loop: `score` turns each batch into image scores and maps; the scores, maps and
 * per-image times (the backbone's and the method's share of the batch) are gathered in sample order, with progress.
 */
export async function predictInBatches<B extends ScoredBatch>(
  batchesOf: AsyncIterable<B>,
  total: number,
  opts: RunOptions,
  score: (b: B) => Promise<{ scores: ArrayLike<number>; maps: AnomalyMap[] }>,
): Promise<{ scores: Float64Array; maps: AnomalyMap[]; timing: Timing }> {
  const scores = new Float64Array(total);
  const maps: AnomalyMap[] = [];
  const timing: Timing = { backboneMs: [], methodMs: [] };
  for await (const b of batchesOf) {
    const t = process.hrtime.bigint();
    const out = await score(b);
    const methodMs = elapsedMs(t);
    for (let i = 0; i < b.n; i++) {
      scores[b.start + i] = out.scores[i];
      maps.push(out.maps[i]);
      timing.backboneMs.push(b.backboneMs / b.n);
      timing.methodMs.push(methodMs / b.n);
    }
    opts.onProgress?.(b.start + b.n, total);
  }
  return { scores, maps, timing };
}

/**
 * A training loop's one step in flight (DRAEM, PRN): the next batch is prepared while the current step runs on the
 * training thread. submit() waits for the previous step (divergence check, the epoch's running mean, the progress
 * line), then starts the next; endEpoch() waits for the last step and gives the epoch's mean loss; settle() awaits a
 * step still running after a failure, so that its rejection is not left unhandled.
 */
export class StepPipeline {
  private pending: Promise<number> | null = null;
  private step = 0;
  private seen = 0;
  private sum = 0;
  private count = 0;
  private epoch = 0;
  private readonly t0 = process.hrtime.bigint();

  constructor(
    private readonly label: string,
    private readonly epochs: number,
    private readonly stepsPerEpoch: number,
    private readonly opts: RunOptions,
  ) {}

  /** Images handed to steps so far. */
  get imagesSeen(): number {
    return this.seen;
  }

  startEpoch(epoch: number): void {
    this.epoch = epoch;
    this.sum = 0;
    this.count = 0;
  }

  /** Waits for the step in flight, then starts `run` (a step on `images` images). */
  async submit(images: number, run: () => Promise<number>): Promise<void> {
    await this.finish();
    if (this.opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
    this.seen += images;
    this.pending = run();
  }

  async endEpoch(): Promise<number> {
    await this.finish();
    return this.sum / this.count;
  }

  async settle(): Promise<void> {
    const p = this.pending;
    this.pending = null;
    if (p) await p.catch(() => undefined);
  }

  private async finish(): Promise<void> {
    if (!this.pending) return;
    const loss = await this.pending;
    this.pending = null;
    this.step += 1;
    const { epoch, epochs, label } = this;
    if (!Number.isFinite(loss)) {
      throw imiadError('Error', 'ERR_IMIAD_TRAINING_DIVERGED', `${label}'s training loss became ${loss} in epoch ${epoch + 1}, step ${this.step - epoch * this.stepsPerEpoch} (lower --lr); the model was not kept`);
    }
    this.sum += loss;
    this.count += 1;
    const seconds = elapsedMs(this.t0) / 1000;
    this.opts.onProgress?.(this.step, epochs * this.stepsPerEpoch, `epoch ${epoch + 1}/${epochs} loss ${(this.sum / this.count).toFixed(4)} ${(seconds > 0 ? this.seen / seconds : 0).toFixed(1)} img/s`);
  }
}
