/**
 * What DevNet and DRA share (lib/methods/devnet.ts, lib/methods/dra.ts; networks: native/train/devnet.cc, dra.cc):
 * supervised detectors that fine-tune a ResNet-18 end to end on the normal training images plus the labelled
 * anomalies of the supervised setting (paper III-A-2: n = 10 anomalous test images moved into training), scored by
 * the deviation loss. The ResNet-18's starting weights are imported from the ONNX backbone (`backbone`, default:
 * imiad's seeded ResNet-18; lib/backbone/resnet-weights.ts), which is not run itself: the fine-tuned network in the
 * training addon replaces it.
 *
 * Training follows the official loops (Choubo/deviation-network-image, Choubo/DRA train.py):
 * - images: Resize((s, s)) (bilinear, 448 px by default; a centre crop only if `cropSize` < `imageSize`), then
 *   RandomRotation(180) (nearest, black corners), then ImageNet normalisation; test images are not rotated;
 * - balanced batches (BalancedBatchSampler): each of `stepsPerEpoch` steps takes its normal share of the batch (DevNet
 *   1/2, DRA 2/3) from an endless stream of shuffled normal images and the rest from a stream of shuffled labelled
 *   anomalies (each stream reshuffles when it runs out), so every batch holds anomalies however few there are;
 * - the deviation loss's 5000 reference draws from N(0, 1) are drawn here (one row per loss term, per step);
 * - every random choice comes from the seed (and from the fit's index when training continues), so the same seed
 *   gives the same network and the same scores.
 * The training images are decoded once (8-bit, at the network's side); the next batch is augmented while the addon
 * runs the current step. Without labelled anomalies among the training
 * samples fit() refuses (ERR_IMIAD_EMPTY), naming `--setting supervised`. Scores are image-level only (no maps).
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
import { resnet18Weights, type ResNetWeights } from '../backbone/resnet-weights';
import type { Sample } from '../datasets/types';
import { type RgbImage, randomRotation } from '../image/cutmix';
import { batches, normalisePixels, preparePixels } from '../image/pipeline';
import { Random } from '../prng';
import { requireLabelledAnomalies } from '../synthesis/labelled';
import { configExtra, configInt, requireCheckpointCrop, requireCheckpointKind, restoreTrainedModel, trainedModelState } from './checkpoint';
import { continuesTraining, elapsedMs, optionalInt, requireBudget, requireFitted, requireSamples } from './features';
import type { Detector, DetectorState, FitOptions, Prediction, RunOptions, Timing, TrainingStats, TrainSample } from './types';

/** The deviation loss's reference draws per loss term (l = 5000 in the papers' Algorithm 1). */
export const REFERENCE_DRAWS = 5000;

export interface DeviationParams {
  /** An ONNX ResNet-18 whose weights start the fine-tuning; absent = imiad's seeded default ResNet-18. */
  backbone?: string;
  /** Seed of the default backbone's weights (default 0). */
  backboneSeed?: number;
  /** Only 'resnet18' (the network fine-tuned). */
  backboneShape?: 'resnet18';
  /** Only ['layer4'] (the map the heads score). */
  layers?: string[];
  /** Resize side, both sides (default 448: Resize((448, 448)) as the official code). */
  imageSize?: number;
  /** Centre crop side after the resize (default: the image size, no crop). A multiple of 64 (2 scales x 32). */
  cropSize?: number;
  /** Training epochs (DevNet 50, DRA 30). */
  epochs?: number;
  /** Adam's learning rate (default 2e-4). */
  lr?: number;
  /** Images per training step (default 48). */
  batchSize?: number;
  /** Steps per epoch (default 20). */
  stepsPerEpoch?: number;
  /** Seed of the batches, the augmentations and the heads' initialisation (default 0). */
  seed?: number;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
  /** Where the network trains: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
  /** The decoded training images must fit in this many bytes (default: half of this machine's memory). */
  memoryBudgetBytes?: number;
}

export interface DeviationDefaults {
  kind: 'devnet' | 'dra';
  label: string;
  epochs: number;
  /** Share of normal images in a batch: DevNet 1/2, DRA 2/3 (batch // 2, 2 * batch // 3 normal slots). */
  normalNumerator: number;
  normalDenominator: number;
  /** Loss terms, each with its own reference draws (DevNet 1, DRA 4). */
  referenceRows: number;
  /** 1 when the official loop steps its StepLR at the start of an epoch (DRA), 0 at the end (DevNet). */
  decayShift: number;
  /** Reference normal images prepended to every batch (DRA 5). */
  referenceImages: number;
}

/** One assembled training batch: normalised images (DRA: the reference normals first), labels and reference draws. */
export interface TrainBatch {
  images: Nchw;
  labels: Nchw;
  reference: Nchw;
}

/** An endless stream of indices, reshuffled (seeded) each time it runs out: BalancedBatchSampler's randomGenerator. */
class IndexStream {
  private order: number[] = [];
  private at = 0;

  constructor(
    private readonly count: number,
    private readonly rng: Random,
  ) {}

  next(): number {
    if (this.at >= this.order.length) {
      this.order = this.rng.shuffle(Array.from({ length: this.count }, (_, i) => i));
      this.at = 0;
    }
    return this.order[this.at++];
  }
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** How a detector fills its batches (DeviationDetector.trainingBatches). */
export interface BatchPlan {
  side: number;
  batchSize: number;
  /** Normal slots at the start of the batch; the rest are labelled anomalies. */
  normalSlots: number;
  /** Reference normals before the batch (DRA 5). */
  referenceImages: number;
  /** Rows of reference draws (loss terms). */
  referenceRows: number;
  /** The image and label of a normal slot before its rotation (DRA: a CutMix pseudo-anomaly half of the time). */
  normalSlot: (normals: RgbImage[], index: number, rng: Random) => { image: RgbImage; label: number };
}

/**
 * The balanced training batches of one fit: BalancedBatchSampler's endless shuffled streams of normal and anomalous
 * indices (and DRA's reference stream), RandomRotation(180) of every image, the reference draws; all from `rng`.
 */
export class BalancedBatches {
  private readonly normalStream: IndexStream;
  private readonly anomalyStream: IndexStream;
  private readonly referenceStream: IndexStream;
  private readonly augment: Random;
  private readonly draws: Random;

  constructor(
    private readonly normals: RgbImage[],
    private readonly anomalies: RgbImage[],
    private readonly plan: BatchPlan,
    rng: Random,
  ) {
    if (normals.length === 0 || anomalies.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal and anomalous training images for balanced batches');
    this.normalStream = new IndexStream(normals.length, rng.fork('normal-stream'));
    this.anomalyStream = new IndexStream(anomalies.length, rng.fork('anomaly-stream'));
    this.referenceStream = new IndexStream(normals.length, rng.fork('reference-stream'));
    this.augment = rng.fork('augment');
    this.draws = rng.fork('reference-draws');
  }

  async next(): Promise<TrainBatch> {
    const { side, batchSize: m, normalSlots, referenceImages: refs, referenceRows } = this.plan;
    const plane = 3 * side * side;
    const images = new Float32Array((refs + m) * plane);
    const labels = new Float32Array(m);
    let slot = 0;
    const put = async (image: RgbImage): Promise<void> => {
      normalisePixels(images, slot++, randomRotation(image, 180, this.augment).data, side);
      await yieldToEventLoop();
    };
    for (let r = 0; r < refs; r++) await put(this.normals[this.referenceStream.next()]);
    for (let i = 0; i < normalSlots; i++) {
      const { image, label } = this.plan.normalSlot(this.normals, this.normalStream.next(), this.augment);
      labels[i] = label;
      await put(image);
    }
    for (let i = normalSlots; i < m; i++) {
      labels[i] = 1;
      await put(this.anomalies[this.anomalyStream.next()]);
    }
    const reference = new Float32Array(referenceRows * REFERENCE_DRAWS);
    for (let i = 0; i < reference.length; i++) reference[i] = this.draws.normal();
    return {
      images: { data: images, shape: [refs + m, 3, side, side] },
      labels: { data: labels, shape: [m, 1, 1, 1] },
      reference: { data: reference, shape: [referenceRows, 1, 1, REFERENCE_DRAWS] },
    };
  }
}

export abstract class DeviationDetector implements Detector {
  abstract readonly name: string;
  readonly usesLabelledAnomalies = true;
  readonly epochs: number;
  readonly lr: number;
  readonly batchSize: number;
  readonly stepsPerEpoch: number;
  readonly imageSize: number;
  readonly cropSize: number;
  readonly seed: number;
  readonly trainThreads: number;
  /** The device the network trains on, 'auto' resolved at construction. */
  readonly trainDevice: 'cpu' | 'cuda';
  private readonly backbone?: string;
  private readonly backboneSeed: number;
  private readonly memoryBudgetBytes?: number;
  private model: TrainModel | null = null;
  private fits = 0;
  private timing: Timing = { backboneMs: [], methodMs: [] };
  private stats: TrainingStats | null = null;

  protected constructor(
    params: DeviationParams,
    protected readonly defaults: DeviationDefaults,
  ) {
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const p: DeviationParams = params ?? {};
    // The network is a ResNet-18 through layer4 by definition: other shapes and taps are refused, not ignored.
    if (p.backboneShape !== undefined && (p.backboneShape as unknown) !== 'resnet18') throw invalidType("'resnet18' (the network fine-tuned)", 'backboneShape', p.backboneShape);
    if (p.layers !== undefined && !(Array.isArray(p.layers) && p.layers.length === 1 && p.layers[0] === 'layer4')) {
      throw invalidType(`['layer4'] (${defaults.label} scores the fine-tuned ResNet-18's layer4)`, 'layers', p.layers);
    }
    if (p.backbone !== undefined && !(is.string(p.backbone) && p.backbone.length > 0)) throw invalidType('path of an ONNX file', 'backbone', p.backbone);
    this.backbone = p.backbone;
    this.backboneSeed = optionalInt(p.backboneSeed, 'backboneSeed', 0, 0xffffffff, 0);
    this.imageSize = optionalInt(p.imageSize, 'imageSize', 64, 16384, 448);
    this.cropSize = optionalInt(p.cropSize, 'cropSize', 64, this.imageSize, this.imageSize);
    // Two input scales, each a multiple of ResNet-18's stride 32.
    if (this.cropSize % 64 !== 0) throw invalidType('multiple of 64 (two input scales, each divisible by 32)', 'cropSize', this.cropSize);
    this.epochs = optionalInt(p.epochs, 'epochs', 1, 1_000_000, defaults.epochs);
    if (p.lr !== undefined && !(is.number(p.lr) && p.lr > 0)) throw invalidType('positive number', 'lr', p.lr);
    this.lr = p.lr ?? 2e-4;
    this.batchSize = optionalInt(p.batchSize, 'batchSize', 3, 4096, 48);
    if (this.normalSlots() < 1 || this.batchSize - this.normalSlots() < 1) throw invalidType('batch size with at least one normal and one anomalous slot', 'batchSize', this.batchSize);
    this.stepsPerEpoch = optionalInt(p.stepsPerEpoch, 'stepsPerEpoch', 1, 1_000_000, 20);
    this.seed = optionalInt(p.seed, 'seed', 0, Number.MAX_SAFE_INTEGER, 0);
    this.trainThreads = optionalInt(p.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    if (p.memoryBudgetBytes !== undefined && !(is.number(p.memoryBudgetBytes) && p.memoryBudgetBytes > 0)) throw invalidType('positive number', 'memoryBudgetBytes', p.memoryBudgetBytes);
    this.memoryBudgetBytes = p.memoryBudgetBytes;
    // Fail at construction, with the instructions, when the training addon is missing or CUDA cannot be had.
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(p.device));
  }

  /** Normal slots of a batch: batch // 2 (DevNet), 2 * batch // 3 (DRA). */
  protected normalSlots(): number {
    return Math.floor((this.batchSize * this.defaults.normalNumerator) / this.defaults.normalDenominator);
  }

  /**
   * The image and label of one normal slot (DRA replaces half of them by CutMix pseudo-anomalies, label 2); the
   * image is not yet rotated.
   */
  protected normalSlot(normals: RgbImage[], index: number, rng: Random): { image: RgbImage; label: number } {
    void rng;
    return { image: normals[index], label: 0 };
  }

  /** The batches a fit draws from `rng` (exported for bench/deviation.ts, which hands the same ones to a peer). */
  trainingBatches(normals: RgbImage[], anomalies: RgbImage[], rng: Random): BalancedBatches {
    const plan: BatchPlan = {
      side: this.cropSize,
      batchSize: this.batchSize,
      normalSlots: this.normalSlots(),
      referenceImages: this.defaults.referenceImages,
      referenceRows: this.defaults.referenceRows,
      normalSlot: (n, i, r) => this.normalSlot(n, i, r),
    };
    return new BalancedBatches(normals, anomalies, plan, rng);
  }

  /** The native model's method numbers (sizes, schedule, loss constants). */
  extra(): Record<string, number[]> {
    return {
      side: [this.cropSize],
      scales: [2],
      stepsPerEpoch: [this.stepsPerEpoch],
      decayEvery: [10],
      gamma: [0.1],
      decayShift: [this.defaults.decayShift],
      topk: [0.1],
      margin: [5],
      clipNorm: [1],
      ...(this.defaults.referenceImages ? { references: [this.defaults.referenceImages] } : {}),
    };
  }

  /** A fresh network: the imported weights (null: torchvision's initialisation, to be overwritten by a state). */
  createModel(weights: ResNetWeights | null, extra: Record<string, number[]> = this.extra()): TrainModel {
    return new TrainModel({
      kind: this.defaults.kind,
      channels: [512],
      seed: this.seed,
      threads: this.trainThreads,
      lr: this.lr,
      weightDecay: 1e-5,
      device: this.trainDevice,
      // The ResNet-18's memory layout is a speed choice, not the model's: the current one, whatever a checkpoint says.
      extra: { ...extra, ...resnetLayoutExtra(this.defaults.kind) },
      ...(weights ? { weights } : {}),
    });
  }

  /** Training images as the batches take them: Resize((s, s)), centre crop, 8-bit RGB. */
  async decode(samples: Sample[], signal?: AbortSignal): Promise<RgbImage[]> {
    const out: RgbImage[] = [];
    for (const s of samples) {
      if (signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
      const { rgb } = await preparePixels(s.path, { imageSize: this.imageSize, cropSize: this.cropSize, resize: 'exact' });
      out.push({ data: rgb, width: this.cropSize, height: this.cropSize });
    }
    return out;
  }

  /** fit() calls the current network has been trained by. */
  get fitCount(): number {
    return this.fits;
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const all = requireSamples(train, 'train');
    const label = this.defaults.label;
    const { normals: normalSamples, anomalies: anomalySamples } = requireLabelledAnomalies(label, all, false);
    const t0 = process.hrtime.bigint();
    const side = this.cropSize;
    const plane = 3 * side * side;
    requireBudget(`${label}'s decoded training images`, (normalSamples.length + anomalySamples.length) * plane, this.memoryBudgetBytes, defaultMemoryBudget());
    const normals = await this.decode(normalSamples, opts.signal);
    const anomalies = await this.decode(anomalySamples, opts.signal);

    const model = proceed ? (this.model as TrainModel) : this.createModel(await this.weights(), this.extra());
    const fitIndex = proceed ? this.fits : 0;
    if (proceed) {
      this.model = null;
      this.fits = 0;
    }
    const root = new Random(this.seed).fork(fitIndex === 0 ? 'fit' : `fit-${fitIndex}`);
    const source = this.trainingBatches(normals, anomalies, root);
    const refs = this.defaults.referenceImages;
    const m = this.batchSize;

    const totalSteps = this.epochs * this.stepsPerEpoch;
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    let next = await source.next();
    for (let epoch = 0; epoch < this.epochs; epoch++) {
      let sum = 0;
      for (let s = 0; s < this.stepsPerEpoch; s++) {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const batch = next;
        const running = model.step(batch.images, [batch.labels, batch.reference], { signal: opts.signal });
        // The next batch is augmented while the addon trains on this one.
        const upcoming = step + 1 === totalSteps ? null : source.next();
        upcoming?.catch(() => undefined);
        const loss = await running;
        step += 1;
        if (!Number.isFinite(loss)) {
          throw imiadError(
            'Error',
            'ERR_IMIAD_TRAINING_DIVERGED',
            `${label}'s training loss became ${loss} in epoch ${epoch + 1}, step ${s + 1} (lower --lr); the model was not kept`,
          );
        }
        sum += loss;
        const seconds = elapsedMs(tTrain) / 1000;
        const rate = seconds > 0 ? (step * m) / seconds : 0;
        opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${this.epochs} loss ${(sum / (s + 1)).toFixed(4)} ${rate.toFixed(1)} img/s`);
        if (upcoming) next = await upcoming;
      }
      losses.push(sum / this.stepsPerEpoch);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    if (refs > 0) await this.setReferences(model, normals, root.fork('test-references'), opts.signal);
    this.model = model;
    this.fits = fitIndex + 1;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: (totalSteps * m) / loopSeconds, losses };
  }

  /**
   * DRA: the reference normals its composite head compares test images with, fixed after training: `refs` training
   * normals chosen by the seed, not augmented (the official test loop draws new, augmented ones per batch of 48).
   */
  private async setReferences(model: TrainModel, normals: RgbImage[], rng: Random, signal?: AbortSignal): Promise<void> {
    const refs = this.defaults.referenceImages;
    const side = this.cropSize;
    const order = rng.shuffle(Array.from({ length: normals.length }, (_, i) => i));
    const images = new Float32Array(refs * 3 * side * side);
    for (let r = 0; r < refs; r++) normalisePixels(images, r, normals[order[r % order.length]].data, side);
    await model.calibrate([{ data: images, shape: [refs, 3, side, side] }], true, { signal });
  }

  /** The starting weights: the ONNX backbone's, by torchvision name. */
  async weights(): Promise<ResNetWeights> {
    const file = this.backbone ?? defaultBackboneFile({ shape: 'resnet18', seed: this.backboneSeed });
    return resnet18Weights(file);
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.model !== null, this.defaults.label);
    const model = this.model as TrainModel;
    const list = requireSamples(samples, 'samples');
    const side = this.cropSize;
    const scores = new Float64Array(list.length);
    const timing: Timing = { backboneMs: [], methodMs: [] };
    const paths = list.map((s) => s.path);
    for await (const b of batches(paths, { imageSize: this.imageSize, cropSize: side, resize: 'exact', batchSize: 1, prefetch: 4, signal: opts.signal })) {
      const t = process.hrtime.bigint();
      const out = await model.scores([{ data: b.data, shape: [b.n, 3, side, side] }], { signal: opts.signal });
      if (!out) throw imiadError('Error', 'ERR_IMIAD_NATIVE', `${this.defaults.label}'s network returned no scores`);
      const ms = elapsedMs(t);
      for (let i = 0; i < b.n; i++) {
        scores[b.start + i] = out[i];
        // The backbone is part of the fine-tuned network: its time is the method's.
        timing.backboneMs.push(0);
        timing.methodMs.push(ms / b.n);
      }
      opts.onProgress?.(b.start + b.n, list.length);
    }
    this.timing = timing;
    return { scores, maps: [] };
  }

  /** The fine-tuned network (backbone and heads), its optimiser state and schedule position, for a checkpoint. */
  saveState(): DetectorState {
    requireFitted(this.model !== null, this.defaults.label);
    const model = this.model as TrainModel;
    const { arrays, config } = trainedModelState(model);
    return {
      config: { kind: this.defaults.kind, extra: model.config.extra ?? {}, ...config, fits: this.fits, cropSize: this.cropSize, stats: this.stats },
      arrays,
    };
  }

  async loadState(state: DetectorState): Promise<void> {
    requireCheckpointKind(state, this.defaults.kind);
    requireCheckpointCrop(state, this.cropSize);
    const fits = configInt(state, 'fits');
    // Every tensor comes from the checkpoint: the network starts from torchvision's initialisation, not the ONNX file.
    const model = this.createModel(null, configExtra(state));
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

  /** Trainable parameters of the fitted network (0 before). */
  parameterCount(): number {
    return this.model ? this.model.parameterCount : 0;
  }

  lastTiming(): Timing {
    return this.timing;
  }

  async dispose(): Promise<void> {
    // No ONNX session is held: the backbone's weights live in the fine-tuned network.
  }
}
