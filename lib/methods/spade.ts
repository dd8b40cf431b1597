/**
 * SPADE (Cohen and Hoshen, "Sub-Image Anomaly Detection with Deep Pyramid Correspondences", 2020), as the
 * reference re-implementation SPADE-pytorch computes it:
 * - image score: the mean Euclidean distance of the test image's pooled feature (global average of the last listed
 *   layer, the network's avgpool) to its k nearest training images' pooled features, k = 50 (the paper's K) capped
 *   by the number of training images;
 * - pixel scores: per pyramid layer (by default layer1, layer2, layer3), every test position's distance to its
 *   nearest neighbour among all positions of those k training images' feature maps (kappa = 1), upsampled
 *   bilinearly to the crop; the layers' maps averaged, then a Gaussian blur of sigma 4.
 * Layers: every listed layer but the last forms the pyramid; the last is pooled. With a single layer it serves as
 * both.
 * Continual setting (`accumulate`): fit(..., { continueTraining: true }) appends the new images' pooled features and
 * feature maps to the memory bank, the same bank as a fit on every image so far (features are per image).
 */
import { imiadError, invalidType } from '../../bindings/errors';
import { resizeBilinear } from '../../bindings/filters';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { configInt, configValue, stateArray } from './checkpoint';
import { KnnIndex, knnSearch } from '../../bindings/knn';
import type { FeatureMap } from '../backbone/session';
import type { Sample } from '../datasets/types';
import {
  type BackboneParams,
  continuesTraining,
  elapsedMs,
  FeatureExtractor,
  layerOf,
  optionalSigma,
  requireBudget,
  requireFitted,
  requireSamples,
  resolveBackboneParams,
  scoreGridsToMaps,
} from './features';
import type { AnomalyMap, Detector, DetectorState, FitOptions, Prediction, RunOptions, Timing, TrainSample } from './types';

export interface SpadeParams extends BackboneParams {
  /** Nearest training images (default 50, capped by the training set). */
  k?: number;
  /** Gaussian smoothing of the maps (default 4). */
  sigma?: number;
}

/** Global average of each image's channels: [n, C]. */
export function globalAverage(f: FeatureMap, n: number): Float32Array {
  const out = new Float32Array(n * f.channels);
  const plane = f.height * f.width;
  for (let i = 0; i < n * f.channels; i++) {
    let s = 0;
    const base = i * plane;
    for (let p = 0; p < plane; p++) s += f.data[base + p];
    out[i] = s / plane;
  }
  return out;
}

/** NCHW -> [n, H * W, C] rows (one row per position), written at image `offset` of `out`. */
function toRows(f: FeatureMap, n: number, out: Float32Array, offset: number): void {
  const plane = f.height * f.width;
  const c = f.channels;
  for (let img = 0; img < n; img++) {
    const src = img * c * plane;
    const dst = (offset + img) * plane * c;
    for (let ch = 0; ch < c; ch++) {
      const s = src + ch * plane;
      for (let p = 0; p < plane; p++) out[dst + p * c + ch] = f.data[s + p];
    }
  }
}

interface PyramidLayer {
  name: string;
  channels: number;
  height: number;
  width: number;
  /** [N, H * W, C] of every training image. */
  rows: Float32Array;
}

export class Spade implements Detector {
  readonly name = 'spade';
  readonly usesLabelledAnomalies = false;
  readonly k: number;
  readonly sigma: number;
  private readonly extractor: FeatureExtractor;
  private pooled: { data: Float32Array; dims: number; index: KnnIndex } | null = null;
  private pyramid: PyramidLayer[] = [];
  private trainCount = 0;
  private timing: Timing = { backboneMs: [], methodMs: [] };

  constructor(params: SpadeParams = {}) {
    this.extractor = new FeatureExtractor(resolveBackboneParams(params, ['layer1', 'layer2', 'layer3', 'layer4']));
    if (params.k !== undefined && !(is.integer(params.k) && params.k >= 1 && params.k <= 1 << 20)) throw invalidType('integer between 1 and 1048576', 'k', params.k);
    this.k = params.k ?? 50;
    this.sigma = optionalSigma(params.sigma);
  }

  private split(): { pyramid: string[]; pooled: string } {
    const layers = this.extractor.params.layers;
    return { pyramid: layers.length > 1 ? layers.slice(0, -1) : layers, pooled: layers[layers.length - 1] };
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.pooled !== null;
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for SPADE but received none');
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    const names = this.split();
    const n = samples.length;
    let pooled: Float32Array | null = null;
    let pooledDims = 0;
    const pyramid: PyramidLayer[] = [];
    let done = 0;
    for await (const batch of this.extractor.run(samples, this.extractor.params.batchSize, opts)) {
      const p = layerOf(batch.features, names.pooled);
      if (!pooled) {
        pooledDims = p.channels;
        let bytes = 4 * n * pooledDims;
        for (const name of names.pyramid) {
          const f = layerOf(batch.features, name);
          bytes += 4 * n * f.channels * f.height * f.width;
        }
        const held = proceed ? this.stateBytes() : 0;
        requireBudget(`SPADE's training features (${n}${proceed ? ` + ${this.trainCount}` : ''} images)`, bytes + held, budget, budget);
        pooled = new Float32Array(n * pooledDims);
        for (const name of names.pyramid) {
          const f = layerOf(batch.features, name);
          pyramid.push({ name, channels: f.channels, height: f.height, width: f.width, rows: new Float32Array(n * f.channels * f.height * f.width) });
        }
      }
      pooled.set(globalAverage(p, batch.n), batch.start * pooledDims);
      for (const layer of pyramid) toRows(layerOf(batch.features, layer.name), batch.n, layer.rows, batch.start);
      done += batch.n;
      opts.onProgress?.(done, n);
    }
    if (!pooled) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for SPADE but received none');
    let count = n;
    if (proceed) {
      const before = this.pooled as { data: Float32Array; dims: number };
      const same = before.dims === pooledDims && this.pyramid.length === pyramid.length &&
        this.pyramid.every((l, i) => l.name === pyramid[i].name && l.channels === pyramid[i].channels && l.height === pyramid[i].height && l.width === pyramid[i].width);
      if (!same) throw imiadError('RangeError', 'ERR_IMIAD_DIMS', "Expected the same layers' shapes as in the earlier fit() to extend SPADE's memory bank");
      const join = (a: Float32Array, b: Float32Array): Float32Array => {
        const out = new Float32Array(a.length + b.length);
        out.set(a);
        out.set(b, a.length);
        return out;
      };
      pooled = join(before.data, pooled);
      pyramid.forEach((l, i) => (l.rows = join(this.pyramid[i].rows, l.rows)));
      count += this.trainCount;
    }
    this.pooled = { data: pooled, dims: pooledDims, index: new KnnIndex(pooled, { dims: pooledDims }) };
    this.pyramid = pyramid;
    this.trainCount = count;
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.pooled !== null, 'SPADE');
    const list = requireSamples(samples, 'samples');
    const pooled = this.pooled as { data: Float32Array; dims: number; index: KnnIndex };
    const names = this.split();
    const k = Math.min(this.k, this.trainCount);
    const crop = this.extractor.params.cropSize;
    const scores = new Float64Array(list.length);
    const maps: AnomalyMap[] = [];
    const timing: Timing = { backboneMs: [], methodMs: [] };
    for await (const batch of this.extractor.run(list, 1, opts)) {
      const t = process.hrtime.bigint();
      const q = globalAverage(layerOf(batch.features, names.pooled), 1);
      if (q.length !== pooled.dims) {
        throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected ${pooled.dims} channels in layer '${names.pooled}' as in fit() but received ${q.length}`);
      }
      const nn = await pooled.index.search(q, k, { signal: opts.signal });
      let mean = 0;
      for (let j = 0; j < k; j++) mean += nn.distances[j];
      scores[batch.start] = mean / k;
      const sum = new Float32Array(crop * crop);
      for (const layer of this.pyramid) {
        const f = layerOf(batch.features, layer.name);
        if (f.channels !== layer.channels || f.height !== layer.height || f.width !== layer.width) {
          throw imiadError(
            'RangeError',
            'ERR_IMIAD_DIMS',
            `Expected layer '${layer.name}' of ${layer.channels}x${layer.height}x${layer.width} as in fit() but received ${f.channels}x${f.height}x${f.width}`,
          );
        }
        const per = layer.channels * layer.height * layer.width;
        const gallery = new Float32Array(k * per);
        for (let j = 0; j < k; j++) gallery.set(layer.rows.subarray(nn.indices[j] * per, (nn.indices[j] + 1) * per), j * per);
        const queries = new Float32Array(per);
        toRows(f, 1, queries, 0);
        const r = await knnSearch(gallery, queries, { dims: layer.channels, k: 1, signal: opts.signal });
        const up = await resizeBilinear(r.distances, { count: 1, height: layer.height, width: layer.width, outHeight: crop, outWidth: crop, signal: opts.signal });
        for (let i = 0; i < up.length; i++) sum[i] += up[i];
      }
      for (let i = 0; i < sum.length; i++) sum[i] /= this.pyramid.length;
      const out = await scoreGridsToMaps(sum, 1, crop, crop, batch.geometries, crop, { sigma: this.sigma, signal: opts.signal });
      maps.push(out.maps[0]);
      timing.backboneMs.push(batch.backboneMs);
      timing.methodMs.push(elapsedMs(t));
      opts.onProgress?.(batch.start + 1, list.length);
    }
    this.timing = timing;
    return { scores, maps };
  }

  /** The pooled gallery and the feature pyramid of the training images, for a checkpoint. */
  saveState(): DetectorState {
    requireFitted(this.pooled !== null, 'SPADE');
    const pooled = this.pooled as { data: Float32Array; dims: number };
    const arrays: DetectorState['arrays'] = { pooled: pooled.data };
    this.pyramid.forEach((l, i) => (arrays[`pyramid${i}`] = l.rows));
    const layers = this.pyramid.map((l) => ({ name: l.name, channels: l.channels, height: l.height, width: l.width }));
    return { config: { dims: pooled.dims, trainCount: this.trainCount, pyramid: layers }, arrays };
  }

  async loadState(state: DetectorState): Promise<void> {
    const dims = configInt(state, 'dims');
    const trainCount = configInt(state, 'trainCount');
    const data = stateArray(state, 'pooled', Float32Array, dims * trainCount);
    const layers = configValue<Omit<PyramidLayer, 'rows'>[]>(state, 'pyramid', Array.isArray, 'an array of layers');
    const pyramid = layers.map((l, i) => ({
      name: String(l.name),
      channels: l.channels,
      height: l.height,
      width: l.width,
      rows: stateArray(state, `pyramid${i}`, Float32Array, trainCount * l.channels * l.height * l.width),
    }));
    this.pooled = { data, dims, index: new KnnIndex(data, { dims }) };
    this.pyramid = pyramid;
    this.trainCount = trainCount;
  }

  stateBytes(): number {
    if (!this.pooled) return 0;
    return this.pooled.data.byteLength + this.pooled.index.stateBytes + this.pyramid.reduce((a, l) => a + l.rows.byteLength, 0);
  }

  lastTiming(): Timing {
    return this.timing;
  }

  async dispose(): Promise<void> {
    await this.extractor.dispose();
  }
}
