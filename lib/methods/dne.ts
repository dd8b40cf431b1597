/**
 * DNE (Li et al., "Towards Continual Adaptation in Industrial Anomaly Detection", ACM MM 2022), the continual
 * baseline of IM-IAD: each task (a fit(..., { continueTraining: true }) call) stores only the Gaussian of its normal images' global features —
 * mean and covariance — instead of the images or a patch bank; a test image's score is its Mahalanobis distance to
 * the stored Gaussians.
 * Choices where the paper leaves room: global feature = the global average of each listed layer, concatenated
 * (default layer4, the backbone's pooled output; the paper uses a ViT class token); covariance + 0.01 I as PaDiM
 * (with fewer images than channels the sample covariance is singular); with several tasks the score is the
 * distance to the nearest task's Gaussian (task-agnostic inference: normal for some learnt task = normal).
 * DNE scores images only: `maps` is empty, and `imiad run` reports its pixel metrics as null (not applicable).
 */
import { imiadError, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget, gaussianFit, type GaussianState, gaussianStateBytes, mahalanobisDistances } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { configInt, gaussianFromState, gaussianToState } from './checkpoint';
import type { FeatureMap } from '../backbone/session';
import type { Sample } from '../datasets/types';
import { type BackboneParams, continuesTraining, elapsedMs, FeatureExtractor, layerOf, requireBudget, requireFitted, requireSamples, resolveBackboneParams } from './features';
import { globalAverage } from './spade';
import type { Detector, DetectorState, FitOptions, Prediction, RunOptions, Timing, TrainSample } from './types';

export interface DneParams extends BackboneParams {
  /** Added to each covariance's diagonal (default 0.01). */
  regularization?: number;
}

export class Dne implements Detector {
  readonly name = 'dne';
  readonly usesLabelledAnomalies = false;
  readonly regularization: number;
  private readonly extractor: FeatureExtractor;
  /** One Gaussian per task, in the order learnt. */
  private readonly tasks: GaussianState[] = [];
  private timing: Timing = { backboneMs: [], methodMs: [] };

  constructor(params: DneParams = {}) {
    this.extractor = new FeatureExtractor(resolveBackboneParams(params, ['layer4']));
    if (params.regularization !== undefined && !(is.number(params.regularization) && params.regularization >= 0)) {
      throw invalidType('number >= 0', 'regularization', params.regularization);
    }
    this.regularization = params.regularization ?? 0.01;
  }

  get taskCount(): number {
    return this.tasks.length;
  }

  private global(features: Record<string, FeatureMap>, n: number): Float32Array {
    const parts = this.extractor.params.layers.map((l) => globalAverage(layerOf(features, l), n));
    const dims = parts.reduce((a, p) => a + p.length / n, 0);
    const out = new Float32Array(n * dims);
    for (let i = 0; i < n; i++) {
      let at = i * dims;
      for (const p of parts) {
        const d = p.length / n;
        out.set(p.subarray(i * d, (i + 1) * d), at);
        at += d;
      }
    }
    return out;
  }

  /**
   * The Gaussian of these normal images' global features: one more task with continueTraining, else the only one
   * (earlier tasks are forgotten).
   */
  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for DNE but received none');
    if (!continuesTraining(opts)) this.tasks.length = 0;
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    let features: Float32Array | null = null;
    let dims = 0;
    let done = 0;
    for await (const batch of this.extractor.run(samples, this.extractor.params.batchSize, opts)) {
      const g = this.global(batch.features, batch.n);
      if (!features) {
        dims = g.length / batch.n;
        const held = this.tasks.reduce((a, t) => a + t.mean.byteLength + t.cholesky.byteLength, 0);
        requireBudget(`DNE's task memory (${this.tasks.length + 1} Gaussians of ${dims} dims)`, held + gaussianStateBytes(dims, 1), budget, budget);
        features = new Float32Array(samples.length * dims);
      }
      features.set(g, batch.start * dims);
      done += batch.n;
      opts.onProgress?.(done, samples.length);
    }
    if (!features) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for DNE but received none');
    if (this.tasks.length > 0 && this.tasks[0].channels !== dims) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected ${this.tasks[0].channels}-dim global features as in the earlier tasks but received ${dims}`);
    }
    this.tasks.push(await gaussianFit(features, { n: samples.length, channels: dims, positions: 1, regularization: this.regularization, signal: opts.signal }));
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.tasks.length > 0, 'DNE');
    const list = requireSamples(samples, 'samples');
    const scores = new Float64Array(list.length);
    const timing: Timing = { backboneMs: [], methodMs: [] };
    for await (const batch of this.extractor.run(list, 1, opts)) {
      const t = process.hrtime.bigint();
      const g = this.global(batch.features, batch.n);
      if (g.length !== this.tasks[0].channels * batch.n) {
        throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected ${this.tasks[0].channels}-dim global features as in fit() but received ${g.length / batch.n}`);
      }
      let best = Infinity;
      for (const task of this.tasks) {
        const d = await mahalanobisDistances(task, g, { m: batch.n, signal: opts.signal });
        best = Math.min(best, d[0]);
      }
      scores[batch.start] = best;
      timing.backboneMs.push(batch.backboneMs);
      timing.methodMs.push(elapsedMs(t));
      opts.onProgress?.(batch.start + 1, list.length);
    }
    this.timing = timing;
    return { scores, maps: [] };
  }

  /** Every task's Gaussian, for a checkpoint. */
  saveState(): DetectorState {
    requireFitted(this.tasks.length > 0, 'DNE');
    const out: DetectorState = { config: { tasks: this.tasks.length }, arrays: {} };
    this.tasks.forEach((t, i) => gaussianToState(t, `task${i}.`, out));
    return out;
  }

  async loadState(state: DetectorState): Promise<void> {
    const n = configInt(state, 'tasks');
    const tasks = Array.from({ length: n }, (_, i) => gaussianFromState(state, `task${i}.`));
    this.tasks.length = 0;
    this.tasks.push(...tasks);
  }

  stateBytes(): number {
    return this.tasks.reduce((a, t) => a + t.mean.byteLength + t.cholesky.byteLength, 0);
  }

  lastTiming(): Timing {
    return this.timing;
  }

  async dispose(): Promise<void> {
    await this.extractor.dispose();
  }
}
