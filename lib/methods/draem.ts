/**
 * DRAEM (Zavrtanik et al., ICCV 2021; official code VitjanZ/DRAEM): a reconstructive auto-encoder and a
 * discriminative U-Net trained from scratch on images with synthetic anomalies (networks and loss:
 * native/train/draem.cc; synthesis: lib/synthesis). No backbone: the image pipeline hands [0, 1] pixels over
 * (registry normalisation 'unit'), resized to imageSize x imageSize as cv2.resize does (both sides), then centre
 * cropped to cropSize (default: no crop). The backbone options are ignored.
 *
 * Defaults follow IM-IAD Table V (= the official): 256 px, batch 8, 700 epochs, Adam lr 1e-4 with the learning rate
 * times 0.2 after 80 % and again after 90 % of the epochs (MultiStepLR). Each epoch visits the training images in a
 * seeded shuffled order (the official draws images with replacement), and each visit draws a fresh synthetic sample
 * from a generator forked from (seed, fit, epoch, position), so training is bit-identical for the same seed and thread
 * count. Map = softmax channel 1 of the discriminative net at the crop size (no blur), mapped back to the original
 * image; image score = the maximum of the map average-pooled 21 x 21 (stride 1, zero padding 10, as test_DRAEM.py).
 *
 * A loss that becomes NaN or infinite stops training with ERR_IMIAD_TRAINING_DIVERGED (epoch and step); the
 * detector then holds no model, so nothing is checkpointed.
 */
import * as os from 'os';

import { imiadError, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { type Nchw, trainAddon, TrainModel } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import type { Sample } from '../datasets/types';
import { batches } from '../image/pipeline';
import { Random } from '../prng';
import { AnomalySynthesiser, type SynthesisedSample } from '../synthesis';
import { configInt, configInts, requireCheckpointCrop, requireCheckpointKind, restoreTrainedModel, trainedModelState } from './checkpoint';
import { continuesTraining, elapsedMs, optionalInt, requireFitted, requireSamples, scoreGridsToMaps, StepPipeline } from './features';
import type { AnomalyMap, Detector, DetectorState, FitOptions, Prediction, RunOptions, Timing, TrainingStats, TrainSample } from './types';

const Math = globalThis.Math;

export interface DraemParams {
  /** Resize side (both sides, as cv2.resize; default 256). */
  imageSize?: number;
  /** Centre crop side, the networks' input (default: imageSize); a multiple of 32 (5 max-pools). */
  cropSize?: number;
  /** Training batch size (default 8). */
  batchSize?: number;
  /** Training epochs (default 700). */
  epochs?: number;
  /** Adam's learning rate (default 1e-4), times 0.2 after 80 % and after 90 % of the epochs. */
  lr?: number;
  /** A folder of texture images (e.g. DTD's images/), read recursively; default: Perlin noise as texture. */
  textureRoot?: string;
  /** Base widths of the reconstructive and discriminative networks (default [128, 64], the official). */
  widths?: [number, number];
  /** Side of the average pooling before the image score's maximum (default 21). */
  scorePool?: number;
  /** Seed of the initial weights, the epoch order and the synthesis (default 0). */
  seed?: number;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
  /** Where the networks train: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
  /** Keep the decoded training images in memory (default: when they fit in half the memory budget). */
  cacheImages?: boolean;
  memoryBudgetBytes?: number;
  /** Backbone options of the other detectors: accepted and ignored (DRAEM has no backbone). */
  backbone?: string;
  backboneShape?: string;
  backboneSeed?: number;
  layers?: string[];
  threads?: number;
}

/** The learning rate of an epoch (0-based) under MultiStepLR([0.8 E, 0.9 E], gamma 0.2) stepped once per epoch. */
export function draemLearningRate(lr: number, epoch: number, epochs: number): number {
  let f = 1;
  for (const m of [0.8 * epochs, 0.9 * epochs]) if (epoch >= Math.ceil(m)) f *= 0.2;
  return lr * f;
}

/** max over the map of avg_pool2d(map, k, stride 1, padding k // 2) (count_include_pad: every window divides by k^2). */
export function pooledMax(map: Float32Array, side: number, k: number): number {
  const r = Math.floor(k / 2);
  // Summed-area table in float64.
  const w = side + 1;
  const sat = new Float64Array(w * w);
  for (let y = 0; y < side; y++) {
    let row = 0;
    for (let x = 0; x < side; x++) {
      row += map[y * side + x];
      sat[(y + 1) * w + x + 1] = sat[y * w + x + 1] + row;
    }
  }
  let best = -Infinity;
  for (let y = 0; y < side; y++) {
    const y0 = Math.max(0, y - r);
    const y1 = Math.min(side, y + r + 1);
    for (let x = 0; x < side; x++) {
      const x0 = Math.max(0, x - r);
      const x1 = Math.min(side, x + r + 1);
      const s = sat[y1 * w + x1] - sat[y0 * w + x1] - sat[y1 * w + x0] + sat[y0 * w + x0];
      if (s > best) best = s;
    }
  }
  return best / (k * k);
}

interface Batch {
  clean: Nchw;
  augmented: Nchw;
  mask: Nchw;
}

export class Draem implements Detector {
  readonly name = 'draem';
  readonly usesLabelledAnomalies = false;
  readonly imageSize: number;
  readonly cropSize: number;
  readonly batchSize: number;
  readonly epochs: number;
  readonly lr: number;
  readonly textureRoot?: string;
  readonly widths: [number, number];
  readonly scorePool: number;
  readonly seed: number;
  readonly trainThreads: number;
  readonly trainDevice: 'cpu' | 'cuda';
  private readonly cacheImages?: boolean;
  private readonly memoryBudgetBytes?: number;
  private model: TrainModel | null = null;
  private fits = 0;
  private stats: TrainingStats | null = null;
  private timing: Timing = { backboneMs: [], methodMs: [] };

  constructor(params: DraemParams = {}) {
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const p = params ?? {};
    this.imageSize = optionalInt(p.imageSize, 'imageSize', 32, 4096, 256);
    this.cropSize = optionalInt(p.cropSize, 'cropSize', 32, this.imageSize, this.imageSize);
    if (this.cropSize % 32 !== 0) {
      throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Expected DRAEM's input side (cropSize, else imageSize) to be a multiple of 32 (its U-Net pools 5 times) but received ${this.cropSize}`);
    }
    this.batchSize = optionalInt(p.batchSize, 'batchSize', 1, 4096, 8);
    this.epochs = optionalInt(p.epochs, 'epochs', 1, 1_000_000, 700);
    if (p.lr !== undefined && !(is.number(p.lr) && p.lr > 0)) throw invalidType('positive number', 'lr', p.lr);
    this.lr = p.lr ?? 1e-4;
    if (p.textureRoot !== undefined && !(is.string(p.textureRoot) && p.textureRoot !== '')) throw invalidType('a folder path', 'textureRoot', p.textureRoot);
    this.textureRoot = p.textureRoot;
    const widths: unknown = p.widths ?? [128, 64];
    if (!Array.isArray(widths) || widths.length !== 2 || !widths.every((v) => is.integer(v) && v >= 1 && v <= 4096)) {
      throw invalidType('two integers between 1 and 4096 (reconstructive, discriminative base widths)', 'widths', widths);
    }
    this.widths = [widths[0], widths[1]];
    this.scorePool = optionalInt(p.scorePool, 'scorePool', 1, 255, 21);
    if (this.scorePool % 2 === 0) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Expected an odd scorePool but received ${this.scorePool}`);
    this.seed = optionalInt(p.seed, 'seed', 0, 0xffffffff, 0);
    this.trainThreads = optionalInt(p.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    if (p.cacheImages !== undefined && typeof p.cacheImages !== 'boolean') throw invalidType('boolean', 'cacheImages', p.cacheImages);
    this.cacheImages = p.cacheImages;
    if (p.memoryBudgetBytes !== undefined && !(is.number(p.memoryBudgetBytes) && p.memoryBudgetBytes > 0)) throw invalidType('positive number', 'memoryBudgetBytes', p.memoryBudgetBytes);
    this.memoryBudgetBytes = p.memoryBudgetBytes;
    // Fail at construction, with the instructions, when the training addon is missing or CUDA cannot be had.
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(p.device));
  }

  private createModel(): TrainModel {
    return new TrainModel({ kind: 'draem', channels: [], seed: this.seed, threads: this.trainThreads, lr: this.lr, beta1: 0.9, beta2: 0.999, device: this.trainDevice, extra: { widths: this.widths } });
  }

  /** fit() calls the current networks have been trained by (continued fits count on). */
  get fitCount(): number {
    return this.fits;
  }

  private decode(paths: string[], batchSize: number, signal?: AbortSignal): ReturnType<typeof batches> {
    return batches(paths, { imageSize: this.imageSize, cropSize: this.cropSize, resize: 'exact', normalisation: 'unit', batchSize, prefetch: Math.max(4, batchSize * 2), signal });
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for DRAEM but received none');
    const t0 = process.hrtime.bigint();
    const s = this.cropSize;
    const plane = 3 * s * s;
    // The texture folder is checked before anything trains.
    const synth = await AnomalySynthesiser.create({ size: s, textureRoot: this.textureRoot, textureArg: '--texture-root (textureRoot)' });
    const paths = samples.map((x) => x.path);
    const n = paths.length;
    const budget = this.memoryBudgetBytes ?? defaultMemoryBudget();
    const cache = this.cacheImages ?? 4 * plane * n <= budget / 2;
    let images: Float32Array | null = null;
    if (cache) {
      images = new Float32Array(n * plane);
      for await (const b of this.decode(paths, this.batchSize, opts.signal)) images.set(b.data, b.start * plane);
    }
    const model = proceed ? (this.model as TrainModel) : this.createModel();
    const fitIndex = proceed ? this.fits : 0;
    // Unfitted until this fit ends (a stopped or diverged fit leaves no model to checkpoint).
    this.model = null;
    this.fits = 0;

    const root = new Random(this.seed);
    const shuffle = root.fork(fitIndex === 0 ? 'shuffle' : `shuffle-${fitIndex}`);
    const stepsPerEpoch = Math.ceil(n / this.batchSize);
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    const pipeline = new StepPipeline('DRAEM', this.epochs, stepsPerEpoch, opts);

    const makeBatch = async (clean: Float32Array, m: number, epoch: number, first: number): Promise<Batch> => {
      const out: SynthesisedSample[] = [];
      for (let j = 0; j < m; j++) out.push(await synth.sample(clean.subarray(j * plane, (j + 1) * plane), root.fork('synthesis', fitIndex, epoch, first + j)));
      const cl = new Float32Array(m * plane);
      const au = new Float32Array(m * plane);
      const mk = new Float32Array(m * s * s);
      out.forEach((o, j) => {
        cl.set(o.clean, j * plane);
        au.set(o.augmented, j * plane);
        mk.set(o.mask, j * s * s);
      });
      return { clean: { data: cl, shape: [m, 3, s, s] }, augmented: { data: au, shape: [m, 3, s, s] }, mask: { data: mk, shape: [m, 1, s, s] } };
    };

    for (let epoch = 0; epoch < this.epochs; epoch++) {
      const order = shuffle.shuffle(Array.from({ length: n }, (_, i) => i));
      const lr: Nchw = { data: new Float32Array([draemLearningRate(this.lr, epoch, this.epochs)]), shape: [1, 1, 1, 1] };
      pipeline.startEpoch(epoch);
      // The clean images of the epoch's batches, in order (from the cache, or decoded again).
      const cleanBatches = async function* (self: Draem): AsyncGenerator<{ data: Float32Array; n: number; start: number }> {
        if (images) {
          for (let b = 0; b < n; b += self.batchSize) {
            const idx = order.slice(b, b + self.batchSize);
            const data = new Float32Array(idx.length * plane);
            idx.forEach((i, j) => data.set(images!.subarray(i * plane, (i + 1) * plane), j * plane));
            yield { data, n: idx.length, start: b };
          }
        } else {
          for await (const b of self.decode(order.map((i) => paths[i]), self.batchSize, opts.signal)) yield { data: b.data, n: b.n, start: b.start };
        }
      };
      // The next batch is synthesised while the current step runs on the training thread.
      try {
        for await (const c of cleanBatches(this)) {
          if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
          const batch = await makeBatch(c.data, c.n, epoch, c.start);
          await pipeline.submit(c.n, () => model.step(batch.clean, [batch.augmented, batch.mask, lr], { signal: opts.signal }));
        }
        losses.push(await pipeline.endEpoch());
      } finally {
        await pipeline.settle();
      }
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    this.model = model;
    this.fits = fitIndex + 1;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: (this.epochs * n) / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.model !== null, 'DRAEM');
    const model = this.model as TrainModel;
    const list = requireSamples(samples, 'samples');
    const s = this.cropSize;
    const scores = new Float64Array(list.length);
    const maps: AnomalyMap[] = [];
    const timing: Timing = { backboneMs: [], methodMs: [] };
    for await (const b of this.decode(list.map((x) => x.path), 1, opts.signal)) {
      const t = process.hrtime.bigint();
      const raw = await model.maps(null, [{ data: b.data, shape: [b.n, 3, s, s] }], s, { signal: opts.signal });
      const out = await scoreGridsToMaps(raw, b.n, s, s, b.geometries, s, { sigma: 0, signal: opts.signal });
      for (let i = 0; i < b.n; i++) {
        scores[b.start + i] = pooledMax(raw.subarray(i * s * s, (i + 1) * s * s), s, this.scorePool);
        maps.push(out.maps[i]);
      }
      const ms = elapsedMs(t);
      for (let i = 0; i < b.n; i++) {
        timing.backboneMs.push(0);
        timing.methodMs.push(ms / b.n);
      }
      opts.onProgress?.(b.start + b.n, list.length);
    }
    this.timing = timing;
    return { scores, maps };
  }

  /** Both networks' weights and batch-norm statistics and Adam's state, for a checkpoint. */
  saveState(): DetectorState {
    requireFitted(this.model !== null, 'DRAEM');
    const { arrays, config } = trainedModelState(this.model as TrainModel);
    return { config: { kind: 'draem', widths: this.widths, ...config, fits: this.fits, cropSize: this.cropSize, stats: this.stats }, arrays };
  }

  async loadState(state: DetectorState): Promise<void> {
    requireCheckpointKind(state, 'draem');
    const widths = configInts(state, 'widths');
    if (widths.join() !== this.widths.join()) {
      throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected DRAEM networks of widths ${this.widths.join(', ')} but the checkpoint's have ${widths.join(', ')}`);
    }
    requireCheckpointCrop(state, this.cropSize);
    const fits = configInt(state, 'fits');
    const model = this.createModel();
    restoreTrainedModel(model, state);
    this.model = model;
    this.fits = fits;
    this.stats = null;
  }

  trainingStats(): TrainingStats | null {
    return this.stats;
  }

  stateBytes(): number {
    return this.model ? this.model.parameterCount * 4 : 0;
  }

  /** Trainable parameters of both networks (0 before fit). */
  parameterCount(): number {
    return this.model ? this.model.parameterCount : 0;
  }

  lastTiming(): Timing {
    return this.timing;
  }
}
