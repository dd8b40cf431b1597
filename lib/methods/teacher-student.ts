/**
 * The trained teacher-student detectors: STPM and RD4AD (definitions and official code: native/train/train.cc).
 *
 * The frozen teacher stays in ONNX Runtime (lib/backbone, exactly as PatchCore uses it); only the trainable network
 * lives in libtorch (bindings/train), which reads the teacher's features (and STPM's images) in place. Defaults
 * follow the IM-IAD paper's Table V: 256 px images (no centre crop), batch 8; STPM: SGD lr 0.4, momentum 0.9,
 * weight decay 1e-4, 100 epochs; RD4AD: Adam lr 0.005, betas (0.5, 0.999), 200 epochs. As the official loaders,
 * the training images are shuffled every epoch (seeded) and not augmented, and the last batch may be smaller.
 *
 * The teacher's features (and the images) of the training set are computed once and kept in memory when they fit
 * in half the memory budget; otherwise the teacher runs again in every epoch, as in the official training loops.
 * Continual setting (`sequential`): fit(..., { continueTraining: true }) goes on training the same network, with its
 * optimiser state, on the new images only, for the detector's own epochs; the k-th fit's epoch shuffles come from
 * the seed and k. Checkpoints (saveState) carry the optimiser state and k, so a loaded model continues exactly.
 * Maps: the per-layer (1 - cosine) maps at the crop size (STPM: product, RD4AD: sum), Gaussian sigma 4, mapped back
 * to the original image; image score = the maximum of the smoothed map (both official evaluations).
 */
import * as os from 'os';

import { imiadError, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { type Nchw, trainAddon, TrainModel } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import type { BackboneShape } from '../backbone/builder';
import type { FeatureMap } from '../backbone/session';
import type { Sample } from '../datasets/types';
import { batches } from '../image/pipeline';
import { Random } from '../prng';
import { configInt, configInts, requireCheckpointCrop, requireCheckpointKind, restoreTrainedModel, trainedModelState } from './checkpoint';
import {
  type BackboneParams,
  continuesTraining,
  elapsedMs,
  FeatureExtractor,
  layerOf,
  optionalInt,
  optionalSigma,
  requireFitted,
  requireSamples,
  resolveBackboneParams,
  scoreGridsToMaps,
} from './features';
import type { AnomalyMap, Detector, DetectorState, FitOptions, Prediction, RunOptions, Timing, TrainingStats, TrainSample } from './types';

export interface TeacherStudentParams extends BackboneParams {
  /** Training epochs (STPM 100, RD4AD 200). */
  epochs?: number;
  /** Learning rate (STPM 0.4, RD4AD 0.005). */
  lr?: number;
  /** Gaussian smoothing of the maps (default 4). */
  sigma?: number;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
  /** Keep the training set's teacher features in memory (default: when they fit in half the memory budget). */
  cacheFeatures?: boolean;
  /** Where the network trains: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
}

interface Defaults {
  kind: 'stpm' | 'rd4ad';
  label: string;
  shape: BackboneShape;
  epochs: number;
  lr: number;
}

const LAYERS = ['layer1', 'layer2', 'layer3'];

interface TrainBatch {
  n: number;
  images: Nchw | null;
  teacher: Nchw[];
}

function nchw(f: FeatureMap, n: number): Nchw {
  return { data: f.data, shape: [n, f.channels, f.height, f.width] };
}

abstract class TeacherStudent implements Detector {
  abstract readonly name: string;
  readonly usesLabelledAnomalies = false;
  readonly epochs: number;
  readonly lr: number;
  readonly sigma: number;
  readonly trainThreads: number;
  /** The device the network trains on, 'auto' resolved at construction. */
  readonly trainDevice: 'cpu' | 'cuda';
  private readonly cacheFeatures?: boolean;
  private readonly extractor: FeatureExtractor;
  private model: TrainModel | null = null;
  /** fit() calls the current network has been trained by (continued fits count on). */
  private fits = 0;
  private timing: Timing = { backboneMs: [], methodMs: [] };
  private stats: TrainingStats | null = null;

  protected constructor(
    params: TeacherStudentParams,
    private readonly defaults: Defaults,
  ) {
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const imageSize = params.imageSize ?? 256;
    const p = resolveBackboneParams({ backboneShape: defaults.shape, ...params, cropSize: params.cropSize ?? imageSize }, LAYERS);
    if (p.layers.length !== 3) throw invalidType('3 layer names (the teacher layers 1..3)', 'layers', p.layers);
    this.extractor = new FeatureExtractor(p);
    this.epochs = optionalInt(params.epochs, 'epochs', 1, 1_000_000, defaults.epochs);
    if (params.lr !== undefined && !(is.number(params.lr) && params.lr > 0)) throw invalidType('positive number', 'lr', params.lr);
    this.lr = params.lr ?? defaults.lr;
    this.sigma = optionalSigma(params.sigma);
    this.trainThreads = optionalInt(params.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    if (params.cacheFeatures !== undefined && typeof params.cacheFeatures !== 'boolean') throw invalidType('boolean', 'cacheFeatures', params.cacheFeatures);
    this.cacheFeatures = params.cacheFeatures;
    // Fail at construction, with the instructions, when the training addon is missing or CUDA cannot be had.
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(params.device));
  }

  get params(): FeatureExtractor['params'] {
    return this.extractor.params;
  }

  private createModel(channels: number[]): TrainModel {
    const k = this.defaults.kind;
    return new TrainModel({ kind: k, channels, seed: this.extractor.params.seed, threads: this.trainThreads, lr: this.lr, momentum: 0.9, weightDecay: 1e-4, beta1: 0.5, beta2: 0.999, device: this.trainDevice });
  }

  /** Teacher features of a decoded batch, in layer order; the images only where the student needs them. */
  private async teacherBatch(data: Float32Array, n: number): Promise<{ batch: TrainBatch; ms: number }> {
    const crop = this.extractor.params.cropSize;
    const backbone = await this.extractor.load();
    const t = process.hrtime.bigint();
    const features = await backbone.extract(data, n, crop, crop);
    const ms = elapsedMs(t);
    const teacher = this.extractor.params.layers.map((l) => nchw(layerOf(features, l), n));
    const images: Nchw | null = this.defaults.kind === 'stpm' ? { data, shape: [n, 3, crop, crop] } : null;
    return { batch: { n, images, teacher }, ms };
  }

  /** fit() calls the current network has been trained by: 0 unfitted, k after k tasks of the continual setting. */
  get fitCount(): number {
    return this.fits;
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected normal training images for ${this.defaults.label} but received none`);
    const t0 = process.hrtime.bigint();
    const { imageSize, cropSize, batchSize, seed } = this.extractor.params;
    const paths = samples.map((s) => s.path);
    const n = paths.length;
    const decode = (list: string[], size: number): ReturnType<typeof batches> =>
      batches(list, { imageSize, cropSize, batchSize: size, prefetch: Math.max(4, size * 2), signal: opts.signal });

    // Probe one image for the shapes, then decide whether the training set's teacher features are cached.
    const probe = await decode(paths.slice(0, 1), 1).next();
    if (probe.done) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected normal training images for ${this.defaults.label} but received none`);
    const first = await this.teacherBatch(probe.value.data, 1);
    const perImage = first.batch.teacher.reduce((a, t) => a + t.data.length, 0) + (first.batch.images ? first.batch.images.data.length : 0);
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    const cache = this.cacheFeatures ?? 4 * perImage * n <= budget / 2;
    // continueTraining (the continual setting's next task): the same network, optimiser state included; else a fresh one.
    const channels = first.batch.teacher.map((t) => t.shape[1]);
    if (proceed && (this.model as TrainModel).config.channels.join() !== channels.join()) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected teacher layers of ${(this.model as TrainModel).config.channels.join(', ')} channels as in the earlier fit() but received ${channels.join(', ')}`);
    }
    const model = proceed ? (this.model as TrainModel) : this.createModel(channels);
    const fitIndex = proceed ? this.fits : 0;
    // A continued network stopped mid-task is neither the old model nor the new one: unfitted until this fit ends.
    if (proceed) {
      this.model = null;
      this.fits = 0;
    }

    let cached: { images: Float32Array | null; teacher: Float32Array[] } | null = null;
    if (cache) {
      cached = {
        images: first.batch.images ? new Float32Array(n * first.batch.images.data.length) : null,
        teacher: first.batch.teacher.map((t) => new Float32Array(n * t.data.length)),
      };
      for await (const b of decode(paths, batchSize)) {
        const { batch } = await this.teacherBatch(b.data, b.n);
        if (cached.images && batch.images) cached.images.set(batch.images.data, b.start * first.batch.images!.data.length);
        batch.teacher.forEach((t, l) => cached!.teacher[l].set(t.data, b.start * first.batch.teacher[l].data.length));
      }
    }
    const gather = (order: number[]): TrainBatch => {
      const c = cached!;
      const m = order.length;
      const pick = (src: Float32Array, per: number): Float32Array => {
        const out = new Float32Array(m * per);
        order.forEach((idx, j) => out.set(src.subarray(idx * per, (idx + 1) * per), j * per));
        return out;
      };
      const fi = first.batch.images;
      return {
        n: m,
        images: c.images && fi ? { data: pick(c.images, fi.data.length), shape: [m, fi.shape[1], fi.shape[2], fi.shape[3]] } : null,
        teacher: first.batch.teacher.map((t, l) => ({ data: pick(c.teacher[l], t.data.length), shape: [m, t.shape[1], t.shape[2], t.shape[3]] })),
      };
    };

    // The first fit keeps the stream it always had; the k-th continued fit draws its own.
    const rng = new Random(seed).fork(fitIndex === 0 ? 'shuffle' : `shuffle-${fitIndex}`);
    const stepsPerEpoch = Math.ceil(n / batchSize);
    const totalSteps = stepsPerEpoch * this.epochs;
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    for (let epoch = 0; epoch < this.epochs; epoch++) {
      const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
      let sum = 0;
      let count = 0;
      const runStep = async (batch: TrainBatch): Promise<void> => {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const loss = await model.step(batch.images, batch.teacher, { signal: opts.signal });
        if (!Number.isFinite(loss)) throw imiadError('Error', 'ERR_IMIAD_NOT_FINITE', `${this.defaults.label}'s training loss became ${loss} in epoch ${epoch + 1} (lower --lr)`);
        sum += loss;
        count += 1;
        step += 1;
        const seconds = elapsedMs(tTrain) / 1000;
        const rate = seconds > 0 ? (step * batchSize) / seconds : 0;
        opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${this.epochs} loss ${(sum / count).toFixed(4)} ${rate.toFixed(1)} img/s`);
      };
      if (cached) {
        for (let s = 0; s < n; s += batchSize) await runStep(gather(order.slice(s, s + batchSize)));
      } else {
        for await (const b of decode(order.map((i) => paths[i]), batchSize)) await runStep((await this.teacherBatch(b.data, b.n)).batch);
      }
      losses.push(sum / count);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    this.model = model;
    this.fits = fitIndex + 1;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: (this.epochs * n) / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.model !== null, this.defaults.label);
    const model = this.model as TrainModel;
    const list = requireSamples(samples, 'samples');
    const { imageSize, cropSize } = this.extractor.params;
    const scores = new Float64Array(list.length);
    const maps: AnomalyMap[] = [];
    const timing: Timing = { backboneMs: [], methodMs: [] };
    for await (const b of batches(list.map((s) => s.path), { imageSize, cropSize, batchSize: 1, prefetch: 4, signal: opts.signal })) {
      const { batch, ms } = await this.teacherBatch(b.data, b.n);
      const t = process.hrtime.bigint();
      const raw = await model.maps(batch.images, batch.teacher, cropSize, { signal: opts.signal });
      const out = await scoreGridsToMaps(raw, b.n, cropSize, cropSize, b.geometries, cropSize, { sigma: this.sigma, signal: opts.signal });
      const methodMs = elapsedMs(t);
      for (let i = 0; i < b.n; i++) {
        scores[b.start + i] = out.maxima[i];
        maps.push(out.maps[i]);
        timing.backboneMs.push(ms / b.n);
        timing.methodMs.push(methodMs / b.n);
      }
      opts.onProgress?.(b.start + b.n, list.length);
    }
    this.timing = timing;
    return { scores, maps };
  }

  /** The network's weights and batch-norm statistics, for a checkpoint. */
  saveState(): DetectorState {
    requireFitted(this.model !== null, this.defaults.label);
    const model = this.model as TrainModel;
    const { arrays, config } = trainedModelState(model);
    return {
      config: {
        kind: this.defaults.kind,
        channels: model.config.channels,
        ...config,
        fits: this.fits,
        cropSize: this.extractor.params.cropSize,
        stats: this.stats,
      },
      arrays,
    };
  }

  async loadState(state: DetectorState): Promise<void> {
    requireCheckpointKind(state, this.defaults.kind);
    requireCheckpointCrop(state, this.extractor.params.cropSize);
    const fits = state.config.fits === undefined ? 1 : configInt(state, 'fits');
    const model = this.createModel(configInts(state, 'channels'));
    restoreTrainedModel(model, state, { optionalOptimizer: true });
    this.model = model;
    this.fits = fits;
    this.stats = null;
  }

  trainingStats(): TrainingStats | null {
    return this.stats;
  }

  stateBytes(): number {
    if (!this.model) return 0;
    return this.model.parameterCount * 4;
  }

  lastTiming(): Timing {
    return this.timing;
  }

  async dispose(): Promise<void> {
    await this.extractor.dispose();
  }
}

export type StpmParams = TeacherStudentParams;
export type Rd4adParams = TeacherStudentParams;

/** STPM: a ResNet-18-shaped student regresses the teacher's layers 1..3 (feature pyramid matching). */
export class Stpm extends TeacherStudent {
  readonly name = 'stpm';
  constructor(params: StpmParams = {}) {
    super(params, { kind: 'stpm', label: 'STPM', shape: 'resnet18', epochs: 100, lr: 0.4 });
  }
}

/** RD4AD: reverse distillation from a one-class embedding of a WRN-50-2-shaped teacher. */
export class Rd4ad extends TeacherStudent {
  readonly name = 'rd4ad';
  constructor(params: Rd4adParams = {}) {
    super(params, { kind: 'rd4ad', label: 'RD4AD', shape: 'wide_resnet50_2', epochs: 200, lr: 0.005 });
  }
}
