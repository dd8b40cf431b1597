/**
 * PRN, the Prototypical Residual Network (Zhang et al., CVPR 2023), as the reference implementation xcyao00/PRNet
 * builds it (no official code; METHODS.md section 13): a trainable head (native/train/prn.cc) on the frozen ResNet-18's
 * layers 1..4, trained with pixel masks in the supervised setting.
 *
 * - Prototypes (create_proto_feature_maps.py): per level 1..3, k-means on the whole flattened feature maps of the
 *   normal training images, K = 10 % of them (at least 1), seeded; kept in the model's state (checkpoints hold them).
 * - Training batches (datasets/mvtec.py TRAINMVTEC: N normal images plus N/2 real and N/2 pseudo anomalies per epoch,
 *   drop_last): an epoch is floor(2N / batchSize) steps (at least 1); each batch is half normal images (a seeded
 *   shuffle of the normal set, cycled), a quarter real anomalies and a quarter Perlin pseudo-anomalies. The real ones
 *   cycle through the labelled anomalies; the first 5 x (their number) of an epoch's list are the anomalies as they are
 *   (the reference's `reuse_times` 5, loaded without augmentation), the rest copy-pasted onto normal images inside
 *   their foreground (lib/synthesis/labelled.ts copyPaste, BGAD's copy_paste); the list is shuffled. The pseudo ones
 *   are DRAEM-style (lib/synthesis AnomalySynthesiser on a random normal image: rotated by U(-90, 90) with p 0.3, always
 *   an anomaly, texture from --texture-root or Perlin). The backbone runs on every batch (the images change).
 * - Loss SmoothL1(sigmoid(logit), mask) + 5 x focal(alpha 0.5, gamma 4); Adam lr 1e-4, weight decay 1e-2; 700 epochs,
 *   batch 48; 256 px (Table V / the reference's defaults).
 * - Map = sigmoid(logit) at the crop (no blur), mapped back to the original image; image score = the mean of the map's
 *   100 largest pixels (test.py). The reference picks its best epoch on the test set; here the last epoch is kept.
 *
 * Precise batch norm (default; preciseBatchNorm: false turns it off): after the last epoch the batch norms' running
 * statistics are re-estimated at the final weights, as the plain average of their training-mode statistics over one
 * more epoch of training batches (forward only). The reference evaluates with the running averages of the last
 * steps; Adam moves every weight by about the learning rate per step, so in a short training those averages lag
 * far behind the weights and the maps in eval mode lose the localisation that training-mode maps have (measured:
 * mean map 0.2 inside vs 0.1 outside the defect instead of 0.55 vs 0.05). After 700 epochs the two hardly differ.
 *
 * The backbone stays in eval mode (the reference's model.train() also puts its "frozen" timm encoder's batch norms in
 * training mode, so its features follow batch statistics: not copied). A loss that becomes NaN or infinite stops
 * training with ERR_IMIAD_TRAINING_DIVERGED; the detector then holds no model.
 */
import * as os from 'os';

import { imiadError, invalidType } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { resolveTrainDevice, trainDeviceParam } from '../../bindings/train/device';
import { type Nchw, trainAddon, TrainModel } from '../../bindings/train/train';
import type { Device } from '../../bindings/validate';
import type { Sample } from '../datasets/types';
import { batches, IMAGENET_MEAN, IMAGENET_STD } from '../image/pipeline';
import { Random } from '../prng';
import { AnomalySynthesiser } from '../synthesis';
import { type LabelledImage, LabelledAnomalySampler } from '../synthesis/labelled';
import { configExtra, configInts } from './checkpoint';
import { type BackboneParams, continuesTraining, elapsedMs, FeatureExtractor, layerOf, optionalInt, predictInBatches, requireSamples, resolveBackboneParams, scoreGridsToMaps, StepPipeline } from './features';
import { TrainedFeatureDetector } from './trained-detector';
import type { Detector, DetectorState, FitOptions, Prediction, RunOptions, TrainSample } from './types';

const Math = globalThis.Math;

export interface PrnParams extends BackboneParams {
  /** Training epochs (default 700). */
  epochs?: number;
  /** Adam's learning rate (default 1e-4). */
  lr?: number;
  /** Adam's weight decay (L2 in the gradient, as torch.optim.Adam; default 1e-2). */
  weightDecay?: number;
  /** A folder of texture images for the pseudo-anomalies (e.g. DTD's images/), read recursively; default Perlin. */
  textureRoot?: string;
  /** A folder of foreground masks for the copy-paste (default: Otsu thresholding of each normal image). */
  foregroundRoot?: string;
  /** MultiSizeAttention layers per level (default 3, the reference's); fewer make a smaller, faster head. */
  attentionLayers?: number;
  /** Prototypes per level as a share of the normal training images (default 0.1; at least 1 prototype). */
  prototypeRatio?: number;
  /** Seeded k-means runs per level, the lowest inertia kept (default 10, sklearn's n_init). */
  kmeansInit?: number;
  /** Pixels averaged for the image score (default 100). */
  topK?: number;
  /**
   * After training, re-estimate the batch norms' running statistics at the final weights over an epoch of training
   * batches (default true; false keeps the running averages of the last steps, as the reference does).
   */
  preciseBatchNorm?: boolean;
  /** Where the head trains: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
}

/** The mean of the `k` largest values (test.py: torch.topk(scores, 100).mean()). */
export function topKMean(map: Float32Array, k: number): number {
  const sorted = Float32Array.from(map).sort();
  const m = Math.min(k, sorted.length);
  let sum = 0;
  for (let i = sorted.length - m; i < sorted.length; i++) sum += sorted[i];
  return sum / m;
}

/** A batch's composition: normal images, real anomalies, pseudo-anomalies (half anomalous, half of those real). */
export function prnBatchComposition(batchSize: number): { normal: number; real: number; pseudo: number } {
  const anomalous = Math.floor(batchSize / 2);
  const real = Math.ceil(anomalous / 2);
  return { normal: batchSize - anomalous, real, pseudo: anomalous - real };
}

/** Steps per epoch: the reference's 2N-sample epoch in full batches (drop_last), at least one. */
export function prnStepsPerEpoch(normals: number, batchSize: number): number {
  return Math.max(1, Math.floor((2 * normals) / batchSize));
}

/** [0, 1] CHW images to ImageNet-normalised ones, in place of a copy. */
function imagenet(images: Float32Array, n: number, side: number): Float32Array {
  const out = new Float32Array(images.length);
  const plane = side * side;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) {
      const base = (i * 3 + c) * plane;
      const mean = IMAGENET_MEAN[c];
      const inv = 1 / IMAGENET_STD[c];
      for (let j = 0; j < plane; j++) out[base + j] = (images[base + j] - mean) * inv;
    }
  }
  return out;
}

const LAYERS = ['layer1', 'layer2', 'layer3', 'layer4'];

export class Prn extends TrainedFeatureDetector implements Detector {
  readonly name = 'prn';
  protected readonly kind = 'prn';
  protected readonly label = 'PRN';
  readonly usesLabelledAnomalies = true;
  readonly epochs: number;
  readonly lr: number;
  readonly weightDecay: number;
  readonly textureRoot?: string;
  readonly foregroundRoot?: string;
  readonly attentionLayers: number;
  readonly prototypeRatio: number;
  readonly kmeansInit: number;
  readonly topK: number;
  readonly preciseBatchNorm: boolean;
  readonly trainThreads: number;
  readonly trainDevice: 'cpu' | 'cuda';

  constructor(params: PrnParams = {}) {
    super();
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const p = params ?? {};
    const imageSize = p.imageSize ?? 256;
    const resolved = resolveBackboneParams({ backboneShape: 'resnet18', batchSize: 48, ...p, imageSize, cropSize: p.cropSize ?? imageSize }, LAYERS);
    if (resolved.layers.length !== 4) throw invalidType("4 layers (ResNet-18's layer1 .. layer4)", 'layers', p.layers);
    if (resolved.cropSize % 32 !== 0) {
      throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Expected PRN's input side (cropSize, else imageSize) to be a multiple of 32 (its levels halve from layer1 at 1/4 to layer4 at 1/32) but received ${resolved.cropSize}`);
    }
    if (resolved.batchSize < 2) throw invalidType('integer between 2 and 4096 (half of each batch is anomalous)', 'batchSize', resolved.batchSize);
    this.extractor = new FeatureExtractor(resolved);
    this.epochs = optionalInt(p.epochs, 'epochs', 1, 1_000_000, 700);
    if (p.lr !== undefined && !(is.number(p.lr) && p.lr > 0)) throw invalidType('positive number', 'lr', p.lr);
    this.lr = p.lr ?? 1e-4;
    if (p.weightDecay !== undefined && !(is.number(p.weightDecay) && p.weightDecay >= 0)) throw invalidType('number >= 0', 'weightDecay', p.weightDecay);
    this.weightDecay = p.weightDecay ?? 1e-2;
    if (p.textureRoot !== undefined && !(is.string(p.textureRoot) && p.textureRoot !== '')) throw invalidType('a folder path', 'textureRoot', p.textureRoot);
    this.textureRoot = p.textureRoot;
    if (p.foregroundRoot !== undefined && !(is.string(p.foregroundRoot) && p.foregroundRoot !== '')) throw invalidType('a folder path', 'foregroundRoot', p.foregroundRoot);
    this.foregroundRoot = p.foregroundRoot;
    this.attentionLayers = optionalInt(p.attentionLayers, 'attentionLayers', 1, 64, 3);
    if (p.prototypeRatio !== undefined && !(is.number(p.prototypeRatio) && p.prototypeRatio > 0 && p.prototypeRatio <= 1)) throw invalidType('number in (0, 1]', 'prototypeRatio', p.prototypeRatio);
    this.prototypeRatio = p.prototypeRatio ?? 0.1;
    this.kmeansInit = optionalInt(p.kmeansInit, 'kmeansInit', 1, 1000, 10);
    this.topK = optionalInt(p.topK, 'topK', 1, 1 << 30, 100);
    if (p.preciseBatchNorm !== undefined && typeof p.preciseBatchNorm !== 'boolean') throw invalidType('boolean', 'preciseBatchNorm', p.preciseBatchNorm);
    this.preciseBatchNorm = p.preciseBatchNorm ?? true;
    this.trainThreads = optionalInt(p.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    // Fail at construction, with the instructions, when the training addon is missing or CUDA cannot be had.
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(p.device));
  }

  protected createModel(channels: number[], extra: Record<string, number[]>): TrainModel {
    return this.newTrainModel('prn', channels, extra, { weightDecay: this.weightDecay, beta1: 0.9, beta2: 0.999 });
  }

  /** The backbone's 4 levels of ImageNet-normalised images [n, 3, s, s]. */
  private async levels(data: Float32Array, n: number): Promise<Nchw[]> {
    const s = this.extractor.params.cropSize;
    const out = await (await this.extractor.load()).extract(data, n, s, s);
    return this.extractor.params.layers.map((l): Nchw => {
      const f = layerOf(out, l);
      return { data: f.data, shape: [n, f.channels, f.height, f.width] };
    });
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const list = requireSamples(train, 'train');
    const t0 = process.hrtime.bigint();
    const { imageSize, cropSize: s, batchSize, seed, memoryBudgetBytes } = this.extractor.params;
    // Everything is checked before anything trains: labelled anomalies with masks, the foreground and texture folders.
    const sampler = await LabelledAnomalySampler.create(list, { method: 'PRN', imageSize, cropSize: s, foregroundRoot: this.foregroundRoot, memoryBudgetBytes, signal: opts.signal });
    const synth = await AnomalySynthesiser.create({ size: s, textureRoot: this.textureRoot, textureArg: '--texture-root (textureRoot)', cleanProbability: 0, rotateProbability: 0.3 });
    const plane = 3 * s * s;
    const normals = sampler.normals;
    const anomalies = sampler.anomalies;
    const n = normals.length;
    const stack = (items: readonly LabelledImage[]): { images: Float32Array; masks: Float32Array } => {
      const images = new Float32Array(items.length * plane);
      const masks = new Float32Array(items.length * s * s);
      items.forEach((it, j) => {
        images.set(it.image, j * plane);
        masks.set(it.mask, j * s * s);
      });
      return { images, masks };
    };
    const abort = (): void => {
      if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
    };

    let model: TrainModel;
    if (proceed) {
      model = this.model as TrainModel;
    } else {
      // The prototypes: k-means over the normal images' layers 1..3 (K = 10 % of them, at least 1).
      abort();
      const first = await this.levels(imagenet(normals[0].image, 1, s), 1);
      const k = Math.max(1, Math.floor(n * this.prototypeRatio));
      model = this.createModel(
        first.map((f) => f.shape[1]),
        { sides: first.map((f) => f.shape[2]), k: [k], attentionLayers: [this.attentionLayers], kmeansInit: [this.kmeansInit] },
      );
      for (let b = 0; b < n; b += batchSize) {
        abort();
        const items = normals.slice(b, b + batchSize);
        const f = await this.levels(imagenet(stack(items).images, items.length, s), items.length);
        const last = b + batchSize >= n;
        await model.calibrateStage(last ? 'prototypes' : 'features', null, f, b === 0, { signal: opts.signal });
      }
    }
    const fitIndex = proceed ? this.fits : 0;
    // Unfitted until this fit ends (a stopped or diverged fit leaves no model to checkpoint).
    this.model = null;
    this.fits = 0;

    const root = new Random(seed).fork(fitIndex === 0 ? 'prn' : `prn-${fitIndex}`);
    const stepsPerEpoch = prnStepsPerEpoch(n, batchSize);
    const mix = prnBatchComposition(batchSize);
    const rawShare = 5 * anomalies.length;
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    const pipeline = new StepPipeline('PRN', this.epochs, stepsPerEpoch, opts);

    // One batch: its images (normal, real, pseudo), ImageNet-normalised through the backbone, and its masks.
    const makeBatch = async (epoch: number, b: number, normalOrder: number[], realOrder: number[]): Promise<Nchw[]> => {
      const items: LabelledImage[] = [];
      for (let j = 0; j < mix.normal; j++) items.push(normals[normalOrder[(b * mix.normal + j) % n]]);
      for (let j = 0; j < mix.real; j++) {
        const r = realOrder[b * mix.real + j];
        const a = r % anomalies.length;
        items.push(r < rawShare ? anomalies[a] : sampler.copyPaste(a, root.fork('copy-paste', epoch, b, j)));
      }
      for (let j = 0; j < mix.pseudo; j++) {
        const rng = root.fork('pseudo', epoch, b, j);
        const base = normals[rng.int(n)];
        const o = await synth.sample(base.image, rng);
        items.push({ image: o.augmented, mask: o.mask, source: base.source });
      }
      const { images, masks } = stack(items);
      const f = await this.levels(imagenet(images, items.length, s), items.length);
      return [...f, { data: masks, shape: [items.length, 1, s, s] }];
    };

    for (let epoch = 0; epoch < this.epochs; epoch++) {
      const order = root.fork('order', epoch);
      const normalOrder = order.shuffle(Array.from({ length: n }, (_, i) => i));
      const realOrder = order.shuffle(Array.from({ length: stepsPerEpoch * mix.real }, (_, i) => i));
      pipeline.startEpoch(epoch);
      // The next batch is drawn (synthesis, backbone) while the current step runs on the training thread.
      try {
        for (let b = 0; b < stepsPerEpoch; b++) {
          abort();
          const views = await makeBatch(epoch, b, normalOrder, realOrder);
          await pipeline.submit(batchSize, () => model.step(null, views, { signal: opts.signal }));
        }
        losses.push(await pipeline.endEpoch());
      } finally {
        await pipeline.settle();
      }
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    if (this.preciseBatchNorm) {
      // One more epoch of training batches, forward only, averaged into the batch norms' statistics.
      const order = root.fork('order', this.epochs);
      const normalOrder = order.shuffle(Array.from({ length: n }, (_, i) => i));
      const realOrder = order.shuffle(Array.from({ length: stepsPerEpoch * mix.real }, (_, i) => i));
      for (let b = 0; b < stepsPerEpoch; b++) {
        abort();
        const views = await makeBatch(this.epochs, b, normalOrder, realOrder);
        await model.calibrateStage('batchnorm', null, views.slice(0, 4), b === 0, { signal: opts.signal });
      }
    }
    this.setModel(model);
    this.fits = fitIndex + 1;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: pipeline.imagesSeen / loopSeconds, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    const model = this.fitted();
    const list = requireSamples(samples, 'samples');
    const { imageSize, cropSize: s } = this.extractor.params;
    const self = this;
    async function* featureBatches(): AsyncGenerator<{ start: number; n: number; geometries: import('../image/pipeline').Geometry[]; features: Nchw[]; backboneMs: number }> {
      for await (const b of batches(list.map((x) => x.path), { imageSize, cropSize: s, batchSize: 1, prefetch: 4, signal: opts.signal })) {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const t = process.hrtime.bigint();
        const features = await self.levels(b.data, b.n);
        yield { start: b.start, n: b.n, geometries: b.geometries, features, backboneMs: elapsedMs(t) };
      }
    }
    const { scores, maps, timing } = await predictInBatches(featureBatches(), list.length, opts, async (b) => {
      const raw = await model.maps(null, b.features, s, { signal: opts.signal });
      const out = await scoreGridsToMaps(raw, b.n, s, s, b.geometries, s, { sigma: 0, signal: opts.signal });
      const own = Array.from({ length: b.n }, (_, i) => topKMean(raw.subarray(i * s * s, (i + 1) * s * s), this.topK));
      return { scores: own, maps: out.maps };
    });
    this.timing = timing;
    return { scores, maps };
  }

  /** A checkpoint's head must have this detector's attention depth. */
  protected override modelFromCheckpoint(state: DetectorState): TrainModel {
    const extra = configExtra(state);
    const layers = extra.attentionLayers?.[0];
    if (layers !== this.attentionLayers) {
      throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected a PRN head of ${this.attentionLayers} attention layers per level but the checkpoint's has ${String(layers)}`);
    }
    return this.createModel(configInts(state, 'channels'), extra);
  }
}
