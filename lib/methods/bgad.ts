/**
 * BGAD (Yao et al., "Explicit Boundary Guided Semi-Push-Pull Contrastive Learning for Supervised Anomaly Detection",
 * CVPR 2023) after its official code xcyao00/BGAD (engines/bgad_fas_train_engine.py, losses/losses.py,
 * datasets/mvtec.py MVTecFSCopyPasteDataset, config.py and the README's training command): CFlow's conditional flow
 * decoders (native/train/flows.cc, kind "bgad": the same network, BGAD's loss) trained on the frozen features of
 * images that change every batch, with the labelled anomalies' masks downsampled (nearest) to each level.
 *
 * - Meta-epoch 0: the normal training images only (the official `normal_loader`), loss -logsigmoid(log p / C).
 * - Later meta-epochs: the normal images plus the labelled anomalies repeated x10 (MVTecFSCopyPasteDataset): the first
 *   5 repetitions are the real anomalies as they are, the other 5 are copy-pastes (LabelledAnomalySampler.copyPaste:
 *   the anomaly augmented, its defect pasted onto a random normal image inside its foreground), drawn anew whenever
 *   they come up. Focal-weighted maximum likelihood on the normal fibers plus lambda = 1 x the boundary loss
 *   (beta-quantile of the normal log p / C, normaliser 10, margin tau = 0.1).
 * - beta = 0.01 with focal weighting: the README's (and scripts.sh's) training command, the one its reported results
 *   (image AUROC 99.4, pixel 99.3 on MVTec AD) come from; config.py's default is 0.05 but its help text says 0.01 and
 *   its focal weighting is off unless the command asks for it.
 * - Batches of 32 shuffled images with drop_last, 8 sub-epochs per meta-epoch (each reshuffled), fibers shuffled and
 *   fed in chunks of 4096 with one Adam step per chunk; Adam lr 2e-4: cosine per meta-epoch down to lr 1e-3 and
 *   2 meta-epochs of linear warm-up from lr/10 per batch (utils/model_utils.py). The official warm-up counts
 *   `len([normal_loader, train_loader])` = 2 batches per sub-epoch whatever the loaders hold; here it counts the
 *   meta-epoch's real batches, as cflow-ad does.
 *
 * The features of the normal images and the real anomalies are computed once and kept in memory when they fit in half
 * the memory budget (`cacheFeatures` forces either way); the copy-pastes go through the backbone in every batch, as
 * every image does in the official loop.
 *
 * Backbone: the official one is timm's tf_efficientnet_b6 stages 1..3 (40/72/200 channels at strides 4/8/16), which
 * this project has no weights for; the default is ResNet-18 layers 1..3 (64/128/256 channels at the same strides).
 * Input 256 px, ImageNet-normalised. Map and score exactly as CFlow: per level exp(log p / C - m_l), m_l the maximum
 * over the training normals (the official code takes it over the test set), bilinear (align_corners=True), summed;
 * map = levels - sum; image score = the map's maximum; no blur.
 */
import { imiadError, invalidType } from '../../bindings/errors';
import { defaultMemoryBudget } from '../../bindings/gaussian';
import * as is from '../../bindings/is';
import type { Nchw, TrainModel } from '../../bindings/train/train';
import { IMAGENET_MEAN, IMAGENET_STD } from '../image/pipeline';
import { Random } from '../prng';
import { type LabelledImage, LabelledAnomalySampler } from '../synthesis/labelled';
import { continuesTraining, elapsedMs, layerOf, optionalInt } from './features';
import { FrozenFeatureHead, type FrozenHeadParams } from './frozen-head';
import type { FitOptions, TrainSample } from './types';

export interface BgadParams extends FrozenHeadParams {
  /** Sub-epochs per meta-epoch (default 8); `epochs` counts meta-epochs (default 25). */
  subEpochs?: number;
  /** Fibers per optimiser step (default 4096). */
  fibers?: number;
  /** The boundary's quantile of the normal log-likelihoods (default 0.01, the README command). */
  beta?: number;
  /** Margin between the normal and the abnormal boundary (default 0.1). */
  tau?: number;
  /** Weight of the boundary loss (default 1). */
  lambda?: number;
  /** Asymmetric focal weighting (default true, the README command). */
  focalWeighting?: boolean;
  /** Repetitions of the labelled anomalies per epoch (default 10) and how many of them are the raw images (5). */
  repeats?: number;
  rawRepeats?: number;
  /** A folder of foreground masks of the normal training images (CLI --foreground), instead of thresholding them. */
  foregroundRoot?: string;
}

/** One training image: a normal one, a real anomaly as it is, or a copy-paste of anomaly `anomaly` (drawn anew). */
type Item = { kind: 'normal'; index: number } | { kind: 'raw'; index: number } | { kind: 'paste'; index: number };

/** The official lr schedule (utils/model_utils.py adjust_learning_rate + warmup_learning_rate), warm-up 2 meta-epochs. */
export function bgadLearningRate(lr: number, metaEpochs: number, epoch: number, batchInEpoch: number, batchesPerEpoch: number, warmEpochs = 2): number {
  const etaMin = lr * 0.1 ** 3;
  const cosine = (e: number): number => etaMin + ((lr - etaMin) * (1 + Math.cos((Math.PI * e) / metaEpochs))) / 2;
  if (epoch >= warmEpochs) return cosine(epoch);
  const from = lr / 10;
  const to = cosine(warmEpochs);
  const p = (batchInEpoch + epoch * batchesPerEpoch) / (warmEpochs * batchesPerEpoch);
  return from + p * (to - from);
}

export class Bgad extends FrozenFeatureHead {
  readonly name = 'bgad';
  override readonly usesLabelledAnomalies = true;
  readonly subEpochs: number;
  readonly fibers: number;
  readonly beta: number;
  readonly tau: number;
  readonly lambda: number;
  readonly focalWeighting: boolean;
  readonly repeats: number;
  readonly rawRepeats: number;
  readonly foregroundRoot?: string;

  constructor(params: BgadParams = {}) {
    super(params, {
      kind: 'bgad',
      label: 'BGAD',
      shape: 'resnet18',
      layers: ['layer1', 'layer2', 'layer3'],
      imageSize: 256,
      batchSize: 32,
      epochs: 25,
      lr: 2e-4,
      weightDecay: 0,
      sigma: 0,
    });
    this.subEpochs = optionalInt(params.subEpochs, 'subEpochs', 1, 10_000, 8);
    this.fibers = optionalInt(params.fibers, 'fibers', 1, 1 << 22, 4096);
    const unit = (v: unknown, name: string, def: number): number => {
      if (v === undefined) return def;
      if (!(is.number(v) && v >= 0 && v < 1)) throw invalidType('number in [0, 1)', name, v);
      return v;
    };
    this.beta = unit(params.beta, 'beta', 0.01);
    this.tau = params.tau ?? 0.1;
    if (!(is.number(this.tau) && this.tau >= 0)) throw invalidType('non-negative number', 'tau', params.tau);
    this.lambda = params.lambda ?? 1;
    if (!(is.number(this.lambda) && this.lambda >= 0)) throw invalidType('non-negative number', 'lambda', params.lambda);
    if (params.focalWeighting !== undefined && typeof params.focalWeighting !== 'boolean') throw invalidType('boolean', 'focalWeighting', params.focalWeighting);
    this.focalWeighting = params.focalWeighting ?? true;
    this.repeats = optionalInt(params.repeats, 'repeats', 1, 1000, 10);
    this.rawRepeats = optionalInt(params.rawRepeats, 'rawRepeats', 0, this.repeats, Math.min(5, this.repeats));
    if (params.foregroundRoot !== undefined && !(is.string(params.foregroundRoot) && params.foregroundRoot !== '')) {
      throw invalidType('a folder of foreground masks', 'foregroundRoot', params.foregroundRoot);
    }
    this.foregroundRoot = params.foregroundRoot;
  }

  protected override calibration(): 'after' {
    return 'after';
  }

  protected extra(): Record<string, number[]> {
    return {
      blocks: [8],
      clamp: [1.9],
      condition: [128],
      fibers: [this.fibers],
      boundary: [this.beta, this.tau, 10, this.lambda, this.focalWeighting ? 1 : 0],
    };
  }

  /** Features of a batch of decoded [0, 1] images (ImageNet-normalised here), one Nchw per level. */
  private async features(images: readonly LabelledImage[], side: number): Promise<Nchw[]> {
    const plane = side * side;
    const data = new Float32Array(images.length * 3 * plane);
    images.forEach((im, j) => {
      for (let c = 0; c < 3; c++) {
        const at = (j * 3 + c) * plane;
        const m = IMAGENET_MEAN[c];
        const s = IMAGENET_STD[c];
        for (let i = 0; i < plane; i++) data[at + i] = (im.image[c * plane + i] - m) / s;
      }
    });
    const backbone = await this.extractor.load();
    const out = await backbone.extract(data, images.length, side, side);
    return this.extractor.params.layers.map((l): Nchw => {
      const f = layerOf(out, l);
      return { data: f.data, shape: [images.length, f.channels, f.height, f.width] };
    });
  }

  override async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const proceed = continuesTraining(opts) && this.model !== null;
    const t0 = process.hrtime.bigint();
    const { imageSize, cropSize, batchSize, seed } = this.extractor.params;
    const sampler = await LabelledAnomalySampler.create(train, {
      method: 'BGAD',
      imageSize,
      cropSize,
      foregroundRoot: this.foregroundRoot,
      memoryBudgetBytes: this.extractor.params.memoryBudgetBytes,
      signal: opts.signal,
    });
    const normals = sampler.normals;
    const anomalies = sampler.anomalies;
    if (normals.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal training images for BGAD but received none');
    const aborted = (): void => {
      if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
    };
    const shapes = (await this.features([normals[0]], cropSize)).map((f) => f.shape);
    const channels = shapes.map((s) => s[1]);
    // The features of the normal images and the real anomalies (index N + i) are computed once and kept when they fit
    // in half the memory budget; the copy-pastes change every time and always go through the backbone.
    const perLevel = shapes.map((s) => s[1] * s[2] * s[3]);
    const cached = normals.length + anomalies.length;
    const budget = this.extractor.params.memoryBudgetBytes ?? defaultMemoryBudget();
    let cache: Float32Array[] | null = null;
    if (this.cacheFeatures ?? 4 * perLevel.reduce((a, b) => a + b, 0) * cached <= budget / 2) {
      cache = perLevel.map((per) => new Float32Array(cached * per));
      const all = normals.concat(anomalies);
      for (let s = 0; s < cached; s += batchSize) {
        aborted();
        const f = await this.features(all.slice(s, s + batchSize), cropSize);
        f.forEach((level, l) => cache![l].set(level.data, s * perLevel[l]));
      }
    }
    const cacheIndex = (it: Item): number => (it.kind === 'normal' ? it.index : it.kind === 'raw' ? normals.length + it.index : -1);
    const batchFeatures = async (batch: Item[], images: LabelledImage[]): Promise<Nchw[]> => {
      if (cache === null) return this.features(images, cropSize);
      const fresh = batch.map((it, j) => (cacheIndex(it) < 0 ? j : -1)).filter((j) => j >= 0);
      const extracted = fresh.length ? await this.features(fresh.map((j) => images[j]), cropSize) : [];
      return shapes.map((shape, l): Nchw => {
        const per = perLevel[l];
        const data = new Float32Array(batch.length * per);
        batch.forEach((it, j) => {
          const c = cacheIndex(it);
          const k = fresh.indexOf(j);
          data.set(c >= 0 ? cache![l].subarray(c * per, (c + 1) * per) : extracted[l].data.subarray(k * per, (k + 1) * per), j * per);
        });
        return { data, shape: [batch.length, shape[1], shape[2], shape[3]] };
      });
    };
    if (proceed && (this.model as TrainModel).config.channels.join() !== channels.join()) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected feature levels of ${(this.model as TrainModel).config.channels.join(', ')} channels as in the earlier fit() but received ${channels.join(', ')}`);
    }
    const model = proceed ? (this.model as TrainModel) : this.createModel(channels, this.extra());
    const fitIndex = proceed ? this.fits : 0;
    if (proceed) {
      this.model = null;
      this.fits = 0;
    }

    // The two datasets: the normal images (meta-epoch 0), and normals + anomalies x repeats (the later ones).
    const normalItems: Item[] = normals.map((_, index) => ({ kind: 'normal', index }));
    const anomalyItems: Item[] = [];
    for (let r = 0; r < this.repeats; r++) {
      for (let index = 0; index < anomalies.length; index++) anomalyItems.push({ kind: r < this.rawRepeats ? 'raw' : 'paste', index });
    }
    const allItems = normalItems.concat(anomalyItems);
    // drop_last (a set smaller than one batch is one batch).
    const batchesOf = (n: number): number => Math.max(1, Math.floor(n / batchSize));
    const perEpoch = [batchesOf(normalItems.length), batchesOf(allItems.length)];
    const metaEpochs = this.epochs;
    const totalSteps = this.subEpochs * (perEpoch[0] + (metaEpochs - 1) * perEpoch[1]);
    const rng = new Random(seed).fork(fitIndex === 0 ? 'bgad' : `bgad-${fitIndex}`);
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    let seen = 0;
    for (let epoch = 0; epoch < metaEpochs; epoch++) {
      aborted();
      model.configure('epoch', [epoch]);
      const items = epoch === 0 ? normalItems : allItems;
      const batches = perEpoch[epoch === 0 ? 0 : 1];
      let sum = 0;
      let count = 0;
      for (let sub = 0; sub < this.subEpochs; sub++) {
        const epochRng = rng.fork(`epoch-${epoch}-${sub}`);
        const order = epochRng.shuffle(items.slice());
        for (let b = 0; b < batches; b++) {
          aborted();
          const batch = order.slice(b * batchSize, (b + 1) * batchSize);
          const images = batch.map((it, j): LabelledImage => {
            if (it.kind === 'normal') return normals[it.index];
            if (it.kind === 'raw') return anomalies[it.index];
            return sampler.copyPaste(it.index, epochRng.fork(`paste-${b}-${j}`));
          });
          const features = await batchFeatures(batch, images);
          let masks: Nchw | null = null;
          if (batch.some((it) => it.kind !== 'normal')) {
            const plane = cropSize * cropSize;
            const data = new Float32Array(images.length * plane);
            images.forEach((im, j) => data.set(im.mask, j * plane));
            masks = { data, shape: [images.length, 1, cropSize, cropSize] };
          }
          model.setLearningRate(bgadLearningRate(this.lr, metaEpochs, epoch, sub * batches + b, batches * this.subEpochs));
          aborted();
          const loss = await model.step(masks, features, { signal: opts.signal });
          step += 1;
          if (!Number.isFinite(loss)) {
            throw imiadError('Error', 'ERR_IMIAD_TRAINING_DIVERGED', `BGAD's training loss became ${loss} in meta-epoch ${epoch + 1}, step ${step} (lower --lr); the model was not kept`);
          }
          sum += loss;
          count += 1;
          seen += images.length;
          const seconds = elapsedMs(tTrain) / 1000;
          opts.onProgress?.(step, totalSteps, `epoch ${epoch + 1}/${metaEpochs} loss ${(sum / count).toFixed(4)} ${(seconds > 0 ? seen / seconds : 0).toFixed(1)} img/s`);
        }
      }
      losses.push(sum / count);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    // The normalising maxima over the training normals.
    for (let s = 0; s < normals.length; s += batchSize) {
      aborted();
      const items = normals.slice(s, s + batchSize).map((_, j): Item => ({ kind: 'normal', index: s + j }));
      await model.calibrate(await batchFeatures(items, normals.slice(s, s + batchSize)), s === 0, { signal: opts.signal });
    }
    this.setModel(model);
    this.fits = fitIndex + 1;
    this.stats = { epochs: metaEpochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: seen / loopSeconds, losses };
  }
}
