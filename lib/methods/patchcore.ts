/**
 * PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022), with the defaults of
 * the reference implementation amazon-science/patchcore-inspection:
 * - patch features: layer2 + layer3, 3 x 3 neighbourhood aggregation (Unfold, zero padding), layer3 resized
 *   bilinearly to layer2's grid, each layer pooled to pretrain_embed_dimension 1024 and the concatenation to
 *   target_embed_dimension 1024 (adaptive average pooling) — bindings/filters.ts patchEmbedding;
 * - memory bank: greedy coreset of 10 % of the training patches, distances on a seeded random projection to 128
 *   dims (the reference's ApproximateGreedyCoresetSampler; imiad's greedy step is exact on the projection);
 * - patch score: distance to the nearest bank patch, squared as faiss' IndexFlatL2 returns it (the reference's
 *   NearestNeighbourScorer with n_nearest_neighbours = 1); image score = the maximum patch score;
 * - anomaly map: the patch score grid upsampled bilinearly to the crop (align_corners=False) and smoothed with a
 *   Gaussian of sigma 4 (the reference's RescaleSegmentor), then mapped back to the original image.
 * Optional importance re-weighting of the image score over b nearest neighbours (PatchCore paper Eq. 7, IM-IAD
 * Eq. 3 / Table XII): s = (1 - exp||m_test,* - m*|| / sum_{m in N_b(m*)} exp||m_test,* - m||) * s*, where m* is the
 * bank patch nearest to the test patch m_test,* with the largest score and N_b(m*) the b bank patches nearest to
 * m* (m* itself first). b = 1 means no re-weighting, as in Table XII.
 */
import { greedyCoreset } from '../../bindings/coreset';
import { imiadError, invalidType } from '../../bindings/errors';
import { patchEmbedding } from '../../bindings/filters';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { KnnIndex } from '../../bindings/knn';
import { configGrid, configInt, stateArray } from './checkpoint';
import type { Sample } from '../datasets/types';
import {
  type BackboneParams,
  continuesTraining,
  elapsedMs,
  FeatureExtractor,
  layerOf,
  optionalInt,
  optionalSigma,
  requireBudget,
  requireFitted,
  requireSamples,
  resolveBackboneParams,
  scoreGridsToMaps,
} from './features';
import type { AnomalyMap, Detector, DetectorState, FitOptions, Prediction, RunOptions, Timing, TrainSample } from './types';

export interface PatchCoreParams extends BackboneParams {
  /** Fraction of training patches kept in the memory bank (default 0.1; 1 keeps all, as the IdentitySampler). */
  coreset?: number;
  /** Random projection width of the coreset's distances (default 128; 0 = exact on the full features). */
  projectionDims?: number;
  /** Neighbourhood side of the aggregation (default 3). */
  patchSize?: number;
  /** pretrain_embed_dimension (default 1024). */
  pretrainDims?: number;
  /** target_embed_dimension (default 1024). */
  targetDims?: number;
  /** b of the importance re-weighting: 1 (default) = none; the paper's ablation uses 1, 2, 3, 6, 9. */
  reweight?: number;
  /** Gaussian smoothing of the maps (default 4). */
  sigma?: number;
  /**
   * Continual learning: each fit() appends its coreset to the bank instead of replacing it (IM-IAD's "memory bank
   * accumulated over the tasks"), as fit(..., { continueTraining: true }) does for one call. Default false.
   */
  accumulate?: boolean;
}

/** The per-image split of PatchCore's prediction time (the benchmark's columns). */
export interface PatchCoreBreakdown {
  decodeMs: number[];
  backboneMs: number[];
  /** Patch embedding (aggregation and pooling). */
  embedMs: number[];
  knnMs: number[];
  /** Upsampling, blur and the inverse mapping to the original size. */
  postMs: number[];
}

export interface PatchScores {
  /** [n, positions] patch scores (squared nearest-neighbour distances). */
  patchScores: Float32Array;
  /** One per image: the maximum patch score, re-weighted when b > 1. */
  imageScores: Float64Array;
}

/** Softmax-stable re-weighting factor 1 - exp(d0) / sum_j exp(d_j), with d0 among the d_j. */
export function reweightFactor(d0: number, distances: ArrayLike<number>): number {
  let max = d0;
  for (let j = 0; j < distances.length; j++) if (distances[j] > max) max = distances[j];
  let sum = 0;
  for (let j = 0; j < distances.length; j++) sum += Math.exp(distances[j] - max);
  return 1 - Math.exp(d0 - max) / sum;
}

/** The scoring half of PatchCore: a memory bank (one contiguous [rows, dims] array) and its exact k-NN index. */
export class PatchCoreScorer {
  readonly rows: number;
  private readonly index: KnnIndex;

  constructor(
    readonly bank: Float32Array,
    readonly dims: number,
    readonly reweight = 1,
  ) {
    if (!is.integer(reweight) || reweight < 1 || reweight > 1024) throw invalidType('integer between 1 and 1024', 'reweight', reweight);
    this.index = new KnnIndex(bank, { dims });
    this.rows = this.index.rows;
  }

  get stateBytes(): number {
    return this.bank.byteLength + this.index.stateBytes;
  }

  /** Scores n images' patch embeddings ([n * positions, dims] rows, image-major). */
  async score(embeddings: Float32Array, n: number, positions: number, opts: { signal?: AbortSignal } = {}): Promise<PatchScores> {
    if (!is.float32Array(embeddings)) throw invalidType('Float32Array', 'embeddings', embeddings);
    if (embeddings.length !== n * positions * this.dims) {
      throw imiadError(
        'RangeError',
        'ERR_IMIAD_DIMS',
        `Expected length of embeddings to be n * positions * ${this.dims} (${n * positions * this.dims}) but received ${embeddings.length} of type number: ` +
          `the patch features do not match the memory bank's ${this.dims} dims`,
      );
    }
    const { indices, distances } = await this.index.search(embeddings, 1, opts);
    const patchScores = new Float32Array(n * positions);
    for (let i = 0; i < patchScores.length; i++) patchScores[i] = distances[i] * distances[i];
    const imageScores = new Float64Array(n);
    const b = Math.min(this.reweight, this.rows);
    for (let img = 0; img < n; img++) {
      let best = img * positions;
      for (let p = best + 1; p < (img + 1) * positions; p++) if (patchScores[p] > patchScores[best]) best = p;
      let s = patchScores[best];
      if (b > 1) {
        const star = indices[best];
        const support = await this.index.search(this.bank.subarray(star * this.dims, (star + 1) * this.dims), b, opts);
        const query = embeddings.subarray(best * this.dims, (best + 1) * this.dims);
        const d = new Float64Array(b);
        for (let j = 0; j < b; j++) d[j] = euclidean(query, this.bank, support.indices[j] * this.dims, this.dims);
        s *= reweightFactor(euclidean(query, this.bank, star * this.dims, this.dims), d);
      }
      imageScores[img] = s;
    }
    return { patchScores, imageScores };
  }
}

function euclidean(q: Float32Array, bank: Float32Array, offset: number, dims: number): number {
  let s = 0;
  for (let k = 0; k < dims; k++) {
    const t = q[k] - bank[offset + k];
    s += t * t;
  }
  return Math.sqrt(s);
}

function fraction(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!is.number(value) || !(value > 0 && value <= 1)) throw invalidType('number in (0, 1]', name, value);
  return value;
}

export class PatchCore implements Detector {
  readonly name = 'patchcore';
  readonly usesLabelledAnomalies = false;
  readonly coreset: number;
  readonly projectionDims: number;
  readonly patchSize: number;
  readonly pretrainDims: number;
  readonly targetDims: number;
  readonly reweight: number;
  readonly sigma: number;
  readonly accumulate: boolean;
  private readonly extractor: FeatureExtractor;
  private scorer: PatchCoreScorer | null = null;
  private grid: { height: number; width: number } | null = null;
  private timing: Timing = { backboneMs: [], methodMs: [] };
  private breakdown: PatchCoreBreakdown = { decodeMs: [], backboneMs: [], embedMs: [], knnMs: [], postMs: [] };

  constructor(params: PatchCoreParams = {}) {
    const p = resolveBackboneParams(params, ['layer2', 'layer3']);
    this.extractor = new FeatureExtractor(p);
    this.coreset = fraction(params.coreset, 'coreset', 0.1);
    this.projectionDims = optionalInt(params.projectionDims, 'projectionDims', 0, 65536, 128);
    this.patchSize = optionalInt(params.patchSize, 'patchSize', 1, 63, 3);
    this.pretrainDims = optionalInt(params.pretrainDims, 'pretrainDims', 1, 1 << 20, 1024);
    this.targetDims = optionalInt(params.targetDims, 'targetDims', 1, 1 << 20, 1024);
    this.reweight = optionalInt(params.reweight, 'reweight', 1, 1024, 1);
    this.sigma = optionalSigma(params.sigma);
    if (params.accumulate !== undefined && typeof params.accumulate !== 'boolean') throw invalidType('boolean', 'accumulate', params.accumulate);
    this.accumulate = params.accumulate ?? false;
  }

  get params(): FeatureExtractor['params'] {
    return this.extractor.params;
  }

  /** The fitted memory bank ([rows, dims], one contiguous array). */
  get memoryBank(): { bank: Float32Array; rows: number; dims: number } | null {
    return this.scorer ? { bank: this.scorer.bank, rows: this.scorer.rows, dims: this.scorer.dims } : null;
  }

  private async embed(features: Parameters<typeof layerOf>[0], n: number, signal?: AbortSignal): ReturnType<typeof patchEmbedding> {
    const layers = this.extractor.params.layers.map((l) => layerOf(features, l));
    return patchEmbedding(layers, { n, patchSize: this.patchSize, pretrainDims: this.pretrainDims, targetDims: this.targetDims, signal });
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for PatchCore but received none');
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    let features: Float32Array | null = null;
    let perImage = 0;
    let grid: { height: number; width: number } | null = null;
    let done = 0;
    for await (const batch of this.extractor.run(samples, this.extractor.params.batchSize, opts)) {
      const e = await this.embed(batch.features, batch.n, opts.signal);
      if (!features) {
        grid = { height: e.height, width: e.width };
        perImage = e.height * e.width * e.dims;
        const needed = 4 * perImage * samples.length;
        requireBudget(
          `PatchCore's patch features (${samples.length} images x ${e.height * e.width} patches x ${e.dims} dims)`,
          needed,
          budget,
          budget,
        );
        features = new Float32Array(perImage * samples.length);
      }
      features.set(e.embeddings, batch.start * perImage);
      done += batch.n;
      opts.onProgress?.(done, samples.length);
    }
    if (!features || !grid) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for PatchCore but received none');
    const dims = this.targetDims;
    const rows = features.length / dims;
    let bank: Float32Array;
    if (this.coreset >= 1) {
      bank = features;
    } else {
      const count = Math.max(1, Math.floor(rows * this.coreset));
      const selected = await greedyCoreset(features, {
        dims,
        count,
        projectionDims: this.projectionDims,
        seed: this.extractor.params.seed,
        signal: opts.signal,
        onProgress: opts.onProgress,
      });
      bank = new Float32Array(count * dims);
      for (let i = 0; i < count; i++) bank.set(features.subarray(selected[i] * dims, (selected[i] + 1) * dims), i * dims);
    }
    const previous = this.accumulate || continuesTraining(opts) ? this.scorer : null;
    if (previous) {
      if (previous.dims !== dims) throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected ${previous.dims}-dim patch features as in the earlier fit() but received ${dims}`);
      requireBudget(`PatchCore's memory bank (${previous.rows + bank.length / dims} patches x ${dims} dims)`, previous.bank.byteLength + bank.byteLength, budget, budget);
      const joined = new Float32Array(previous.bank.length + bank.length);
      joined.set(previous.bank);
      joined.set(bank, previous.bank.length);
      bank = joined;
    }
    requireBudget(`PatchCore's memory bank (${bank.length / dims} patches x ${dims} dims)`, bank.byteLength, budget, budget);
    this.scorer = new PatchCoreScorer(bank, dims, this.reweight);
    this.grid = grid;
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.scorer !== null, 'PatchCore');
    const list = requireSamples(samples, 'samples');
    const scorer = this.scorer as PatchCoreScorer;
    const scores = new Float64Array(list.length);
    const maps: AnomalyMap[] = [];
    const timing: Timing = { backboneMs: [], methodMs: [] };
    const bd: PatchCoreBreakdown = { decodeMs: [], backboneMs: [], embedMs: [], knnMs: [], postMs: [] };
    const crop = this.extractor.params.cropSize;
    for await (const batch of this.extractor.run(list, 1, opts)) {
      let t = process.hrtime.bigint();
      const e = await this.embed(batch.features, batch.n, opts.signal);
      const embedMs = elapsedMs(t);
      if (this.grid && (e.height !== this.grid.height || e.width !== this.grid.width)) {
        throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected a ${this.grid.height}x${this.grid.width} patch grid as in fit() but received ${e.height}x${e.width} (imageSize ${this.extractor.params.imageSize}, cropSize ${crop})`);
      }
      t = process.hrtime.bigint();
      const s = await scorer.score(e.embeddings, batch.n, e.height * e.width, { signal: opts.signal });
      const knnMs = elapsedMs(t);
      t = process.hrtime.bigint();
      const { maps: m } = await scoreGridsToMaps(s.patchScores, batch.n, e.height, e.width, batch.geometries, crop, { sigma: this.sigma, signal: opts.signal });
      const postMs = elapsedMs(t);
      for (let i = 0; i < batch.n; i++) {
        scores[batch.start + i] = s.imageScores[i];
        maps.push(m[i]);
        const per = (x: number): number => x / batch.n;
        timing.backboneMs.push(per(batch.backboneMs));
        timing.methodMs.push(per(embedMs + knnMs + postMs));
        bd.decodeMs.push(per(batch.decodeMs));
        bd.backboneMs.push(per(batch.backboneMs));
        bd.embedMs.push(per(embedMs));
        bd.knnMs.push(per(knnMs));
        bd.postMs.push(per(postMs));
      }
      opts.onProgress?.(batch.start + batch.n, list.length);
    }
    this.timing = timing;
    this.breakdown = bd;
    return { scores, maps };
  }

  /** The memory bank and grid, for a checkpoint. */
  saveState(): DetectorState {
    requireFitted(this.scorer !== null, 'PatchCore');
    const s = this.scorer as PatchCoreScorer;
    return { config: { dims: s.dims, grid: this.grid }, arrays: { bank: s.bank } };
  }

  async loadState(state: DetectorState): Promise<void> {
    const dims = configInt(state, 'dims');
    if (dims !== this.targetDims) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected a memory bank of ${this.targetDims} dims but the checkpoint's has ${dims}`);
    const bank = stateArray(state, 'bank', Float32Array);
    if (bank.length === 0 || bank.length % dims !== 0) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected the memory bank's length to be a multiple of ${dims}`);
    this.grid = configGrid(state);
    this.scorer = new PatchCoreScorer(bank, dims, this.reweight);
  }

  stateBytes(): number {
    return this.scorer ? this.scorer.stateBytes : 0;
  }

  lastTiming(): Timing {
    return this.timing;
  }

  lastBreakdown(): PatchCoreBreakdown {
    return this.breakdown;
  }

  async dispose(): Promise<void> {
    await this.extractor.dispose();
  }
}
