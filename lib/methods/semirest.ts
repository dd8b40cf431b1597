/**
 * SemiREST (Li, Wu, Chen, Wang, Shen, "Efficient Anomaly Detection with Budget Annotation Using Semi-Supervised
 * Residual Transformer", arXiv 2306.03492). No public code: this follows the paper's description (METHODS.md
 * section 15), and every choice the paper leaves open is ours, listed in docs/detectors-semirest.md:
 *
 * 1. Frozen patch features exactly as PatchCore's (layer2 + layer3, 3 x 3 aggregation, adaptive pooling to
 *    targetDims: bindings/filters.ts patchEmbedding), stride 8 (a 32 x 32 grid at 256 px).
 * 2. The bank: every normal training image's patch features, kept per grid position (no coreset: the position
 *    constraint needs every position's entries). Position-constrained matching: a patch at (y, x) is matched only to
 *    the bank entries at positions (y', x') with |y - y'| <= radius and |x - x'| <= radius (clipped at the border),
 *    the exact nearest one by Euclidean distance, found by the addon's k-NN kernel (one KnnIndex per bank position,
 *    each searched with every query whose window holds that position); residual = f - nn(f).
 *    Training normals (and synthetic anomalies drawn on them, and copy-pastes onto them) are matched leave-one-out:
 *    their own image's entries are excluded (else their residuals would be zero).
 * 3. A sliding-window (Swin-like) transformer over the residual map with a 2-class classifier per block (one
 *    feature cell = an 8 x 8-pixel block), trained with a focal loss on block labels (a block is anomalous when any
 *    of its pixels is) from the labelled anomalies' masks (the original, sampler.augmented and sampler.copyPaste)
 *    and DRAEM-style synthetic anomalies (AnomalySynthesiser, --texture-root) on the normal images
 *    (native/train/semirest.cc).
 * 4. Map = block probabilities upsampled bilinearly to the crop, Gaussian sigma 4, mapped back to the image; image
 *    score = the maximum block probability.
 *
 * The training pool (normals, synthetic anomalies, real anomaly variants) is drawn once per fit from the seed, its
 * residuals computed once; the epochs then reshuffle it. A loss that becomes NaN or infinite stops training with
 * ERR_IMIAD_TRAINING_DIVERGED; Ctrl-C stops with ABORT_ERR; either way no model is kept.
 */
import * as os from 'os';

import { imiadError, invalidType } from '../../bindings/errors';
import { patchEmbedding } from '../../bindings/filters';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { KnnIndex, type KnnResult } from '../../bindings/knn';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { trainAddon, TrainModel } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import type { FeatureMap } from '../backbone/session';
import type { Sample } from '../datasets/types';
import { normalisationStats } from '../image/pipeline';
import { Random } from '../prng';
import { AnomalySynthesiser } from '../synthesis';
import { type LabelledImage, LabelledAnomalySampler } from '../synthesis/labelled';
import { configExtra, configGrid, configInt, stateArray } from './checkpoint';
import {
  type BackboneParams,
  continuesTraining,
  elapsedMs,
  FeatureExtractor,
  layerOf,
  optionalInt,
  optionalSigma,
  requireBudget,
  requireSamples,
  resolveBackboneParams,
  scoreGridsToMaps,
} from './features';
import { TrainedFeatureDetector } from './trained-detector';
import type { AnomalyMap, Detector, DetectorState, FitOptions, Prediction, RunOptions, Timing, TrainSample } from './types';

const Math = globalThis.Math;

/** Position-constrained k-NN searches run concurrently (on the addon's worker threads). */
const SEARCHES_IN_FLIGHT = 8;

export interface SemiRestParams extends BackboneParams {
  /** Training epochs over the pool (default 50; the paper gives none). */
  epochs?: number;
  /** AdamW's learning rate (default 2e-4, constant). */
  lr?: number;
  /** AdamW's weight decay (default 0.05, Swin's). */
  weightDecay?: number;
  /** Half-side of the position constraint's window, in feature cells (default 1: 3 x 3 positions). */
  radius?: number;
  /** PatchCore's neighbourhood aggregation side (default 3). */
  patchSize?: number;
  /** PatchCore's per-layer pooling width (default 1024). */
  pretrainDims?: number;
  /** The patch features' width after pooling (default 256; PatchCore's is 1024). */
  targetDims?: number;
  /** Transformer width (default 96, Swin-T's), depth (4), heads (3), window (8 cells), MLP ratio (4). */
  dim?: number;
  depth?: number;
  heads?: number;
  window?: number;
  mlpRatio?: number;
  /** Focal loss gamma (default 2; 0 = cross-entropy). */
  gamma?: number;
  /** Synthetic (DRAEM-style) anomalies per normal training image in the pool (default 1). */
  syntheticPerNormal?: number;
  /** Per labelled anomaly, augmented copies (sampler.augmented) in the pool (default 2), besides the original. */
  augmentedPerAnomaly?: number;
  /** Per labelled anomaly, copy-pastes onto normal images (sampler.copyPaste) in the pool (default 4). */
  copyPastesPerAnomaly?: number;
  /** A folder of texture images for the synthetic anomalies (e.g. DTD); default: Perlin noise as texture. */
  textureRoot?: string;
  /** A folder of foreground masks for the copy-pastes (one per normal image); default: Otsu thresholding. */
  foregroundRoot?: string;
  /** Gaussian smoothing of the maps (default 4). */
  sigma?: number;
  /** libtorch intra-op threads (default: every core). */
  trainThreads?: number;
  /** Where the transformer trains: 'auto', 'cpu' or 'cuda'. */
  device?: Device;
}

function positiveNumber(v: unknown, name: string, fallback: number, allowZero = false): number {
  if (v === undefined) return fallback;
  if (!(is.number(v) && (allowZero ? v >= 0 : v > 0))) throw invalidType(allowZero ? 'number >= 0' : 'positive number', name, v);
  return v;
}

function aborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
}

/**
 * The bank of normal patch features kept per grid position (`[positions, images, dims]`, position-major) and the
 * position-constrained nearest-neighbour search over it: one exact k-NN index per bank position (the addon's
 * kernel), searched with every query position whose window contains it.
 */
export class PositionBank {
  readonly positions: number;
  private readonly indexes: (KnnIndex | null)[];

  constructor(
    /** [height * width, images, dims], position-major. */
    readonly bank: Float32Array,
    readonly images: number,
    readonly height: number,
    readonly width: number,
    readonly dims: number,
    readonly radius: number,
  ) {
    this.positions = height * width;
    if (!is.float32Array(bank) || bank.length !== this.positions * images * dims || images < 1) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected a position bank of ${this.positions} x images x ${dims} floats but received ${is.float32Array(bank) ? bank.length : typeof bank}`);
    }
    if (!is.integer(radius) || radius < 0) throw invalidType('integer >= 0', 'radius', radius);
    this.indexes = new Array(this.positions).fill(null);
  }

  /** The bank built from image-major patch embeddings `[images * positions, dims]` (patchEmbedding's layout). */
  static fromEmbeddings(embeddings: Float32Array, images: number, height: number, width: number, dims: number, radius: number): PositionBank {
    const positions = height * width;
    const bank = new Float32Array(embeddings.length);
    for (let i = 0; i < images; i++) {
      for (let p = 0; p < positions; p++) bank.set(embeddings.subarray((i * positions + p) * dims, (i * positions + p + 1) * dims), (p * images + i) * dims);
    }
    return new PositionBank(bank, images, height, width, dims, radius);
  }

  get stateBytes(): number {
    return this.bank.byteLength;
  }

  private index(q: number): KnnIndex {
    let ix = this.indexes[q];
    if (!ix) {
      ix = new KnnIndex(this.bank.subarray(q * this.images * this.dims, (q + 1) * this.images * this.dims), { dims: this.dims, device: 'cpu' });
      this.indexes[q] = ix;
    }
    return ix;
  }

  /**
   * Residuals f - nn(f) of n images' patch embeddings (`[n * positions, dims]`, image-major), nn(f) the nearest
   * bank entry within the window around f's position; `exclude[i]` >= 0 leaves bank image exclude[i] out for image
   * i (leave-one-out). Returns the residuals as NCHW maps `[n, dims, height, width]` and, per patch, the matched
   * (position, bank image) and the distance.
   */
  async residuals(
    embeddings: Float32Array,
    n: number,
    exclude: ArrayLike<number> | null,
    opts: { signal?: AbortSignal } = {},
  ): Promise<{ residuals: Float32Array; matchPosition: Int32Array; matchImage: Int32Array; distances: Float32Array }> {
    const { positions: P, dims: C, height: H, width: W, radius: r } = this;
    if (!is.float32Array(embeddings) || embeddings.length !== n * P * C) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected ${n} x ${P} patch features of ${C} dims (${n * P * C} floats) but received ${is.float32Array(embeddings) ? embeddings.length : typeof embeddings}`);
    }
    const leaveOut = exclude !== null && Array.from({ length: n }, (_, i) => exclude[i]).some((e) => e >= 0);
    if (leaveOut && this.images < 2) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected at least 2 normal training images for SemiREST (training images are matched leave-one-out) but received 1');
    const k = leaveOut ? 2 : 1;
    const best = new Float32Array(n * P).fill(Infinity);
    const matchPosition = new Int32Array(n * P).fill(-1);
    const matchImage = new Int32Array(n * P).fill(-1);
    // The query patches whose window holds bank position q: positions (y, x) within the radius, of every image.
    const cellsOf = (q: number): number[] => {
      const qy = Math.floor(q / W);
      const qx = q % W;
      const cells: number[] = [];
      for (let y = Math.max(0, qy - r); y <= Math.min(H - 1, qy + r); y++) for (let x = Math.max(0, qx - r); x <= Math.min(W - 1, qx + r); x++) cells.push(y * W + x);
      return cells;
    };
    const search = (q: number, cells: number[]): Promise<KnnResult> => {
      const queries = new Float32Array(n * cells.length * C);
      let row = 0;
      for (let i = 0; i < n; i++) for (const p of cells) queries.set(embeddings.subarray((i * P + p) * C, (i * P + p + 1) * C), row++ * C);
      return this.index(q).search(queries, k, { signal: opts.signal });
    };
    // Up to SEARCHES_IN_FLIGHT searches run at once (each is small: the calls' overhead dominates); their results
    // are merged in bank-position order, so the outcome does not depend on which finishes first.
    for (let q0 = 0; q0 < P; q0 += SEARCHES_IN_FLIGHT) {
      aborted(opts.signal);
      const qs = Array.from({ length: Math.min(SEARCHES_IN_FLIGHT, P - q0) }, (_, j) => q0 + j);
      const cellLists = qs.map(cellsOf);
      const results = await Promise.all(qs.map((q, j) => search(q, cellLists[j])));
      qs.forEach((q, j) => {
        const res = results[j];
        const cells = cellLists[j];
        let row = 0;
        for (let i = 0; i < n; i++) {
          const ex = exclude === null ? -1 : exclude[i];
          for (const p of cells) {
            const at = res.indices[row * k] === ex ? 1 : 0;
            if (at < k) {
              const d = res.distances[row * k + at];
              const slot = i * P + p;
              // Ties go to the bank position merged first (row-major), then to the smaller image index (k-NN's rule).
              if (d < best[slot]) {
                best[slot] = d;
                matchPosition[slot] = q;
                matchImage[slot] = res.indices[row * k + at];
              }
            }
            row++;
          }
        }
      });
    }
    const residuals = new Float32Array(n * C * P);
    for (let i = 0; i < n; i++) {
      for (let p = 0; p < P; p++) {
        const f = (i * P + p) * C;
        const b = (matchPosition[i * P + p] * this.images + matchImage[i * P + p]) * C;
        for (let c = 0; c < C; c++) residuals[(i * C + c) * P + p] = embeddings[f + c] - this.bank[b + c];
      }
    }
    return { residuals, matchPosition, matchImage, distances: best };
  }
}

/** Block labels [gh, gw] of a crop-sized mask: a block is anomalous when any of its pixels is. */
export function blockLabels(mask: Float32Array, side: number, gh: number, gw: number): Float32Array {
  const out = new Float32Array(gh * gw);
  for (let by = 0; by < gh; by++) {
    const y0 = Math.floor((by * side) / gh);
    const y1 = Math.floor(((by + 1) * side) / gh);
    for (let bx = 0; bx < gw; bx++) {
      const x0 = Math.floor((bx * side) / gw);
      const x1 = Math.floor(((bx + 1) * side) / gw);
      let any = 0;
      for (let y = y0; y < y1 && !any; y++) for (let x = x0; x < x1; x++) if (mask[y * side + x] > 0.5) any = 1;
      out[by * gw + bx] = any;
    }
  }
  return out;
}

interface PoolItem {
  image: Float32Array;
  mask: Float32Array;
  /** The normal training image it was drawn on (matched leave-one-out), or -1. */
  exclude: number;
}

export class SemiRest extends TrainedFeatureDetector implements Detector {
  readonly name = 'semirest';
  protected readonly kind = 'semirest';
  protected readonly label = 'SemiREST';
  readonly usesLabelledAnomalies = true;
  readonly epochs: number;
  readonly lr: number;
  readonly weightDecay: number;
  readonly radius: number;
  readonly patchSize: number;
  readonly pretrainDims: number;
  readonly targetDims: number;
  readonly arch: { dim: number; depth: number; heads: number; window: number; mlpRatio: number };
  readonly gamma: number;
  readonly syntheticPerNormal: number;
  readonly augmentedPerAnomaly: number;
  readonly copyPastesPerAnomaly: number;
  readonly textureRoot?: string;
  readonly foregroundRoot?: string;
  readonly sigma: number;
  readonly trainThreads: number;
  readonly trainDevice: 'cpu' | 'cuda';
  private bank: PositionBank | null = null;
  /** The bank a checkpoint holds, read (and checked) before its weights are restored. */
  private loadedBank: PositionBank | null = null;

  constructor(params: SemiRestParams = {}) {
    super();
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const p = resolveBackboneParams(params, ['layer2', 'layer3']);
    if (params.imageSize === undefined) p.imageSize = 256;
    if (params.cropSize === undefined) p.cropSize = Math.min(256, p.imageSize);
    if (params.batchSize === undefined) p.batchSize = 16;
    this.extractor = new FeatureExtractor(p);
    this.epochs = optionalInt(params.epochs, 'epochs', 1, 1_000_000, 50);
    this.lr = positiveNumber(params.lr, 'lr', 2e-4);
    this.weightDecay = positiveNumber(params.weightDecay, 'weightDecay', 0.05, true);
    this.radius = optionalInt(params.radius, 'radius', 0, 64, 1);
    this.patchSize = optionalInt(params.patchSize, 'patchSize', 1, 63, 3);
    this.pretrainDims = optionalInt(params.pretrainDims, 'pretrainDims', 1, 1 << 20, 1024);
    this.targetDims = optionalInt(params.targetDims, 'targetDims', 1, 1 << 16, 256);
    const dim = optionalInt(params.dim, 'dim', 1, 4096, 96);
    const heads = optionalInt(params.heads, 'heads', 1, 64, 3);
    if (dim % heads !== 0) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Expected SemiREST's dim (${dim}) to be a multiple of heads (${heads})`);
    this.arch = {
      dim,
      depth: optionalInt(params.depth, 'depth', 1, 64, 4),
      heads,
      window: optionalInt(params.window, 'window', 1, 64, 8),
      mlpRatio: optionalInt(params.mlpRatio, 'mlpRatio', 1, 16, 4),
    };
    this.gamma = positiveNumber(params.gamma, 'gamma', 2, true);
    this.syntheticPerNormal = optionalInt(params.syntheticPerNormal, 'syntheticPerNormal', 0, 64, 1);
    this.augmentedPerAnomaly = optionalInt(params.augmentedPerAnomaly, 'augmentedPerAnomaly', 0, 1024, 2);
    this.copyPastesPerAnomaly = optionalInt(params.copyPastesPerAnomaly, 'copyPastesPerAnomaly', 0, 1024, 4);
    if (params.textureRoot !== undefined && !(is.string(params.textureRoot) && params.textureRoot !== '')) throw invalidType('a folder path', 'textureRoot', params.textureRoot);
    this.textureRoot = params.textureRoot;
    if (params.foregroundRoot !== undefined && !(is.string(params.foregroundRoot) && params.foregroundRoot !== '')) throw invalidType('a folder path', 'foregroundRoot', params.foregroundRoot);
    this.foregroundRoot = params.foregroundRoot;
    this.sigma = optionalSigma(params.sigma);
    this.trainThreads = optionalInt(params.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(params.device));
  }

  /** The fitted bank (position-major) and grid. */
  get positionBank(): PositionBank | null {
    return this.bank;
  }

  /** The transformer's window after fitting (at most the grid side): the one the model was made with. */
  private get window(): number {
    return this.model ? (this.model.config.extra?.arch ?? [])[3] ?? 0 : 0;
  }

  private archFor(window: number): number[] {
    const a = this.arch;
    return [a.dim, a.depth, a.heads, window, a.mlpRatio];
  }

  protected createModel(channels: number[], extra: Record<string, number[]>): TrainModel {
    return this.newTrainModel('semirest', channels, extra, { weightDecay: this.weightDecay, beta1: 0.9, beta2: 0.999 });
  }

  private newModel(window: number): TrainModel {
    return this.createModel([this.targetDims], { arch: this.archFor(window), gamma: [this.gamma] });
  }

  private async embed(features: Record<string, FeatureMap>, n: number, signal?: AbortSignal): ReturnType<typeof patchEmbedding> {
    const layers = this.extractor.params.layers.map((l) => layerOf(features, l));
    return patchEmbedding(layers, { n, patchSize: this.patchSize, pretrainDims: this.pretrainDims, targetDims: this.targetDims, signal });
  }

  /** Patch embeddings of [0, 1] CHW crops (ImageNet-normalised here, as the image pipeline does). */
  private async embedImages(images: Float32Array[], signal?: AbortSignal): Promise<{ embeddings: Float32Array; height: number; width: number; backboneMs: number }> {
    const backbone = await this.extractor.load();
    const s = this.extractor.params.cropSize;
    const plane = s * s;
    const { mean, std } = normalisationStats('imagenet');
    const batch = new Float32Array(images.length * 3 * plane);
    images.forEach((img, i) => {
      for (let c = 0; c < 3; c++) {
        const o = (i * 3 + c) * plane;
        for (let j = 0; j < plane; j++) batch[o + j] = (img[c * plane + j] - mean[c]) / std[c];
      }
    });
    aborted(signal);
    const t = process.hrtime.bigint();
    const features = await backbone.extract(batch, images.length, s, s);
    const backboneMs = elapsedMs(t);
    const e = await this.embed(features, images.length, signal);
    return { embeddings: e.embeddings, height: e.height, width: e.width, backboneMs };
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const all = requireSamples(train, 'train');
    const t0 = process.hrtime.bigint();
    const { imageSize, cropSize: s, batchSize, seed } = this.extractor.params;
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    // Everything the user handed in is checked before anything trains: labelled anomalies with masks, the
    // foreground folder (the sampler), the texture folder.
    const sampler = await LabelledAnomalySampler.create(all, { method: 'SemiREST', imageSize, cropSize: s, foregroundRoot: this.foregroundRoot, memoryBudgetBytes: budget, signal: opts.signal });
    const synth = await AnomalySynthesiser.create({ size: s, textureRoot: this.textureRoot, textureArg: '--texture-root (textureRoot)', cleanProbability: 0, rotateProbability: 0 });
    const normals = sampler.normals;
    const n = normals.length;
    if (n < 2) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected at least 2 normal training images for SemiREST (training images are matched leave-one-out) but received ${n}`);
    const fitIndex = proceed ? this.fits : 0;
    const previous = proceed ? (this.model as TrainModel) : null;
    const previousWindow = this.window;
    // Unfitted until this fit ends (a stopped or diverged fit leaves no model to checkpoint).
    this.model = null;
    this.bank = null;
    this.fits = 0;
    this.stats = null;

    // 1. The bank: every normal image's patch features.
    let bankEmbeddings: Float32Array | null = null;
    let gh = 0;
    let gw = 0;
    let done = 0;
    const total = n * 2;
    for (let b = 0; b < n; b += batchSize) {
      aborted(opts.signal);
      const e = await this.embedImages(normals.slice(b, b + batchSize).map((x) => x.image), opts.signal);
      if (!bankEmbeddings) {
        gh = e.height;
        gw = e.width;
        requireBudget(`SemiREST's bank (${n} images x ${gh * gw} patches x ${this.targetDims} dims)`, 4 * n * gh * gw * this.targetDims, budget, budget);
        bankEmbeddings = new Float32Array(n * gh * gw * this.targetDims);
      }
      bankEmbeddings.set(e.embeddings, b * gh * gw * this.targetDims);
      done += Math.min(batchSize, n - b);
      opts.onProgress?.(done, total, 'bank');
    }
    const P = gh * gw;
    const C = this.targetDims;
    const bank = PositionBank.fromEmbeddings(bankEmbeddings as Float32Array, n, gh, gw, C, this.radius);
    bankEmbeddings = null;

    // 2. The pool, drawn once from the seed: normals, synthetic anomalies on them, the real anomalies' variants.
    const root = new Random(seed);
    const pool: PoolItem[] = [];
    normals.forEach((x, i) => pool.push({ image: x.image, mask: x.mask, exclude: i }));
    const byPath = new Map<string, number>();
    normals.forEach((x, i) => byPath.set(x.source, i));
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < this.syntheticPerNormal; j++) {
        const o = await synth.sample(normals[i].image, root.fork('synthesis', fitIndex, i, j));
        pool.push({ image: o.augmented, mask: o.mask, exclude: i });
      }
    }
    sampler.anomalies.forEach((a: LabelledImage, i: number) => {
      pool.push({ image: a.image, mask: a.mask, exclude: -1 });
      for (let j = 0; j < this.augmentedPerAnomaly; j++) {
        const o = sampler.augmented(i, root.fork('augmented', fitIndex, i, j));
        pool.push({ image: o.image, mask: o.mask, exclude: -1 });
      }
      for (let j = 0; j < this.copyPastesPerAnomaly; j++) {
        const o = sampler.copyPaste(i, root.fork('copy-paste', fitIndex, i, j));
        const on = o.source.lastIndexOf(' pasted on ');
        const target = on >= 0 ? byPath.get(o.source.slice(on + ' pasted on '.length)) : undefined;
        pool.push({ image: o.image, mask: o.mask, exclude: target ?? -1 });
      }
    });
    const m = pool.length;
    requireBudget(`SemiREST's training residuals (${m} maps x ${P} patches x ${C} dims)`, 4 * m * P * (C + 1) + bank.stateBytes, budget, budget);
    const residuals = new Float32Array(m * C * P);
    const labels = new Float32Array(m * P);
    const totalWithPool = n + m;
    for (let b = 0; b < m; b += batchSize) {
      aborted(opts.signal);
      const items = pool.slice(b, b + batchSize);
      const e = await this.embedImages(items.map((x) => x.image), opts.signal);
      const r = await bank.residuals(e.embeddings, items.length, items.map((x) => x.exclude), { signal: opts.signal });
      residuals.set(r.residuals, b * C * P);
      items.forEach((x, j) => labels.set(blockLabels(x.mask, s, gh, gw), (b + j) * P));
      opts.onProgress?.(n + b + items.length, totalWithPool, 'residuals');
    }

    // 3. The transformer.
    const window = Math.min(this.arch.window, gh, gw);
    if (previous && previousWindow !== window) {
      throw imiadError('Error', 'ERR_IMIAD_DIMS', `Expected SemiREST's ${previousWindow}-cell window as in the earlier fit() but this grid (${gh}x${gw}) gives ${window}`);
    }
    const model = previous ?? this.newModel(window);
    const shuffle = root.fork(fitIndex === 0 ? 'shuffle' : `shuffle-${fitIndex}`);
    const stepsPerEpoch = Math.ceil(m / batchSize);
    const totalSteps = stepsPerEpoch * this.epochs;
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    for (let epoch = 0; epoch < this.epochs; epoch++) {
      const order = shuffle.shuffle(Array.from({ length: m }, (_, i) => i));
      let sum = 0;
      let count = 0;
      for (let b = 0; b < m; b += batchSize) {
        aborted(opts.signal);
        const idx = order.slice(b, b + batchSize);
        const r = new Float32Array(idx.length * C * P);
        const y = new Float32Array(idx.length * P);
        idx.forEach((i, j) => {
          r.set(residuals.subarray(i * C * P, (i + 1) * C * P), j * C * P);
          y.set(labels.subarray(i * P, (i + 1) * P), j * P);
        });
        const loss = await model.step(null, [{ data: r, shape: [idx.length, C, gh, gw] }, { data: y, shape: [idx.length, 1, gh, gw] }], { signal: opts.signal });
        step += 1;
        if (!Number.isFinite(loss)) {
          throw imiadError('Error', 'ERR_IMIAD_TRAINING_DIVERGED', `SemiREST's training loss became ${loss} in epoch ${epoch + 1}, step ${step - epoch * stepsPerEpoch} (lower --lr); the model was not kept`);
        }
        sum += loss;
        count += 1;
        const seconds = elapsedMs(tTrain) / 1000;
        opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${this.epochs} loss ${(sum / count).toFixed(4)} ${(seconds > 0 ? (step * batchSize) / seconds : 0).toFixed(1)} maps/s`);
      }
      losses.push(sum / count);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    this.setModel(model);
    this.bank = bank;
    this.fits = fitIndex + 1;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: (this.epochs * m) / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    const model = this.fitted();
    const bank = this.bank as PositionBank;
    const list = requireSamples(samples, 'samples');
    const crop = this.extractor.params.cropSize;
    const { height: gh, width: gw, dims: C } = bank;
    const P = gh * gw;
    const scores = new Float64Array(list.length);
    const maps: AnomalyMap[] = [];
    const timing: Timing = { backboneMs: [], methodMs: [] };
    for await (const batch of this.extractor.run(list, 1, opts)) {
      const t = process.hrtime.bigint();
      const e = await this.embed(batch.features, batch.n, opts.signal);
      if (e.height !== gh || e.width !== gw) {
        throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected a ${gh}x${gw} patch grid as in fit() but received ${e.height}x${e.width} (imageSize ${this.extractor.params.imageSize}, cropSize ${crop})`);
      }
      const r = await bank.residuals(e.embeddings, batch.n, null, { signal: opts.signal });
      const grid = await model.maps(null, [{ data: r.residuals, shape: [batch.n, C, gh, gw] }], gh, { signal: opts.signal });
      const out = await scoreGridsToMaps(grid, batch.n, gh, gw, batch.geometries, crop, { sigma: this.sigma, signal: opts.signal });
      for (let i = 0; i < batch.n; i++) {
        let max = -Infinity;
        for (let p = 0; p < P; p++) if (grid[i * P + p] > max) max = grid[i * P + p];
        scores[batch.start + i] = max;
        maps.push(out.maps[i]);
      }
      const ms = elapsedMs(t);
      for (let i = 0; i < batch.n; i++) {
        timing.backboneMs.push(batch.backboneMs / batch.n);
        timing.methodMs.push(ms / batch.n);
      }
      opts.onProgress?.(batch.start + batch.n, list.length);
    }
    this.timing = timing;
    return { scores, maps };
  }

  /** The transformer's weights and AdamW's state, and the bank, for a checkpoint. */
  override saveState(): DetectorState {
    const state = super.saveState();
    const bank = this.bank as PositionBank;
    return { config: state.config, arrays: { ...state.arrays, bank: bank.bank } };
  }

  protected override stateConfig(): Record<string, unknown> {
    const bank = this.bank as PositionBank;
    return { dims: bank.dims, images: bank.images, grid: { height: bank.height, width: bank.width }, radius: bank.radius };
  }

  /** Checks the checkpoint's transformer and bank against this detector's parameters and reads the bank. */
  protected override modelFromCheckpoint(state: DetectorState): TrainModel {
    const dims = configInt(state, 'dims');
    if (dims !== this.targetDims) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected SemiREST patch features of ${this.targetDims} dims but the checkpoint's have ${dims}`);
    const arch = configExtra(state).arch ?? [];
    const a = this.arch;
    if (arch.length !== 5 || arch[0] !== a.dim || arch[1] !== a.depth || arch[2] !== a.heads || !(arch[3] >= 1 && arch[3] <= a.window) || arch[4] !== a.mlpRatio) {
      throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected a SemiREST transformer of dim ${a.dim}, depth ${a.depth}, heads ${a.heads}, window <= ${a.window}, MLP ratio ${a.mlpRatio} but the checkpoint's is ${arch.join(', ')}`);
    }
    const radius = configInt(state, 'radius');
    if (radius !== this.radius) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected a SemiREST bank matched within radius ${this.radius} but the checkpoint's was fitted with radius ${radius}`);
    const images = configInt(state, 'images');
    const grid = configGrid(state);
    const bank = stateArray(state, 'bank', Float32Array, grid.height * grid.width * images * dims);
    this.loadedBank = new PositionBank(bank, images, grid.height, grid.width, dims, radius);
    return this.newModel(arch[3]);
  }

  protected override restoreConfig(): void {
    this.bank = this.loadedBank;
    this.loadedBank = null;
  }

  /** The network's state and the bank (0 before a fit). */
  override stateBytes(): number {
    return super.stateBytes() + (this.model && this.bank ? this.bank.stateBytes : 0);
  }
}
