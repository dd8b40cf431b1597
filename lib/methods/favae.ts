/**
 * FAVAE (Dehaene & Eline 2020, "Anomaly localization by modeling perceptual features") as the IM-IAD benchmark runs
 * it (open-iad arch/favae.py, models/favae/net_favae.py); the network in native/train/favae.cc, the teacher in ONNX
 * Runtime (lib/backbone), its features read in place by the training addon.
 *
 * Input: the VAE sees 128 x 128 images in [0, 1] (the registry's 'unit' normalisation; its decoder ends in a
 * Sigmoid, and open-iad's ImageNet-normalised input is a bug the original baseline did not have). The frozen teacher
 * sees the same pixels ImageNet-normalised, (x - mean) / std, as every ONNX backbone of imiad expects. 128 px is
 * fixed by the architecture (four stride-2 convs to 8 x 8, then an 8 x 8 conv to 1 x 1); IM-IAD Table V's 256 px
 * does not apply and is refused, as is any crop other than 128.
 *
 * Teacher: a VGG16 ONNX file (`backbone`, torchvision's export, e.g. `scripts/export-backbone.py --arch vgg16`) is
 * tapped at features.7, features.14, features.21 (conv2_2, conv3_3, conv4_3, pre-ReLU), the official taps; without a
 * file, imiad's default backbone's layer1..3 (ResNet-18-shaped: 32^2 x 64, 16^2 x 128, 8^2 x 256 at 128 px), whose
 * decoder taps are matched by side (native/train/favae.cc). `layers` overrides either.
 *
 * Defaults (open-iad config = the baseline; Table V's lr 1e-5 is the weight decay): Adam lr 5e-3, weight decay 1e-5,
 * batch 64, 100 epochs, KLD weight 1; training images shuffled every epoch (seeded), not augmented (the baseline's
 * offline rotations and flips are left out, as in open-iad). Map = per-pixel squared reconstruction error summed
 * over channels + the adapters' squared feature errors upsampled bilinearly to 128 px, Gaussian sigma 4, mapped back
 * to the original image; image score = the map's maximum. open-iad's min-max over all test maps is left out
 * (transductive; it changes no ranking).
 *
 * A loss that becomes NaN or infinite stops training with ERR_IMIAD_TRAINING_DIVERGED (epoch and step); the network
 * is dropped, so no checkpoint of it can be written. Continual setting (`sequential`) and checkpoints as STPM's.
 */
import * as os from 'os';

import { imiadError, invalidRange, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { type Nchw, trainAddon, TrainModel } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import type { Sample } from '../datasets/types';
import { batches, type Geometry, IMAGENET_MEAN, IMAGENET_STD } from '../image/pipeline';
import { Random } from '../prng';
import { configExtra, configInts } from './checkpoint';
import { type BackboneParams, continuesTraining, elapsedMs, FeatureExtractor, layerOf, optionalInt, optionalSigma, predictInBatches, requireSamples, resolveBackboneParams, scoreGridsToMaps } from './features';
import { TrainedFeatureDetector } from './trained-detector';
import type { Detector, DetectorState, FitOptions, Prediction, RunOptions, TrainSample } from './types';

export interface FavaeParams extends BackboneParams {
  /** Training epochs (default 100). */
  epochs?: number;
  /** Adam learning rate (default 5e-3). */
  lr?: number;
  /** Adam weight decay (default 1e-5). */
  weightDecay?: number;
  /** Weight of the KL divergence (default 1). */
  kldWeight?: number;
  /** Gaussian smoothing of the maps (default 4). */
  sigma?: number;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
  /** Keep the training set's images and teacher features in memory (default: when they fit in half the memory budget). */
  cacheFeatures?: boolean;
  /** Where the VAE trains: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
}

/** The input side FAVAE's architecture fixes. */
export const FAVAE_SIZE = 128;
/** The official teacher taps: VGG16 features 7, 14, 21 (conv2_2, conv3_3, conv4_3, pre-ReLU). */
export const FAVAE_VGG16_LAYERS = ['features.7', 'features.14', 'features.21'];
/** The taps of imiad's default backbone. */
export const FAVAE_DEFAULT_LAYERS = ['layer1', 'layer2', 'layer3'];
/** Teacher sides the decoder has taps for at 128 px (native/train/favae.cc). */
const TAP_SIDES = [64, 32, 16, 8];

const UNIT: { mean: [number, number, number]; std: [number, number, number] } = { mean: [0, 0, 0], std: [1, 1, 1] };

/**
 * The teacher's input from the VAE's: per channel (x - mean) / std with ImageNet's statistics, in a new array
 * (the [0, 1] batch stays as it is for the VAE).
 */
export function imagenetFromUnit(unit: Float32Array, n: number, side: number): Float32Array {
  const plane = side * side;
  const out = new Float32Array(unit.length);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) {
      const base = (i * 3 + c) * plane;
      const mean = IMAGENET_MEAN[c];
      const inv = 1 / IMAGENET_STD[c];
      for (let p = base; p < base + plane; p++) out[p] = (unit[p] - mean) * inv;
    }
  }
  return out;
}

interface FavaeBatch {
  start: number;
  n: number;
  geometries: Geometry[];
  /** [n, 3, 128, 128] in [0, 1]. */
  images: Nchw;
  teacher: Nchw[];
  backboneMs: number;
}

interface Cache {
  images: Float32Array;
  teacher: Float32Array[];
  shapes: Nchw['shape'][];
}

export class Favae extends TrainedFeatureDetector implements Detector {
  readonly name = 'favae';
  protected readonly kind = 'favae';
  protected readonly label = 'FAVAE';
  readonly usesLabelledAnomalies = false;
  readonly epochs: number;
  readonly lr: number;
  readonly weightDecay: number;
  readonly kldWeight: number;
  readonly sigma: number;
  readonly trainThreads: number;
  /** The device the VAE trains on, 'auto' resolved at construction. */
  readonly trainDevice: 'cpu' | 'cuda';
  private readonly cacheFeatures?: boolean;

  constructor(params: FavaeParams = {}) {
    super();
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const why = `FAVAE's encoder takes ${FAVAE_SIZE} x ${FAVAE_SIZE} images (four stride-2 convs to 8 x 8, then an 8 x 8 conv to 1 x 1); IM-IAD Table V's 256 px does not apply`;
    if (params.cropSize === undefined && params.imageSize !== undefined && params.imageSize !== FAVAE_SIZE) {
      throw invalidRange(`${FAVAE_SIZE} (${why}; a larger imageSize needs cropSize ${FAVAE_SIZE})`, 'imageSize', params.imageSize);
    }
    if (params.cropSize !== undefined && params.cropSize !== FAVAE_SIZE) throw invalidRange(`${FAVAE_SIZE} (${why})`, 'cropSize', params.cropSize);
    const layers = params.layers ?? (params.backbone === undefined ? FAVAE_DEFAULT_LAYERS : FAVAE_VGG16_LAYERS);
    const p = resolveBackboneParams({ batchSize: 64, ...params, imageSize: params.imageSize ?? FAVAE_SIZE, cropSize: FAVAE_SIZE, layers }, FAVAE_DEFAULT_LAYERS);
    if (p.layers.length !== 3) throw invalidType('3 layer names (the teacher levels matched to the decoder at 64, 32, 16 or 8 px)', 'layers', p.layers);
    this.extractor = new FeatureExtractor(p);
    this.epochs = optionalInt(params.epochs, 'epochs', 1, 1_000_000, 100);
    const positive = (v: unknown, name: string, fallback: number, zeroOk = false): number => {
      if (v === undefined) return fallback;
      if (!(is.number(v) && (zeroOk ? v >= 0 : v > 0))) throw invalidType(zeroOk ? 'number >= 0' : 'positive number', name, v);
      return v;
    };
    this.lr = positive(params.lr, 'lr', 5e-3);
    this.weightDecay = positive(params.weightDecay, 'weightDecay', 1e-5, true);
    this.kldWeight = positive(params.kldWeight, 'kldWeight', 1, true);
    this.sigma = optionalSigma(params.sigma);
    this.trainThreads = optionalInt(params.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    if (params.cacheFeatures !== undefined && typeof params.cacheFeatures !== 'boolean') throw invalidType('boolean', 'cacheFeatures', params.cacheFeatures);
    this.cacheFeatures = params.cacheFeatures;
    // Fail at construction, with the instructions, when the training addon is missing or CUDA cannot be had.
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(params.device));
  }

  protected createModel(channels: number[], extra: Record<string, number[]>): TrainModel {
    const sides = extra.sides;
    return this.newTrainModel('favae', channels, { ...extra, sides, size: [FAVAE_SIZE], zdim: [100], kld: [this.kldWeight] }, { weightDecay: this.weightDecay });
  }

  /** [0, 1] images and the teacher's features of the samples, in batches of `batchSize`, in the given order. */
  private async *favaeBatches(samples: Sample[], batchSize: number, opts: RunOptions): AsyncGenerator<FavaeBatch> {
    const { imageSize, cropSize: crop, layers } = this.extractor.params;
    const backbone = await this.extractor.load();
    const paths = samples.map((s) => s.path);
    for await (const b of batches(paths, { imageSize, cropSize: crop, batchSize, prefetch: Math.max(4, batchSize * 2), signal: opts.signal, ...UNIT })) {
      if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
      const t = process.hrtime.bigint();
      const out = await backbone.extract(imagenetFromUnit(b.data, b.n, crop), b.n, crop, crop);
      const teacher = layers.map((l): Nchw => {
        const f = layerOf(out, l);
        return { data: f.data, shape: [b.n, f.channels, f.height, f.width] };
      });
      yield { start: b.start, n: b.n, geometries: b.geometries, images: { data: b.data, shape: [b.n, 3, crop, crop] }, teacher, backboneMs: elapsedMs(t) };
    }
  }

  /** The decoder has taps at 64, 32, 16 and 8 px only: any other teacher level is refused before training. */
  private checkTeacher(shapes: Nchw['shape'][]): void {
    const { layers } = this.extractor.params;
    shapes.forEach((s, l) => {
      if (s[2] !== s[3] || !TAP_SIDES.includes(s[2])) {
        throw imiadError(
          'RangeError',
          'ERR_IMIAD_DIMS',
          `Expected FAVAE's teacher layers to be square with side 64, 32, 16 or 8 at ${FAVAE_SIZE} px (VGG16 ${FAVAE_VGG16_LAYERS.join(', ')}; the default backbone's layer1..3) but layer '${layers[l]}' is ${s[2]} x ${s[3]}`,
        );
      }
    });
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for FAVAE but received none');
    const t0 = process.hrtime.bigint();
    const { batchSize, seed } = this.extractor.params;
    const n = samples.length;

    let shapes: Nchw['shape'][] | null = null;
    for await (const b of this.favaeBatches(samples.slice(0, 1), 1, opts)) shapes = b.teacher.map((t) => t.shape);
    this.checkTeacher(shapes!);
    const channels = shapes!.map((s) => s[1]);
    const sides = shapes!.map((s) => s[2]);
    if (proceed && (this.model as TrainModel).config.channels.join() !== channels.join()) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected teacher layers of ${(this.model as TrainModel).config.channels.join(', ')} channels as in the earlier fit() but received ${channels.join(', ')}`);
    }
    const imagePer = 3 * FAVAE_SIZE * FAVAE_SIZE;
    const perImage = imagePer + shapes!.reduce((a, s) => a + s[1] * s[2] * s[3], 0);
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    let cache: Cache | null = null;
    if (this.cacheFeatures ?? 4 * perImage * n <= budget / 2) {
      cache = { images: new Float32Array(n * imagePer), teacher: shapes!.map((s) => new Float32Array(n * s[1] * s[2] * s[3])), shapes: shapes! };
      for await (const b of this.favaeBatches(samples, batchSize, opts)) {
        cache.images.set(b.images.data, b.start * imagePer);
        b.teacher.forEach((t, l) => cache!.teacher[l].set(t.data, (b.start * t.data.length) / b.n));
      }
    }
    const gather = (order: number[]): { images: Nchw; teacher: Nchw[] } => {
      const c = cache!;
      const pick = (src: Float32Array, per: number): Float32Array => {
        const out = new Float32Array(order.length * per);
        order.forEach((idx, j) => out.set(src.subarray(idx * per, (idx + 1) * per), j * per));
        return out;
      };
      return {
        images: { data: pick(c.images, imagePer), shape: [order.length, 3, FAVAE_SIZE, FAVAE_SIZE] },
        teacher: c.shapes.map((s, l) => ({ data: pick(c.teacher[l], s[1] * s[2] * s[3]), shape: [order.length, s[1], s[2], s[3]] })),
      };
    };

    const model = proceed ? (this.model as TrainModel) : this.createModel(channels, { sides });
    const fitIndex = proceed ? this.fits : 0;
    // A continued network stopped mid-task is neither the old model nor the new one: unfitted until this fit ends.
    if (proceed) {
      this.model = null;
      this.fits = 0;
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
      const runStep = async (images: Nchw, teacher: Nchw[]): Promise<void> => {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const loss = await model.step(images, teacher, { signal: opts.signal });
        step += 1;
        if (!Number.isFinite(loss)) {
          throw imiadError(
            'Error',
            'ERR_IMIAD_TRAINING_DIVERGED',
            `FAVAE's training loss became ${loss} in epoch ${epoch + 1}, step ${step - epoch * stepsPerEpoch} (lower --lr); the model was not kept`,
          );
        }
        sum += loss;
        count += 1;
        seen += images.shape[0];
        const seconds = elapsedMs(tTrain) / 1000;
        const rate = seconds > 0 ? seen / seconds : 0;
        opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${this.epochs} loss ${(sum / count).toFixed(4)} ${rate.toFixed(1)} img/s`);
      };
      if (cache) {
        for (let s = 0; s < n; s += batchSize) {
          const b = gather(order.slice(s, s + batchSize));
          await runStep(b.images, b.teacher);
        }
      } else {
        for await (const b of this.favaeBatches(order.map((i) => samples[i]), batchSize, opts)) await runStep(b.images, b.teacher);
      }
      losses.push(sum / count);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    this.setModel(model);
    this.fits = fitIndex + 1;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: seen / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    const model = this.fitted();
    const list = requireSamples(samples, 'samples');
    const { scores, maps, timing } = await predictInBatches(this.favaeBatches(list, 1, opts), list.length, opts, async (b) => {
      const raw = await model.maps(b.images, b.teacher, FAVAE_SIZE, { signal: opts.signal });
      const out = await scoreGridsToMaps(raw, b.n, FAVAE_SIZE, FAVAE_SIZE, b.geometries, FAVAE_SIZE, { sigma: this.sigma, signal: opts.signal });
      return { scores: out.maxima, maps: out.maps };
    });
    this.timing = timing;
    return { scores, maps };
  }

  protected override checkpointCrop(): number {
    return FAVAE_SIZE;
  }

  /** The VAE and adapters for a checkpoint's config: one side per teacher level. */
  protected override modelFromCheckpoint(state: DetectorState): TrainModel {
    const channels = configInts(state, 'channels');
    const sides = configExtra(state).sides;
    if (!Array.isArray(sides) || sides.length !== channels.length) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', "Expected the checkpoint's extra.sides to hold one side per teacher level");
    return this.createModel(channels, { sides });
  }
}
