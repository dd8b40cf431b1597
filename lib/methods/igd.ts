/**
 * IGD (Chen et al., "Deep One-Class Classification via Interpolated Gaussian Descriptor", AAAI 2022) after its official
 * code tianyu0207/IGD (p256/ssim_main.py, p256/mvtec_module.py); the networks in native/train/igd.cc. The encoder is
 * the frozen backbone's global-average-pooled layer4 (the official freezes torchvision's ResNet-18 up to avgpool)
 * followed by a trainable Linear(512 -> 128); a generator reconstructs the image from the latent and a discriminator
 * judges interpolated reconstructions. docs/detectors-igd.md lists the defaults and every choice.
 *
 * Defaults (IM-IAD Table V = open-iad = official): 256 px (no crop), batch 16, 256 epochs, Adam lr 1e-4 with betas
 * (0, 0.9) (weight decay 1e-6 on the generator), poly learning-rate decay (power 0.9) over the fit's steps; training
 * images flipped horizontally at random (the official RandomHorizontalFlip; the flipped image's features come from
 * the backbone too). The Gaussian descriptor (centre c, scale sigma) is computed before training from the training
 * normals (unflipped, in order) and refreshed every 10 epochs, not at every step as open-iad does.
 * Image score = the official: 0.5 [0.85 (1 - MS-SSIM) + 0.15 L1 / range] + 0.5 (1 - exp(-|z - c|^2 / sigma)). The
 * anomaly map is an addition (the official has none): the per-pixel reconstruction error, Gaussian blur sigma 4.
 *
 * Training images are decoded and their features computed once, and kept in memory (checked against the memory
 * budget). A loss that becomes NaN or infinite stops training with ERR_IMIAD_TRAINING_DIVERGED naming the epoch and
 * step; the network of that run is dropped, so no checkpoint of NaNs can be written.
 */
import * as os from 'os';

import { imiadError, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { type Nchw, trainAddon, TrainModel } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import type { Sample } from '../datasets/types';
import { batches, type Geometry } from '../image/pipeline';
import { Random } from '../prng';
import { configExtra, configValue } from './checkpoint';
import { type BackboneParams, continuesTraining, elapsedMs, FeatureExtractor, layerOf, optionalInt, optionalSigma, predictInBatches, requireBudget, requireSamples, resolveBackboneParams, scoreGridsToMaps } from './features';
import { globalAverage } from './spade';
import { TrainedFeatureDetector } from './trained-detector';
import type { Detector, DetectorState, FitOptions, Prediction, RunOptions, TrainSample } from './types';

export interface IgdParams extends BackboneParams {
  /** Training epochs (default 256, Table V). */
  epochs?: number;
  /** Learning rate of both networks (default 1e-4). */
  lr?: number;
  /** Gaussian smoothing of the reconstruction-error maps (default 4). */
  sigma?: number;
  /** Random horizontal flips of the training images (default true, as the official loader). */
  flip?: boolean;
  /** Epochs between refreshes of the Gaussian descriptor (default 10, as the official). */
  refreshEvery?: number;
  /** Where the networks train: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
}

/** The official data_range: the span of ImageNet-normalised pixels, 2.1179 + 2.6400. */
export const IGD_RANGE = 2.1179 + 2.64;

/** The training set, decoded and through the backbone once. */
interface TrainCache {
  n: number;
  side: number;
  images: Float32Array;
  features: Float32Array;
  /** The pooled features of the horizontally flipped images (empty without flips). */
  flipped: Float32Array;
  channels: number;
}

/** Mirrors image `i` of an NCHW batch left to right into `out` at `j`. */
function mirrorInto(src: Float32Array, i: number, out: Float32Array, j: number, side: number): void {
  const plane = side * side;
  for (let c = 0; c < 3; c++) {
    const s = (i * 3 + c) * plane;
    const d = (j * 3 + c) * plane;
    for (let y = 0; y < side; y++) {
      const row = y * side;
      for (let x = 0; x < side; x++) out[d + row + x] = src[s + row + side - 1 - x];
    }
  }
}

export class Igd extends TrainedFeatureDetector implements Detector {
  readonly name = 'igd';
  protected readonly kind = 'igd';
  protected readonly label = 'IGD';
  readonly usesLabelledAnomalies = false;
  readonly epochs: number;
  readonly lr: number;
  readonly sigma: number;
  readonly flip: boolean;
  readonly refreshEvery: number;
  readonly device: Device;
  readonly trainDevice: 'cpu' | 'cuda';
  readonly trainThreads: number;

  constructor(params: IgdParams = {}) {
    super();
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const imageSize = params.imageSize ?? 256;
    const p = resolveBackboneParams({ batchSize: 16, ...params, imageSize, cropSize: params.cropSize ?? imageSize }, ['layer4']);
    if (p.cropSize < 64 || p.cropSize % 64 !== 0) {
      throw imiadError(
        'RangeError',
        'ERR_IMIAD_RANGE',
        `Expected cropSize to be a multiple of 64 (64, 128, 192, 256, ...) for IGD, whose generator doubles a side of cropSize / 64 six times, but received ${p.cropSize}`,
      );
    }
    this.extractor = new FeatureExtractor(p);
    this.epochs = optionalInt(params.epochs, 'epochs', 1, 1_000_000, 256);
    if (params.lr !== undefined && !(is.number(params.lr) && params.lr > 0)) throw invalidType('positive number', 'lr', params.lr);
    this.lr = params.lr ?? 1e-4;
    this.sigma = optionalSigma(params.sigma);
    if (params.flip !== undefined && typeof params.flip !== 'boolean') throw invalidType('boolean', 'flip', params.flip);
    this.flip = params.flip ?? true;
    this.refreshEvery = optionalInt(params.refreshEvery, 'refreshEvery', 1, 1_000_000, 10);
    this.device = trainDeviceParam(params.device);
    this.trainThreads = optionalInt(params.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    trainAddon();
    this.trainDevice = resolveTrainDevice(this.device);
  }

  /** The generator and discriminator for the encoder's channels; extra.steps: the training steps of the lr schedule. */
  protected createModel(channels: number[], extra: Record<string, number[]>): TrainModel {
    const igdExtra = { size: [this.extractor.params.cropSize], latent: [128], dim: [64], range: [IGD_RANGE], generatorWeightDecay: [1e-6], steps: extra.steps ?? [1] };
    return this.newTrainModel('igd', channels, igdExtra, { beta1: 0, beta2: 0.9 });
  }

  /** Images (ImageNet-normalised, [n, 3, crop, crop]) and their pooled features [n, 512], batch by batch. */
  private async *imageBatches(
    samples: Sample[],
    batchSize: number,
    opts: RunOptions,
  ): AsyncGenerator<{ start: number; n: number; images: Float32Array; features: Float32Array; channels: number; geometries: Geometry[]; backboneMs: number }> {
    const { imageSize, cropSize: crop, layers } = this.extractor.params;
    const backbone = await this.extractor.load();
    for await (const b of batches(samples.map((s) => s.path), { imageSize, cropSize: crop, batchSize, prefetch: Math.max(4, batchSize * 2), signal: opts.signal })) {
      if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
      const t = process.hrtime.bigint();
      const out = await backbone.extract(b.data, b.n, crop, crop);
      const f = layerOf(out, layers[0]);
      yield { start: b.start, n: b.n, images: b.data, features: globalAverage(f, b.n), channels: f.channels, geometries: b.geometries, backboneMs: elapsedMs(t) };
    }
  }

  /** Decodes the training images and computes their features (and the flipped images' features) once. */
  private async cacheTraining(samples: Sample[], opts: RunOptions): Promise<TrainCache> {
    const { cropSize: side, batchSize, memoryBudgetBytes } = this.extractor.params;
    const n = samples.length;
    const plane = 3 * side * side;
    requireBudget('IGD training images', 4 * n * plane, memoryBudgetBytes, defaultMemoryBudget() / 2);
    const images = new Float32Array(n * plane);
    let features = new Float32Array(0);
    let flipped = new Float32Array(0);
    let channels = 0;
    const backbone = await this.extractor.load();
    for await (const b of this.imageBatches(samples, batchSize, opts)) {
      if (channels === 0) {
        channels = b.channels;
        features = new Float32Array(n * channels);
        flipped = new Float32Array(this.flip ? n * channels : 0);
      }
      images.set(b.images, b.start * plane);
      features.set(b.features, b.start * channels);
      if (this.flip) {
        const mirrored = new Float32Array(b.n * plane);
        for (let i = 0; i < b.n; i++) mirrorInto(b.images, i, mirrored, i, side);
        const out = await backbone.extract(mirrored, b.n, side, side);
        flipped.set(globalAverage(layerOf(out, this.extractor.params.layers[0]), b.n), b.start * channels);
      }
    }
    return { n, side, images, features, flipped, channels };
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for IGD but received none');
    const t0 = process.hrtime.bigint();
    const { batchSize, seed } = this.extractor.params;
    const cache = await this.cacheTraining(samples, opts);
    const { n, side, channels } = cache;
    const plane = 3 * side * side;
    const stepsPerEpoch = Math.ceil(n / batchSize);
    const totalSteps = stepsPerEpoch * this.epochs;
    if (proceed && (this.model as TrainModel).config.channels[0] !== channels) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected pooled features of ${(this.model as TrainModel).config.channels[0]} channels as in the earlier fit() but received ${channels}`);
    }
    const model = proceed ? (this.model as TrainModel) : this.createModel([channels], { steps: [totalSteps] });
    const fitIndex = proceed ? this.fits : 0;
    if (proceed) {
      this.model = null;
      this.fits = 0;
    }
    model.configure('fit', [totalSteps, fitIndex]);
    const pooled = (data: Float32Array, from: number, count: number): Nchw => ({ data: data.subarray(from * channels, (from + count) * channels), shape: [count, channels, 1, 1] });
    // One pass over the training normals in order: the descriptor's new centre, and sigma around the old one.
    const calibrate = async (): Promise<void> => {
      for (let s = 0; s < n; s += batchSize) {
        await model.calibrate([pooled(cache.features, s, Math.min(batchSize, n - s))], s === 0, { signal: opts.signal });
      }
    };
    await calibrate();
    await calibrate();
    const rng = new Random(seed).fork(fitIndex === 0 ? 'shuffle' : `shuffle-${fitIndex}`);
    const flips = new Random(seed).fork(fitIndex === 0 ? 'flip' : `flip-${fitIndex}`);
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    let seen = 0;
    for (let epoch = 0; epoch < this.epochs; epoch++) {
      const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
      let sum = 0;
      let count = 0;
      for (let s = 0; s < n; s += batchSize) {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const idx = order.slice(s, s + batchSize);
        const m = idx.length;
        const images = new Float32Array(m * plane);
        const features = new Float32Array(m * channels);
        idx.forEach((k, j) => {
          if (this.flip && flips.bool()) {
            mirrorInto(cache.images, k, images, j, side);
            features.set(cache.flipped.subarray(k * channels, (k + 1) * channels), j * channels);
          } else {
            images.set(cache.images.subarray(k * plane, (k + 1) * plane), j * plane);
            features.set(cache.features.subarray(k * channels, (k + 1) * channels), j * channels);
          }
        });
        const loss = await model.step({ data: images, shape: [m, 3, side, side] }, [pooled(features, 0, m)], { signal: opts.signal });
        step += 1;
        if (!Number.isFinite(loss)) {
          throw imiadError(
            'Error',
            'ERR_IMIAD_TRAINING_DIVERGED',
            `IGD's training loss became ${loss} in epoch ${epoch + 1}, step ${step - epoch * stepsPerEpoch} (lower --lr); the model was not kept`,
          );
        }
        sum += loss;
        count += 1;
        seen += m;
        const seconds = elapsedMs(tTrain) / 1000;
        opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${this.epochs} loss ${(sum / count).toFixed(4)} ${(seconds > 0 ? seen / seconds : 0).toFixed(1)} img/s`);
      }
      losses.push(sum / count);
      // The official refreshes c and sigma every 10 epochs' worth of iterations.
      if ((epoch + 1) % this.refreshEvery === 0 && epoch + 1 < this.epochs) await calibrate();
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    this.setModel(model);
    this.fits = fitIndex + 1;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: seen / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    const model = this.fitted();
    const list = requireSamples(samples, 'samples');
    const crop = this.extractor.params.cropSize;
    const { scores, maps, timing } = await predictInBatches(this.imageBatches(list, 1, opts), list.length, opts, async (b) => {
      const images: Nchw = { data: b.images, shape: [b.n, 3, crop, crop] };
      const features: Nchw[] = [{ data: b.features, shape: [b.n, b.channels, 1, 1] }];
      const raw = await model.maps(images, features, crop, { signal: opts.signal });
      const out = await scoreGridsToMaps(raw, b.n, crop, crop, b.geometries, crop, { sigma: this.sigma, signal: opts.signal });
      const own = (await model.scores(features, { signal: opts.signal }, images)) as Float32Array;
      return { scores: own, maps: out.maps };
    });
    this.timing = timing;
    return { scores, maps };
  }

  /** A checkpoint's network: one encoder channel count. */
  protected override modelFromCheckpoint(state: DetectorState): TrainModel {
    const channels = configValue<number[]>(state, 'channels', (v) => Array.isArray(v) && v.length === 1 && Number.isInteger(v[0]), 'an array of one integer');
    return this.createModel(channels, configExtra(state));
  }
}
