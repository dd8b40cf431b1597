/**
 * CutPaste (Li et al., CVPR 2021): a ResNet-18 with a projection head, fine-tuned end to end to tell normal images
 * from their cut-paste and scar views (3-way), then a Gaussian of the training images' embeddings; an image's score
 * is its Mahalanobis distance. The network, loss and density are in native/train/cutpaste.cc; the views in
 * lib/image/cutpaste.ts.
 *
 * The ResNet-18 starts from the weights of the ONNX backbone (`backbone`, else imiad's seeded default ResNet-18),
 * read by lib/backbone/resnet-weights.ts; a backbone that is not a ResNet-18 is an ERR_IMIAD_LAYOUT error. Defaults
 * follow the IM-IAD paper's Table V (open-iad's configuration): 224 px (resize and crop 224), batch 32 images (x 3
 * views), 256 epochs, Adam lr 1e-4 with weight decay 1e-5, and open-iad's CosineAnnealingWarmRestarts(T_0 = epochs)
 * stepped after every batch with the epoch index (`cutPasteLearningRate`). The training images are shuffled every
 * epoch (seeded), the last batch may be smaller. After training, the Gaussian (mean, Ledoit-Wolf precision) is
 * fitted on the L2-normalised EVAL-mode embeddings of the un-augmented training images (open-iad fits it on stale
 * train-mode embeddings of every epoch; open-iad also applies softmax twice: neither is copied).
 *
 * No anomaly map: CutPaste scores images (open-iad has no map either; the paper's localisation runs the network on
 * every 64 px patch and upsamples the patch scores by Gaussian smoothing, which is not implemented here).
 * Continual setting (`sequential`): a continued fit trains the same network with its optimiser state on the new
 * images, the schedule starting again at epoch 0 (open-iad's per-task loop), then refits the Gaussian on them.
 */
import * as os from 'os';

import { imiadError, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { resnetLayoutExtra } from '../../bindings/train/layout';
import { type Nchw, trainAddon, TrainModel } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import { defaultBackboneFile } from '../backbone/builder';
import { resnet18Weights } from '../backbone/resnet-weights';
import type { Sample } from '../datasets/types';
import { cutPasteViews } from '../image/cutpaste';
import { batches, IMAGENET_MEAN, IMAGENET_STD } from '../image/pipeline';
import { Random } from '../prng';
import { configInt, configInts, requireCheckpointCrop, requireCheckpointKind, restoreTrainedModel, trainedModelState } from './checkpoint';
import { type BackboneParams, continuesTraining, elapsedMs, optionalInt, requireFitted, requireSamples, resolveBackboneParams, type ResolvedBackboneParams } from './features';
import type { Detector, DetectorState, FitOptions, Prediction, RunOptions, Timing, TrainingStats, TrainSample } from './types';

export interface CutPasteParams extends BackboneParams {
  /** Training epochs (default 256). */
  epochs?: number;
  /** Adam's base learning rate (default 1e-4). */
  lr?: number;
  /** Adam's weight decay (default 1e-5). */
  weightDecay?: number;
  /** Widths of the projection head's Linear + BN + ReLU layers (default [512, 128]). */
  headDims?: number[];
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
  /** Where the network trains: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
}

/** The classes of the 3-way task, in batch order. */
export const CUTPASTE_CLASSES = ['normal', 'cut-paste', 'scar'] as const;

/**
 * The learning rate of global step `step` (0-based) of a fit: open-iad steps CosineAnnealingWarmRestarts(T_0) with
 * the epoch index after every batch, so a step runs at the rate set after the step before it:
 * base (1 + cos(pi (e mod T_0) / T_0)) / 2 with e the previous step's epoch (0 for the first step).
 */
export function cutPasteLearningRate(base: number, step: number, stepsPerEpoch: number, t0: number): number {
  const epoch = step === 0 ? 0 : Math.floor((step - 1) / stepsPerEpoch);
  return (base * (1 + Math.cos((Math.PI * (epoch % t0)) / t0))) / 2;
}

/** ImageNet-normalised planar RGB to [0, 1] and back (the views are drawn on [0, 1] pixels). */
function toUnit(data: Float32Array, plane: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) out[c * plane + i] = data[c * plane + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c];
  }
  return out;
}

function normaliseInto(dst: Float32Array, at: number, src: Float32Array, plane: number): void {
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) dst[at + c * plane + i] = (src[c * plane + i] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
  }
}

export class CutPasteDetector implements Detector {
  readonly name = 'cutpaste';
  readonly usesLabelledAnomalies = false;
  readonly epochs: number;
  readonly lr: number;
  readonly weightDecay: number;
  readonly headDims: number[];
  readonly trainThreads: number;
  readonly trainDevice: 'cpu' | 'cuda';
  readonly params: ResolvedBackboneParams;
  private model: TrainModel | null = null;
  private fits = 0;
  private timing: Timing = { backboneMs: [], methodMs: [] };
  private stats: TrainingStats | null = null;
  /** Step losses of the last fit, in order (tests and the PyTorch peer compare trajectories). */
  stepLosses: number[] = [];

  constructor(params: CutPasteParams = {}) {
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const imageSize = params.imageSize ?? 224;
    this.params = resolveBackboneParams({ batchSize: 32, ...params, imageSize, cropSize: params.cropSize ?? imageSize }, ['layer4']);
    if (params.backbone === undefined && this.params.backboneShape !== 'resnet18') {
      throw invalidType("'resnet18' (CutPaste fine-tunes a ResNet-18)", 'backboneShape', this.params.backboneShape);
    }
    this.epochs = optionalInt(params.epochs, 'epochs', 1, 1_000_000, 256);
    if (params.lr !== undefined && !(is.number(params.lr) && params.lr > 0)) throw invalidType('positive number', 'lr', params.lr);
    this.lr = params.lr ?? 1e-4;
    if (params.weightDecay !== undefined && !(is.number(params.weightDecay) && params.weightDecay >= 0)) throw invalidType('number >= 0', 'weightDecay', params.weightDecay);
    this.weightDecay = params.weightDecay ?? 1e-5;
    const head = params.headDims ?? [512, 128];
    if (!Array.isArray(head) || head.length === 0 || !head.every((d) => is.integer(d) && d >= 1 && d <= 65536)) {
      throw invalidType('non-empty array of integers between 1 and 65536', 'headDims', head);
    }
    this.headDims = [...head];
    this.trainThreads = optionalInt(params.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    // Fail at construction, with the instructions, when the training addon is missing or CUDA cannot be had.
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(params.device));
  }

  /** The ONNX file whose ResNet-18 weights the network starts from. */
  backboneFile(): string {
    return this.params.backbone ?? defaultBackboneFile({ shape: 'resnet18', seed: this.params.backboneSeed });
  }

  /** A new network: the ResNet-18 from `weights` (else torchvision's init from the seed), the head from the seed. */
  createModel(weights: Awaited<ReturnType<typeof resnet18Weights>> | null): TrainModel {
    return new TrainModel({
      kind: 'cutpaste',
      channels: [],
      seed: this.params.seed,
      threads: this.trainThreads,
      lr: this.lr,
      weightDecay: this.weightDecay,
      device: this.trainDevice,
      extra: { headDims: this.headDims, classes: [CUTPASTE_CLASSES.length], ...resnetLayoutExtra('cutpaste') },
      ...(weights ? { weights } : {}),
    });
  }

  /** A fresh network with the backbone's weights (what fit() starts from; the PyTorch peer copies its state). */
  async initialModel(): Promise<TrainModel> {
    return this.createModel(await resnet18Weights(this.backboneFile()));
  }

  /**
   * The 3-way training batch of `images` (ImageNet-normalised [m, 3, s, s]): the normal views, then the cut-paste
   * views, then the scar views; image j's draws come from `rng.fork(j)`.
   */
  static views(images: Float32Array, m: number, size: number, rng: Random): Nchw {
    const plane = size * size;
    const per = 3 * plane;
    const out = new Float32Array(3 * m * per);
    for (let j = 0; j < m; j++) {
      const unit = toUnit(images.subarray(j * per, (j + 1) * per), plane);
      const v = cutPasteViews({ data: unit, width: size, height: size }, rng.fork(j));
      normaliseInto(out, j * per, v.normal, plane);
      normaliseInto(out, (m + j) * per, v.cutPaste, plane);
      normaliseInto(out, (2 * m + j) * per, v.scar, plane);
    }
    return { data: out, shape: [3 * m, 3, size, size] };
  }

  get fitCount(): number {
    return this.fits;
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const samples = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (samples.length < 2) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected at least 2 normal training images for CutPaste but received ${samples.length}`);
    const t0 = process.hrtime.bigint();
    const { imageSize, cropSize, batchSize, seed } = this.params;
    const paths = samples.map((s) => s.path);
    const n = paths.length;
    const per = 3 * cropSize * cropSize;
    const decode = (list: string[], size: number): ReturnType<typeof batches> =>
      batches(list, { imageSize, cropSize, batchSize: size, prefetch: Math.max(4, size * 2), signal: opts.signal });

    // The decoded training images stay in memory when they fit in half the budget; else every epoch decodes again.
    const budget = this.params.memoryBudgetBytes ?? defaultMemoryBudget();
    let cached: Float32Array | null = null;
    if (4 * per * n <= budget / 2) {
      cached = new Float32Array(n * per);
      for await (const b of decode(paths, batchSize)) cached.set(b.data, b.start * per);
    }
    const model = proceed ? (this.model as TrainModel) : await this.initialModel();
    const fitIndex = proceed ? this.fits : 0;
    // A continued network stopped mid-task is neither the old model nor the new one: unfitted until this fit ends.
    if (proceed) {
      this.model = null;
      this.fits = 0;
    }
    const gather = async (order: number[]): Promise<Float32Array> => {
      if (cached) {
        const out = new Float32Array(order.length * per);
        order.forEach((idx, j) => out.set((cached as Float32Array).subarray(idx * per, (idx + 1) * per), j * per));
        return out;
      }
      const parts: Float32Array[] = [];
      for await (const b of decode(order.map((i) => paths[i]), order.length)) parts.push(b.data);
      return parts[0];
    };

    // The first fit keeps the stream it always had; the k-th continued fit draws its own.
    const root = new Random(seed);
    const shuffle = root.fork(fitIndex === 0 ? 'shuffle' : `shuffle-${fitIndex}`);
    const stepsPerEpoch = Math.ceil(n / batchSize);
    const totalSteps = stepsPerEpoch * this.epochs;
    const losses: number[] = [];
    this.stepLosses = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    for (let epoch = 0; epoch < this.epochs; epoch++) {
      const order = shuffle.shuffle(Array.from({ length: n }, (_, i) => i));
      let sum = 0;
      let count = 0;
      for (let s = 0; s < n; s += batchSize) {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const chunk = order.slice(s, s + batchSize);
        const images = await gather(chunk);
        const batch = CutPasteDetector.views(images, chunk.length, cropSize, root.fork('views', fitIndex, epoch, s));
        model.setLearningRate(cutPasteLearningRate(this.lr, step, stepsPerEpoch, this.epochs));
        const loss = await model.step(batch, [], { signal: opts.signal });
        if (!Number.isFinite(loss)) {
          throw imiadError('Error', 'ERR_IMIAD_TRAINING_DIVERGED', `CutPaste's training loss became ${loss} in epoch ${epoch + 1} (lower --lr)`);
        }
        this.stepLosses.push(loss);
        sum += loss;
        count += 1;
        step += 1;
        const seconds = elapsedMs(tTrain) / 1000;
        const rate = seconds > 0 ? (step * batchSize) / seconds : 0;
        opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${this.epochs} loss ${(sum / count).toFixed(4)} ${rate.toFixed(1)} img/s`);
      }
      losses.push(sum / count);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    // The Gaussian of the eval-mode embeddings of the (un-augmented) training images.
    let first = true;
    for (let s = 0; s < n; s += batchSize) {
      const chunk = Array.from({ length: Math.min(batchSize, n - s) }, (_, j) => s + j);
      const images = await gather(chunk);
      await model.calibrate([{ data: images, shape: [chunk.length, 3, cropSize, cropSize] }], first, { signal: opts.signal });
      first = false;
    }
    this.model = model;
    this.fits = fitIndex + 1;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: (this.epochs * n) / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.model !== null, 'CutPaste');
    const model = this.model as TrainModel;
    const list = requireSamples(samples, 'samples');
    const { imageSize, cropSize } = this.params;
    const scores = new Float64Array(list.length);
    const timing: Timing = { backboneMs: [], methodMs: [] };
    for await (const b of batches(list.map((s) => s.path), { imageSize, cropSize, batchSize: 1, prefetch: 4, signal: opts.signal })) {
      const t = process.hrtime.bigint();
      const out = await model.scores([{ data: b.data, shape: [b.n, 3, cropSize, cropSize] }], { signal: opts.signal });
      if (!out) throw imiadError('Error', 'ERR_IMIAD_NATIVE', 'CutPaste returned no image scores');
      const ms = elapsedMs(t);
      for (let i = 0; i < b.n; i++) {
        scores[b.start + i] = out[i];
        // The network is the backbone: its whole time is the method's.
        timing.backboneMs.push(0);
        timing.methodMs.push(ms / b.n);
      }
      opts.onProgress?.(b.start + b.n, list.length);
    }
    this.timing = timing;
    return { scores, maps: [] };
  }

  /** The network's weights, the Gaussian and the optimiser state, for a checkpoint. */
  saveState(): DetectorState {
    requireFitted(this.model !== null, 'CutPaste');
    const { arrays, config } = trainedModelState(this.model as TrainModel);
    return { config: { kind: 'cutpaste', headDims: this.headDims, ...config, fits: this.fits, cropSize: this.params.cropSize, stats: this.stats }, arrays };
  }

  async loadState(state: DetectorState): Promise<void> {
    requireCheckpointKind(state, 'cutpaste');
    const headDims = configInts(state, 'headDims');
    if (headDims.join() !== this.headDims.join()) {
      throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected a projection head of ${this.headDims.join(', ')} but the checkpoint's is ${headDims.join(', ')}`);
    }
    requireCheckpointCrop(state, this.params.cropSize);
    const fits = configInt(state, 'fits');
    const model = this.createModel(null);
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

  lastTiming(): Timing {
    return this.timing;
  }

  async dispose(): Promise<void> {
    // Nothing outside the network (which the garbage collector frees): no ONNX Runtime session.
  }
}
