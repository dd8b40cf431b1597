/**
 * GCAD, the MVTec LOCO AD baseline (Bergmann et al., IJCV 2022, section 5), re-implemented from the paper's text: no
 * official code exists. The networks and the choices the paper leaves open are in native/train/gcad.cc and
 * docs/detectors-gcad.md.
 *
 * The frozen teacher is the backbone in ONNX Runtime (default: the ResNet-18-shaped backbone's layer2, 128 channels
 * at 1/8 of the image; with several `layers`, the deeper ones are upsampled to the first one's grid and
 * concatenated). A local student with a
 * 38-pixel receptive field and a global auto-encoder with a 64-d bottleneck take the image (ImageNet-normalised, as
 * the teacher sees it) and regress the teacher's features, normalised per channel with their mean and standard
 * deviation over the training images. Each branch's map (squared error averaged over the channels) is normalised
 * with the mean and standard deviation of that branch's maps on normal validation images: MVTec LOCO AD's
 * validation split (FitOptions.validation, passed by the runner), otherwise a seeded held-out slice of the training
 * normals (10 %, at least one image; those images are not trained on). The two are averaged, upsampled to the crop,
 * smoothed (Gaussian sigma 4) and mapped back to the original image; the image score is the smoothed map's maximum.
 *
 * Defaults (choices; the paper's hyper-parameters are not public and IM-IAD's Table V has no GCAD column): 256 px
 * without crop, batch 8, 100 epochs, Adam lr 1e-4, betas (0.9, 0.999), weight decay 1e-5. Training images are
 * shuffled each epoch (seeded), not augmented; the last batch may be smaller. A loss that becomes NaN or infinite
 * stops training with ERR_IMIAD_TRAINING_DIVERGED naming the epoch and step; that network is dropped, so no
 * checkpoint of it can be written. Continual setting (`sequential`): the same networks and optimiser go on training
 * on each new task; the teacher statistics stay those of the first task, the map statistics are recomputed on each
 * task's validation normals.
 */
import * as os from 'os';

import { imiadError, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { type Nchw, trainAddon, TrainModel } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import type { FeatureMap } from '../backbone/session';
import type { Sample } from '../datasets/types';
import { batches, type Geometry } from '../image/pipeline';
import { Random } from '../prng';
import { type BackboneParams, continuesTraining, elapsedMs, FeatureExtractor, layerOf, optionalInt, optionalSigma, predictInBatches, requireSamples, resolveBackboneParams, scoreGridsToMaps } from './features';
import { TrainedFeatureDetector } from './trained-detector';
import type { Detector, DetectorState, FitOptions, Prediction, RunOptions, TrainSample } from './types';

export interface GcadParams extends BackboneParams {
  /** Training epochs (default 100). */
  epochs?: number;
  /** Adam's learning rate (default 1e-4). */
  lr?: number;
  /** Adam's weight decay (default 1e-5). */
  weightDecay?: number;
  /** Channels of the global auto-encoder's bottleneck vector (default 64). */
  bottleneck?: number;
  /**
   * Without a validation split (every dataset but MVTec LOCO AD): the fraction of the training normals held out,
   * seeded, for the map statistics (default 0.1; at least one image, and never all of them).
   */
  validationFraction?: number;
  /** Gaussian smoothing of the maps (default 4). */
  sigma?: number;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
  /** Keep the training images and their teacher features in memory (default: when they fit in half the memory budget). */
  cacheFeatures?: boolean;
  /** Where the networks train: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
}

export const GCAD_DEFAULTS = { imageSize: 256, batchSize: 8, epochs: 100, lr: 1e-4, weightDecay: 1e-5, bottleneck: 64, validationFraction: 0.1, layers: ['layer2'] } as const;

interface GcadBatch {
  start: number;
  n: number;
  geometries: Geometry[];
  images: Nchw;
  teacher: Nchw[];
  backboneMs: number;
}

/** Where the map statistics of the last fit came from. */
export type GcadValidationSource = 'validation split' | 'held-out training normals';

function nchw(f: FeatureMap, n: number): Nchw {
  return { data: f.data, shape: [n, f.channels, f.height, f.width] };
}

export class Gcad extends TrainedFeatureDetector implements Detector {
  readonly name = 'gcad';
  protected readonly kind = 'gcad';
  protected readonly label = 'GCAD';
  readonly usesLabelledAnomalies = false;
  readonly epochs: number;
  readonly lr: number;
  readonly weightDecay: number;
  readonly bottleneck: number;
  readonly validationFraction: number;
  readonly sigma: number;
  readonly trainThreads: number;
  /** The device the networks train on, 'auto' resolved at construction. */
  readonly trainDevice: 'cpu' | 'cuda';
  private readonly cacheFeatures?: boolean;
  /** fit() calls the current networks have been trained by (continued fits count on). */
  private source: { kind: GcadValidationSource; images: number } | null = null;

  constructor(params: GcadParams = {}) {
    super();
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const imageSize = params.imageSize ?? GCAD_DEFAULTS.imageSize;
    const p = resolveBackboneParams({ backboneShape: 'resnet18', batchSize: GCAD_DEFAULTS.batchSize, ...params, imageSize, cropSize: params.cropSize ?? imageSize }, [...GCAD_DEFAULTS.layers]);
    if (p.cropSize < 32) throw invalidType('integer of at least 32 (the global encoder halves the crop five times)', 'cropSize', p.cropSize);
    this.extractor = new FeatureExtractor(p);
    this.epochs = optionalInt(params.epochs, 'epochs', 1, 1_000_000, GCAD_DEFAULTS.epochs);
    const positive = (v: unknown, name: string, fallback: number): number => {
      if (v !== undefined && !(is.number(v) && v > 0)) throw invalidType('positive number', name, v);
      return (v as number | undefined) ?? fallback;
    };
    this.lr = positive(params.lr, 'lr', GCAD_DEFAULTS.lr);
    if (params.weightDecay !== undefined && !(is.number(params.weightDecay) && params.weightDecay >= 0)) throw invalidType('number >= 0', 'weightDecay', params.weightDecay);
    this.weightDecay = params.weightDecay ?? GCAD_DEFAULTS.weightDecay;
    this.bottleneck = optionalInt(params.bottleneck, 'bottleneck', 1, 4096, GCAD_DEFAULTS.bottleneck);
    const f = params.validationFraction;
    if (f !== undefined && !(is.number(f) && f > 0 && f < 1)) throw invalidType('number between 0 and 1 (exclusive)', 'validationFraction', f);
    this.validationFraction = f ?? GCAD_DEFAULTS.validationFraction;
    this.sigma = optionalSigma(params.sigma);
    this.trainThreads = optionalInt(params.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    if (params.cacheFeatures !== undefined && typeof params.cacheFeatures !== 'boolean') throw invalidType('boolean', 'cacheFeatures', params.cacheFeatures);
    this.cacheFeatures = params.cacheFeatures;
    // Fail at construction, with the instructions, when the training addon is missing or CUDA cannot be had.
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(params.device));
  }

  /** Where the last fit's map statistics came from, and from how many images (null before a fit). */
  get validationSource(): { kind: GcadValidationSource; images: number } | null {
    return this.source;
  }

  protected createModel(channels: number[], extra: Record<string, number[]>): TrainModel {
    return this.newTrainModel('gcad', channels, extra, { weightDecay: this.weightDecay, beta1: 0.9, beta2: 0.999 });
  }

  /** Images and teacher features of the samples in batches of `batchSize`, in the given order. */
  private async *teacherBatches(samples: Sample[], batchSize: number, opts: RunOptions): AsyncGenerator<GcadBatch> {
    const { imageSize, cropSize: crop, layers } = this.extractor.params;
    const backbone = await this.extractor.load();
    for await (const b of batches(
      samples.map((s) => s.path),
      { imageSize, cropSize: crop, batchSize, prefetch: Math.max(4, batchSize * 2), signal: opts.signal },
    )) {
      if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
      const t = process.hrtime.bigint();
      const out = await backbone.extract(b.data, b.n, crop, crop);
      const teacher = layers.map((l) => nchw(layerOf(out, l), b.n));
      yield { start: b.start, n: b.n, geometries: b.geometries, images: { data: b.data, shape: [b.n, 3, crop, crop] }, teacher, backboneMs: elapsedMs(t) };
    }
  }

  /**
   * The training and validation normals: the validation split when given, else a seeded slice held out of the
   * training normals (fraction `validationFraction`, at least one image, never all; a single training image serves
   * as both).
   */
  private splitValidation(normals: Sample[], given: unknown, fitIndex: number): { training: Sample[]; validation: Sample[]; kind: GcadValidationSource } {
    if (given !== undefined && !Array.isArray(given)) throw invalidType('array of samples', 'validation', given);
    const split = given === undefined || (given as unknown[]).length === 0 ? [] : requireSamples(given, 'validation').filter((s) => s.label === 'normal');
    if (split.length > 0) return { training: normals, validation: split, kind: 'validation split' };
    const n = normals.length;
    if (n === 1) return { training: normals, validation: normals, kind: 'held-out training normals' };
    const k = Math.min(n - 1, Math.max(1, Math.round(this.validationFraction * n)));
    const rng = new Random(this.extractor.params.seed).fork(fitIndex === 0 ? 'gcad-validation' : `gcad-validation-${fitIndex}`);
    const held = new Set(rng.shuffle(Array.from({ length: n }, (_, i) => i)).slice(0, k));
    return {
      training: normals.filter((_, i) => !held.has(i)),
      validation: normals.filter((_, i) => held.has(i)),
      kind: 'held-out training normals',
    };
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const normals = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (normals.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for GCAD but received none');
    const fitIndex = proceed ? this.fits : 0;
    const { training, validation, kind } = this.splitValidation(normals, opts.validation, fitIndex);
    const t0 = process.hrtime.bigint();
    const { batchSize, seed, cropSize: crop } = this.extractor.params;
    const n = training.length;

    // One image for the shapes, then the cache when it fits.
    let first: GcadBatch | null = null;
    for await (const b of this.teacherBatches(training.slice(0, 1), 1, opts)) first = b;
    const probe = first as GcadBatch;
    const channels = probe.teacher.map((t) => t.shape[1]);
    const perImage = probe.images.data.length + probe.teacher.reduce((a, t) => a + t.data.length, 0);
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    const useCache = this.cacheFeatures ?? 4 * perImage * n <= budget / 2;
    if (proceed && (this.model as TrainModel).config.channels.join() !== channels.join()) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected teacher layers of ${(this.model as TrainModel).config.channels.join(', ')} channels as in the earlier fit() but received ${channels.join(', ')}`);
    }
    const extra = { image: [crop, crop], grid: [probe.teacher[0].shape[2], probe.teacher[0].shape[3]], bottleneck: [this.bottleneck] };
    const model = proceed ? (this.model as TrainModel) : this.createModel(channels, extra);
    // A continued network stopped mid-task is neither the old model nor the new one: unfitted until this fit ends.
    if (proceed) {
      this.model = null;
      this.fits = 0;
    }

    let cache: { images: Float32Array; teacher: Float32Array[] } | null = null;
    if (useCache) {
      const c = { images: new Float32Array(n * probe.images.data.length), teacher: probe.teacher.map((t) => new Float32Array(n * t.data.length)) };
      for await (const b of this.teacherBatches(training, batchSize, opts)) {
        c.images.set(b.images.data, b.start * probe.images.data.length);
        b.teacher.forEach((t, l) => c.teacher[l].set(t.data, b.start * probe.teacher[l].data.length));
      }
      cache = c;
    }
    const gather = (order: number[]): { images: Nchw; teacher: Nchw[] } => {
      const c = cache as { images: Float32Array; teacher: Float32Array[] };
      const m = order.length;
      const pick = (src: Float32Array, per: number): Float32Array => {
        const out = new Float32Array(m * per);
        order.forEach((idx, j) => out.set(src.subarray(idx * per, (idx + 1) * per), j * per));
        return out;
      };
      const shape = (s: Nchw['shape']): Nchw['shape'] => [m, s[1], s[2], s[3]];
      return {
        images: { data: pick(c.images, probe.images.data.length), shape: shape(probe.images.shape) },
        teacher: probe.teacher.map((t, l) => ({ data: pick(c.teacher[l], t.data.length), shape: shape(t.shape) })),
      };
    };
    // Batches of `list` in order (from the cache when `list` is the training set).
    const inOrder = async function* (this: Gcad, list: Sample[], fromCache: boolean): AsyncGenerator<{ images: Nchw; teacher: Nchw[] }> {
      if (fromCache && cache) {
        for (let s = 0; s < n; s += batchSize) yield gather(Array.from({ length: Math.min(batchSize, n - s) }, (_, j) => s + j));
      } else {
        for await (const b of this.teacherBatches(list, batchSize, opts)) yield b;
      }
    }.bind(this);

    // The teacher's per-channel statistics over the training images (the first task's, in the continual setting).
    if (!proceed) {
      let reset = true;
      for await (const b of inOrder(training, true)) {
        await model.calibrateStage('teacher', null, b.teacher, reset, { signal: opts.signal });
        reset = false;
      }
    }

    const rng = new Random(seed).fork(fitIndex === 0 ? 'shuffle' : `shuffle-${fitIndex}`);
    const stepsPerEpoch = Math.ceil(n / batchSize);
    const totalSteps = stepsPerEpoch * this.epochs;
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    let seen = 0;
    for (let epoch = 0; epoch < this.epochs; epoch++) {
      const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
      let sum = 0;
      let count = 0;
      const runStep = async (b: { images: Nchw; teacher: Nchw[] }): Promise<void> => {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const loss = await model.step(b.images, b.teacher, { signal: opts.signal });
        step += 1;
        if (!Number.isFinite(loss)) {
          throw imiadError(
            'Error',
            'ERR_IMIAD_TRAINING_DIVERGED',
            `GCAD's training loss became ${loss} in epoch ${epoch + 1}, step ${step - epoch * stepsPerEpoch} (lower --lr); the model was not kept`,
          );
        }
        sum += loss;
        count += 1;
        seen += b.images.shape[0];
        const seconds = elapsedMs(tTrain) / 1000;
        const rate = seconds > 0 ? seen / seconds : 0;
        opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${this.epochs} loss ${(sum / count).toFixed(4)} ${rate.toFixed(1)} img/s`);
      };
      if (cache) {
        for (let s = 0; s < n; s += batchSize) await runStep(gather(order.slice(s, s + batchSize)));
      } else {
        for await (const b of this.teacherBatches(order.map((i) => training[i]), batchSize, opts)) await runStep(b);
      }
      losses.push(sum / count);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;

    // Each branch's map statistics on the validation normals.
    let reset = true;
    for await (const b of inOrder(validation, false)) {
      await model.calibrateStage('maps', b.images, b.teacher, reset, { signal: opts.signal });
      reset = false;
    }
    this.setModel(model);
    this.fits = fitIndex + 1;
    this.source = { kind, images: validation.length };
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: seen / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    const model = this.fitted();
    const list = requireSamples(samples, 'samples');
    const crop = this.extractor.params.cropSize;
    const { scores, maps, timing } = await predictInBatches(this.teacherBatches(list, 1, opts), list.length, opts, async (b) => {
      const raw = await model.maps(b.images, b.teacher, crop, { signal: opts.signal });
      const out = await scoreGridsToMaps(raw, b.n, crop, crop, b.geometries, crop, { sigma: this.sigma, signal: opts.signal });
      return { scores: out.maxima, maps: out.maps };
    });
    this.timing = timing;
    return { scores, maps };
  }

  /** A checkpoint also keeps where the map statistics came from. */
  protected override stateConfig(): Record<string, unknown> {
    return { validation: this.source };
  }

  protected override restoreConfig(state: DetectorState): void {
    const v = state.config.validation as { kind?: unknown; images?: unknown } | null | undefined;
    this.source = v && (v.kind === 'validation split' || v.kind === 'held-out training normals') && is.integer(v.images) ? { kind: v.kind, images: v.images as number } : null;
  }
}
