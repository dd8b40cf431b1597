/**
 * What the trained heads on frozen backbone features share (FastFlow, CFlow; CFA and CS-Flow are to reuse it): the
 * backbone runs in ONNX Runtime (lib/backbone) and its tapped features cross into the libtorch training addon
 * (bindings/train) without copies. fit() trains a fresh, seeded head; fit(..., { continueTraining: true }) (the
 * continual setting's next task) goes on training the same head, optimiser state included, and a checkpoint keeps
 * that state too. The fixed constants fed before training (CFA's memory bank) come from the first task.
 *
 * Training features are computed once and kept in memory when they fit in half the memory budget (no method of this
 * family augments its inputs), otherwise the backbone runs again in every epoch. Each epoch shuffles the training
 * images (seeded). A loss that becomes NaN or infinite stops training with ERR_IMIAD_TRAINING_DIVERGED naming the
 * epoch and step; the network of that run is dropped, so no checkpoint of NaNs can be written.
 */
import * as os from 'os';

import { imiadError, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { type Nchw, trainAddon, TrainModel, type TrainModelConfig } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import type { BackboneShape } from '../backbone/builder';
import type { Sample } from '../datasets/types';
import { batches, type Geometry } from '../image/pipeline';
import { Random } from '../prng';
import { type BackboneParams, continuesTraining, elapsedMs, FeatureExtractor, layerOf, optionalInt, optionalSigma, predictInBatches, requireSamples, resolveBackboneParams, scoreGridsToMaps } from './features';
import { TrainedFeatureDetector } from './trained-detector';
import type { Detector, FitOptions, Prediction, RunOptions, TrainSample } from './types';

export interface FrozenHeadParams extends BackboneParams {
  /** Training epochs (default per method, IM-IAD Table V). */
  epochs?: number;
  /** Learning rate (default per method). */
  lr?: number;
  /** Gaussian smoothing of the maps (default per method: 0 for the flows, whose official maps are not blurred). */
  sigma?: number;
  /** Where the head trains: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
  /** Keep the training set's features in memory (default: when they fit in half the memory budget). */
  cacheFeatures?: boolean;
}

export interface HeadDefaults {
  kind: TrainModelConfig['kind'];
  label: string;
  shape: BackboneShape;
  layers: string[];
  imageSize: number;
  batchSize: number;
  epochs: number;
  lr: number;
  weightDecay: number;
  sigma: number;
}

/** One batch of tapped features (levels: layers x input scales) and where its images came from. */
interface HeadBatch {
  start: number;
  n: number;
  geometries: Geometry[];
  features: Nchw[];
  backboneMs: number;
}

/** Nearest downsampling of an NCHW image batch from side `from` to `to` (F.interpolate's default 'nearest'). */
function nearestDownsample(data: Float32Array, n: number, from: number, to: number): Float32Array {
  const out = new Float32Array(n * 3 * to * to);
  let o = 0;
  for (let p = 0; p < n * 3; p++) {
    const base = p * from * from;
    for (let y = 0; y < to; y++) {
      const row = base + Math.floor((y * from) / to) * from;
      for (let x = 0; x < to; x++) out[o++] = data[row + Math.floor((x * from) / to)];
    }
  }
  return out;
}

/** The training set's features, one Float32Array per level holding every image. */
interface FeatureCache {
  levels: Float32Array[];
  shapes: Nchw['shape'][];
}

export abstract class FrozenFeatureHead extends TrainedFeatureDetector implements Detector {
  abstract readonly name: string;
  readonly usesLabelledAnomalies: boolean = false;
  readonly epochs: number;
  readonly lr: number;
  readonly sigma: number;
  readonly device: Device;
  /** The device the head trains on, 'auto' resolved at construction. */
  readonly trainDevice: 'cpu' | 'cuda';
  readonly trainThreads: number;
  protected readonly cacheFeatures?: boolean;

  protected constructor(
    params: FrozenHeadParams,
    protected readonly defaults: HeadDefaults,
  ) {
    super();
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const imageSize = params.imageSize ?? defaults.imageSize;
    const p = resolveBackboneParams(
      { backboneShape: defaults.shape, batchSize: defaults.batchSize, ...params, imageSize, cropSize: params.cropSize ?? imageSize },
      defaults.layers,
    );
    this.extractor = new FeatureExtractor(p);
    this.epochs = optionalInt(params.epochs, 'epochs', 1, 1_000_000, defaults.epochs);
    if (params.lr !== undefined && !(is.number(params.lr) && params.lr > 0)) throw invalidType('positive number', 'lr', params.lr);
    this.lr = params.lr ?? defaults.lr;
    this.sigma = params.sigma === undefined ? defaults.sigma : optionalSigma(params.sigma);
    this.device = trainDeviceParam(params.device);
    this.trainThreads = optionalInt(params.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    if (params.cacheFeatures !== undefined && typeof params.cacheFeatures !== 'boolean') throw invalidType('boolean', 'cacheFeatures', params.cacheFeatures);
    this.cacheFeatures = params.cacheFeatures;
    // Fail at construction, with the instructions, when the training addon is missing or CUDA cannot be had.
    trainAddon();
    this.trainDevice = resolveTrainDevice(this.device);
  }

  protected get kind(): string {
    return this.defaults.kind;
  }

  protected get label(): string {
    return this.defaults.label;
  }

  /** Method-specific numbers for the native model, from the feature shapes of one image and the steps per epoch. */
  protected abstract extra(shapes: Nchw['shape'][], stepsPerEpoch: number): Record<string, number[]>;

  /** Training passes over the data for `epochs` (CFlow: meta-epochs x sub-epochs). */
  protected passes(): number {
    return this.epochs;
  }

  /** CFlow's official loader drops the last incomplete batch (drop_last); the others keep it. */
  protected dropLast(): boolean {
    return false;
  }

  /**
   * When the model is fed the training features for its fixed constants (TrainModel.calibrate): 'before' training
   * (CFA's memory bank of the untrained descriptor), 'after' it (CFlow's normalising maxima), or never.
   */
  protected calibration(): 'before' | 'after' | 'none' {
    return 'none';
  }

  protected createModel(channels: number[], extra: Record<string, number[]>): TrainModel {
    return this.newTrainModel(this.defaults.kind, channels, extra, { weightDecay: this.defaults.weightDecay });
  }

  /**
   * Input scales the backbone sees each image at: 1 (the crop), or CS-Flow's 3 (the crop, then nearest
   * downsamplings by 2 and 4, as F.interpolate does). Levels are ordered layer-major, then scale.
   */
  protected inputScales(): number {
    return 1;
  }

  /** Features of the samples in batches of `batchSize`, in the given order. */
  private async *featureBatches(samples: Sample[], batchSize: number, opts: RunOptions): AsyncGenerator<HeadBatch> {
    const { imageSize, cropSize: crop, layers } = this.extractor.params;
    const backbone = await this.extractor.load();
    const paths = samples.map((s) => s.path);
    for await (const b of batches(paths, { imageSize, cropSize: crop, batchSize, prefetch: Math.max(4, batchSize * 2), signal: opts.signal })) {
      if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
      const t = process.hrtime.bigint();
      const perScale: Nchw[][] = [];
      for (let s = 0; s < this.inputScales(); s++) {
        const side = Math.floor(crop / 2 ** s);
        const data = s === 0 ? b.data : nearestDownsample(b.data, b.n, crop, side);
        const out = await backbone.extract(data, b.n, side, side);
        perScale.push(
          layers.map((l): Nchw => {
            const f = layerOf(out, l);
            return { data: f.data, shape: [b.n, f.channels, f.height, f.width] };
          }),
        );
      }
      const features = layers.flatMap((_, l) => perScale.map((scale) => scale[l]));
      yield { start: b.start, n: b.n, geometries: b.geometries, features, backboneMs: elapsedMs(t) };
    }
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    const label = this.defaults.label;
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected normal training images for ${label} but received none`);
    const t0 = process.hrtime.bigint();
    const { batchSize, seed } = this.extractor.params;
    const n = samples.length;

    // One pass over the training set: the shapes, and the cache when it fits.
    let probe: Nchw['shape'][] | null = null;
    let cache: FeatureCache | null = null;
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    for await (const b of this.featureBatches(samples.slice(0, 1), 1, opts)) probe = b.features.map((f) => f.shape);
    const shapes = probe!;
    const perImage = shapes.reduce((a, s) => a + s[1] * s[2] * s[3], 0);
    if (this.cacheFeatures ?? 4 * perImage * n <= budget / 2) {
      cache = { levels: shapes.map((s) => new Float32Array(n * s[1] * s[2] * s[3])), shapes };
      let start = 0;
      for await (const b of this.featureBatches(samples, batchSize, opts)) {
        b.features.forEach((f, l) => cache!.levels[l].set(f.data, (start * f.data.length) / f.shape[0]));
        start += b.n;
      }
    }
    const gather = (order: number[]): Nchw[] =>
      cache!.shapes.map((s, l) => {
        const per = s[1] * s[2] * s[3];
        const out = new Float32Array(order.length * per);
        order.forEach((idx, j) => out.set(cache!.levels[l].subarray(idx * per, (idx + 1) * per), j * per));
        return { data: out, shape: [order.length, s[1], s[2], s[3]] };
      });

    const full = Math.floor(n / batchSize);
    const dropLast = this.dropLast() && full > 0;
    const stepsPerEpoch = dropLast ? full : Math.ceil(n / batchSize);
    const channels = shapes.map((s) => s[1]);
    if (proceed && (this.model as TrainModel).config.channels.join() !== channels.join()) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected feature levels of ${(this.model as TrainModel).config.channels.join(', ')} channels as in the earlier fit() but received ${channels.join(', ')}`);
    }
    const model = proceed ? (this.model as TrainModel) : this.createModel(channels, this.extra(shapes, stepsPerEpoch));
    const fitIndex = proceed ? this.fits : 0;
    // A continued head stopped mid-task is neither the old model nor the new one: unfitted until this fit ends.
    if (proceed) {
      this.model = null;
      this.fits = 0;
    }
    // One pass over the training set in order, feeding the model's fixed constants.
    const calibrate = async (): Promise<void> => {
      let first = true;
      if (cache) {
        for (let s = 0; s < n; s += batchSize) {
          await model.calibrate(gather(Array.from({ length: Math.min(batchSize, n - s) }, (_, j) => s + j)), first, { signal: opts.signal });
          first = false;
        }
      } else {
        for await (const b of this.featureBatches(samples, batchSize, opts)) {
          await model.calibrate(b.features, first, { signal: opts.signal });
          first = false;
        }
      }
    };
    if (this.calibration() === 'before' && !proceed) await calibrate();
    const passes = this.passes();
    const rng = new Random(seed).fork(fitIndex === 0 ? 'shuffle' : `shuffle-${fitIndex}`);
    const totalSteps = stepsPerEpoch * passes;
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    let seen = 0;
    for (let epoch = 0; epoch < passes; epoch++) {
      const order = rng.shuffle(Array.from({ length: n }, (_, i) => i)).slice(0, stepsPerEpoch * batchSize);
      let sum = 0;
      let count = 0;
      const runStep = async (features: Nchw[]): Promise<void> => {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const loss = await model.step(null, features, { signal: opts.signal });
        step += 1;
        if (!Number.isFinite(loss)) {
          throw imiadError(
            'Error',
            'ERR_IMIAD_TRAINING_DIVERGED',
            `${label}'s training loss became ${loss} in epoch ${epoch + 1}, step ${step - epoch * stepsPerEpoch} (lower --lr); the model was not kept`,
          );
        }
        sum += loss;
        count += 1;
        seen += features[0].shape[0];
        const seconds = elapsedMs(tTrain) / 1000;
        const rate = seconds > 0 ? seen / seconds : 0;
        opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${passes} loss ${(sum / count).toFixed(4)} ${rate.toFixed(1)} img/s`);
      };
      if (cache) {
        for (let s = 0; s < order.length; s += batchSize) await runStep(gather(order.slice(s, s + batchSize)));
      } else {
        const ordered = order.map((i) => samples[i]);
        for await (const b of this.featureBatches(ordered, batchSize, opts)) {
          if (dropLast && b.n < batchSize) break;
          await runStep(b.features);
        }
      }
      losses.push(sum / count);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    if (this.calibration() === 'after') await calibrate();
    this.setModel(model);
    this.fits = fitIndex + 1;
    this.stats = { epochs: passes, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: seen / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    const model = this.fitted();
    const list = requireSamples(samples, 'samples');
    const crop = this.extractor.params.cropSize;
    const { scores, maps, timing } = await predictInBatches(this.featureBatches(list, 1, opts), list.length, opts, async (b) => {
      const raw = await model.maps(null, b.features, crop, { signal: opts.signal });
      const out = await scoreGridsToMaps(raw, b.n, crop, crop, b.geometries, crop, { sigma: this.sigma, signal: opts.signal });
      // CS-Flow scores images by mean z^2, the others by their map's maximum.
      const own = await model.scores(b.features, { signal: opts.signal });
      return { scores: own ?? out.maxima, maps: out.maps };
    });
    this.timing = timing;
    return { scores, maps };
  }
}
