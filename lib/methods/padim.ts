/**
 * PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and Localization",
 * ICPR 2021), following the official implementation's choices (xiahaifeng1995/PaDiM-Anomaly-Detection-Localization-
 * master):
 * - embedding: layer1, layer2, layer3 concatenated at layer1's grid, a coarser cell repeated over the fine cells it
 *   covers (the official embedding_concat; native gatherChannels); a seeded random subset of the concatenated channels, 100 for a
 *   ResNet-18-sized backbone (448 channels) and 550 for a WideResNet-50-2-sized one (1792 channels);
 * - per position a Gaussian: mean and covariance + 0.01 I (bindings/gaussian.ts, native);
 * - anomaly map: the Mahalanobis distance at every position, upsampled bilinearly to the crop (align_corners=False),
 *   Gaussian blur sigma 4; image score = the smoothed map's maximum.
 * Continual setting (`statistics` mode): with `runningSums: true` the fit keeps float64 running statistics (count,
 * mean, centred scatter; bindings/gaussian.ts) and fit(..., { continueTraining: true }) adds the new images to them,
 * giving the Gaussians of a fit on every image seen so far without keeping the earlier images.
 * Where imiad differs: the official script min-max normalises the maps over the whole test set before reporting; a
 * monotone transform shared by all images, it changes no metric, and imiad reports the raw distances.
 */
import { imiadError, invalidType } from '../../bindings/errors';
import { gatherChannels } from '../../bindings/filters';
import {
  defaultMemoryBudget,
  gaussianAccumulate,
  gaussianFactor,
  gaussianFit,
  type GaussianState,
  gaussianStateBytes,
  mahalanobisDistances,
  type RunningGaussian,
  runningGaussian,
  runningGaussianBytes,
} from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { configGrid, configValue, gaussianFromState, gaussianToState, stateArray } from './checkpoint';
import type { FeatureMap } from '../backbone/session';
import type { Sample } from '../datasets/types';
import { Random } from '../prng';
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

export interface PadimParams extends BackboneParams {
  /** Channels kept (default: 550 when the layers have 1792 or more channels in all, else 100; capped by the total). */
  channels?: number;
  /** Added to each covariance's diagonal (default 0.01). */
  regularization?: number;
  /** Gaussian smoothing of the maps (default 4). */
  sigma?: number;
  /**
   * Keep float64 running statistics (8 bytes x positions x (C + C(C+1)/2) beside the Gaussians) so that
   * fit(..., { continueTraining: true }) can add images (the continual setting). Default false.
   */
  runningSums?: boolean;
}

/** The default channel count for a concatenation of `total` channels. */
export function padimChannelCount(total: number): number {
  return Math.min(total, total >= 1792 ? 550 : 100);
}

/** `count` distinct channel indices out of `total`, drawn by seed (partial Fisher-Yates), in ascending order. */
export function padimChannelSubset(total: number, count: number, seed: number): Uint32Array {
  const rng = new Random(seed).fork('padim-channels');
  const pool = Uint32Array.from({ length: total }, (_, i) => i);
  for (let i = 0; i < count; i++) {
    const j = i + rng.int(total - i);
    const t = pool[i];
    pool[i] = pool[j];
    pool[j] = t;
  }
  return pool.slice(0, count).sort();
}

export class Padim implements Detector {
  readonly name = 'padim';
  readonly usesLabelledAnomalies = false;
  readonly regularization: number;
  readonly sigma: number;
  readonly runningSums: boolean;
  private readonly requestedChannels?: number;
  private readonly extractor: FeatureExtractor;
  private state: GaussianState | null = null;
  private channels: Uint32Array | null = null;
  private grid: { height: number; width: number } | null = null;
  private running: RunningGaussian | null = null;
  private timing: Timing = { backboneMs: [], methodMs: [] };

  constructor(params: PadimParams = {}) {
    this.extractor = new FeatureExtractor(resolveBackboneParams(params, ['layer1', 'layer2', 'layer3']));
    if (params.channels !== undefined && !(is.integer(params.channels) && params.channels >= 1 && params.channels <= 65536)) {
      throw invalidType('integer between 1 and 65536', 'channels', params.channels);
    }
    this.requestedChannels = params.channels;
    if (params.regularization !== undefined && !(is.number(params.regularization) && params.regularization >= 0)) {
      throw invalidType('number >= 0', 'regularization', params.regularization);
    }
    this.regularization = params.regularization ?? 0.01;
    this.sigma = optionalSigma(params.sigma);
    if (params.runningSums !== undefined && typeof params.runningSums !== 'boolean') throw invalidType('boolean', 'runningSums', params.runningSums);
    this.runningSums = params.runningSums ?? false;
  }

  /** The float64 running statistics (with runningSums, after fit); read-only for callers. */
  get runningStatistics(): Readonly<RunningGaussian> | null {
    return this.running;
  }

  /** The channel subset in use (after fit). */
  get channelSubset(): Uint32Array | null {
    return this.channels;
  }

  private layers(features: Record<string, FeatureMap>): FeatureMap[] {
    const layers = this.extractor.params.layers.map((l) => layerOf(features, l));
    const first = layers[0];
    for (const [i, l] of layers.entries()) {
      if (l.height > first.height || l.width > first.width) {
        throw imiadError(
          'RangeError',
          'ERR_IMIAD_DIMS',
          `PaDiM concatenates at the first layer's grid (${first.height}x${first.width}) but layer '${this.extractor.params.layers[i]}' is finer (${l.height}x${l.width}); list the finest layer first`,
        );
      }
    }
    return layers;
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.state !== null;
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for PaDiM but received none');
    if (proceed && !this.running) {
      throw imiadError('Error', 'ERR_IMIAD_STATE', 'PaDiM: continueTraining needs the running statistics of the earlier fit (create the detector with runningSums: true)');
    }
    const previousGrid = proceed ? this.grid : null;
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    let embeddings: Float32Array | null = null;
    let channels: Uint32Array | null = null;
    let positions = 0;
    let done = 0;
    for await (const batch of this.extractor.run(samples, this.extractor.params.batchSize, opts)) {
      const layers = this.layers(batch.features);
      if (!channels) {
        const total = layers.reduce((a, l) => a + l.channels, 0);
        const count = this.requestedChannels ?? padimChannelCount(total);
        if (count > total) throw invalidType(`integer between 1 and ${total} (the layers' channels)`, 'channels', count);
        channels = padimChannelSubset(total, count, this.extractor.params.seed);
        positions = layers[0].height * layers[0].width;
        if (previousGrid && (previousGrid.height !== layers[0].height || previousGrid.width !== layers[0].width || this.running?.channels !== count)) {
          throw imiadError(
            'RangeError',
            'ERR_IMIAD_DIMS',
            `Expected a ${previousGrid.height}x${previousGrid.width} grid of ${this.running?.channels} channels as in the earlier fit() but received ${layers[0].height}x${layers[0].width} of ${count}`,
          );
        }
        this.grid = { height: layers[0].height, width: layers[0].width };
        requireBudget(`PaDiM's Gaussian statistics (${count} channels x ${positions} positions)`, gaussianStateBytes(count, positions), budget, budget);
        if (this.runningSums || proceed) {
          requireBudget(`PaDiM's running statistics (${count} channels x ${positions} positions)`, runningGaussianBytes(count, positions), budget, budget);
        }
        requireBudget(
          `PaDiM's training embeddings (${samples.length} images x ${count} channels x ${positions} positions)`,
          4 * samples.length * count * positions,
          budget,
          budget,
        );
        embeddings = new Float32Array(samples.length * count * positions);
      }
      const g = await gatherChannels(layers, { n: batch.n, channels, signal: opts.signal });
      (embeddings as Float32Array).set(g.data, batch.start * channels.length * positions);
      done += batch.n;
      opts.onProgress?.(done, samples.length);
    }
    if (!embeddings || !channels) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for PaDiM but received none');
    if (this.runningSums || proceed) {
      const stats = proceed ? (this.running as RunningGaussian) : runningGaussian(channels.length, positions);
      try {
        await gaussianAccumulate(stats, embeddings, { n: samples.length, signal: opts.signal });
        this.state = await gaussianFactor(stats, { regularization: this.regularization, memoryBudgetBytes: budget, signal: opts.signal });
      } catch (err) {
        // A half-updated sum is no state at all: the detector is unfitted until the next fit().
        this.state = null;
        this.running = null;
        throw err;
      }
      this.running = stats;
      this.channels = channels;
      return;
    }
    this.running = null;
    this.state = await gaussianFit(embeddings, {
      n: samples.length,
      channels: channels.length,
      positions,
      regularization: this.regularization,
      memoryBudgetBytes: budget,
      signal: opts.signal,
    });
    this.channels = channels;
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.state !== null, 'PaDiM');
    const list = requireSamples(samples, 'samples');
    const state = this.state as GaussianState;
    const channels = this.channels as Uint32Array;
    const grid = this.grid as { height: number; width: number };
    const scores = new Float64Array(list.length);
    const maps: AnomalyMap[] = [];
    const timing: Timing = { backboneMs: [], methodMs: [] };
    for await (const batch of this.extractor.run(list, 1, opts)) {
      const t = process.hrtime.bigint();
      const layers = this.layers(batch.features);
      if (layers[0].height !== grid.height || layers[0].width !== grid.width) {
        throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected a ${grid.height}x${grid.width} grid as in fit() but received ${layers[0].height}x${layers[0].width}`);
      }
      const e = await gatherChannels(layers, { n: batch.n, channels, signal: opts.signal });
      const dist = await mahalanobisDistances(state, e.data, { m: batch.n, signal: opts.signal });
      const out = await scoreGridsToMaps(dist, batch.n, grid.height, grid.width, batch.geometries, this.extractor.params.cropSize, {
        sigma: this.sigma,
        signal: opts.signal,
      });
      const ms = elapsedMs(t);
      for (let i = 0; i < batch.n; i++) {
        scores[batch.start + i] = out.maxima[i];
        maps.push(out.maps[i]);
        timing.backboneMs.push(batch.backboneMs / batch.n);
        timing.methodMs.push(ms / batch.n);
      }
      opts.onProgress?.(batch.start + batch.n, list.length);
    }
    this.timing = timing;
    return { scores, maps };
  }

  /** The Gaussians, channel subset and grid, for a checkpoint. */
  saveState(): DetectorState {
    requireFitted(this.state !== null, 'PaDiM');
    const out: DetectorState = { config: { grid: this.grid }, arrays: { channels: new Int32Array(this.channels as Uint32Array) } };
    gaussianToState(this.state as GaussianState, '', out);
    if (this.running) {
      out.config.runningCount = this.running.count;
      out.arrays['running.mean'] = this.running.mean;
      out.arrays['running.scatter'] = this.running.scatter;
    }
    return out;
  }

  async loadState(state: DetectorState): Promise<void> {
    const g = gaussianFromState(state, '');
    const grid = configGrid(state);
    if (g.positions !== grid.height * grid.width) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected ${grid.height * grid.width} positions in the checkpoint's Gaussians but found ${g.positions}`);
    // The checkpoint format stores integers as int32; channel indices are far below 2^31.
    this.channels = new Uint32Array(stateArray(state, 'channels', Int32Array, g.channels));
    let running: RunningGaussian | null = null;
    if (state.config.runningCount !== undefined) {
      const count = configValue<number>(state, 'runningCount', (v) => Number.isInteger(v) && (v as number) > 0, 'a positive integer');
      running = {
        count,
        channels: g.channels,
        positions: g.positions,
        mean: stateArray(state, 'running.mean', Float64Array, g.channels * g.positions),
        scatter: stateArray(state, 'running.scatter', Float64Array, ((g.channels * (g.channels + 1)) / 2) * g.positions),
      };
    }
    this.grid = grid;
    this.state = g;
    this.running = running;
  }

  stateBytes(): number {
    if (!this.state) return 0;
    const running = this.running ? this.running.mean.byteLength + this.running.scatter.byteLength : 0;
    return this.state.mean.byteLength + this.state.cholesky.byteLength + running;
  }

  lastTiming(): Timing {
    return this.timing;
  }

  async dispose(): Promise<void> {
    await this.extractor.dispose();
  }
}
