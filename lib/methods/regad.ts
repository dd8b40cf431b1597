/**
 * RegAD (Huang et al., ECCV 2022, "Registration based Few-Shot Anomaly Detection") after its official code
 * MediaBrain-SJTU/RegAD; the network, the support augmentations and the Gaussian are in native/train/regad.cc.
 *
 * RegAD is meta-trained on the OTHER categories of the dataset and then adapts to the target category from its K
 * normal support images alone, without training on them:
 * 1. Meta-training (train.py): fit() receives the other categories' normal training images as
 *    `FitOptions.metaTrain` (the few-shot setting and the runner hand them over: lib/settings/fewshot.ts,
 *    lib/runner/experiment.ts). Each epoch, every category's images are shuffled and cut into items of `batchSize`
 *    queries (32; the last item of a category may be smaller); each query gets K supports drawn uniformly from the
 *    same category's other images; the items of all categories are shuffled together (FSAD_Dataset_train). One SGD
 *    step per item (lr 1e-4, momentum 0.9), lr of epoch e (1-based) = lr * (1 + cos(pi e / epochs)) / 2 set before
 *    the epoch (adjust_learning_rate: the last epoch runs at lr 0, as the official), 50 epochs, K = the support set's
 *    size (the official trains and tests with the same --shot), at most `trainShots`.
 * 2. Support set: the training samples fit() receives are the K shots of the few-shot setting (drawn by the seed
 *    and recorded in the split manifest); native code augments them as the official test() does and fits the
 *    per-position Gaussian. Images are resized to 224 px, no crop, and NOT normalised ([0, 1], ToTensor only; the
 *    official comments Normalize out).
 * 3. Map = Mahalanobis distance at layer1's resolution, upsampled bilinearly to the image, Gaussian sigma 4; image
 *    score = the map's maximum. The official min-max over the test set (transductive, rank-preserving) and its
 *    best-epoch selection on the test set are left out: the last epoch is kept. The official averages 10 support
 *    draws; here one draw per seed (run several seeds for the average).
 *
 * Checkpoints hold the weights, the SGD momentum and the support images; loading refits the Gaussian from them (the
 * same numbers as after fit()).
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
import { batches, loadBatch } from '../image/pipeline';
import { Random } from '../prng';
import { configInt, requireCheckpointCrop, requireCheckpointKind, restoreTrainedModel, stateArray, trainedModelState } from './checkpoint';
import { type BackboneParams, elapsedMs, optionalInt, requireBudget, optionalSigma, requireFitted, requireSamples, resolveBackboneParams, type ResolvedBackboneParams, scoreGridsToMaps } from './features';
import type { AnomalyMap, Detector, DetectorState, FitOptions, MetaTrainCategory, Prediction, RunOptions, Timing, TrainingStats, TrainSample } from './types';

/** BackboneParams.batchSize is the number of queries per meta-training step (32). */
export interface RegadParams extends BackboneParams {
  /** Meta-training epochs (50). */
  epochs?: number;
  /** SGD learning rate before the cosine schedule (1e-4). */
  lr?: number;
  /** At most this many supports per query in meta-training (default 8); K is the support set's size below it. */
  trainShots?: number;
  /** Gaussian smoothing of the maps (default 4). */
  sigma?: number;
  /** libtorch intra-op threads (default: every core); results are bit-identical for the same count. */
  trainThreads?: number;
  /** Keep the decoded meta-training images in memory (default: when they fit in half the memory budget). */
  cacheImages?: boolean;
  /** Where the network trains: 'auto' (CUDA when libtorch has it), 'cpu' or 'cuda'. */
  device?: Device;
}

/** The support set's largest size: its Gaussian keeps 21 augmented embeddings per image and position. */
export const REGAD_MAX_SUPPORT = 16;

const UNIT_MEAN: readonly [number, number, number] = [0, 0, 0];
const UNIT_STD: readonly [number, number, number] = [1, 1, 1];
const CHANNELS = [64, 128, 256];

/** One meta-training step: `batchSize` queries of one category, each with K supports of the same category. */
interface Item {
  queries: number[];
  supports: number[];
}

/**
 * The items of one meta-training epoch (FSAD_Dataset_train.shuffle_dataset with the DataLoader's shuffle): indices
 * into the flat image list, whose categories start at `starts[c]` and hold `sizes[c]` images.
 */
export function metaTrainingItems(sizes: number[], batchSize: number, shots: number, rng: Random): Item[] {
  const items: Item[] = [];
  let start = 0;
  for (const size of sizes) {
    const order = rng.shuffle(Array.from({ length: size }, (_, i) => i));
    for (let from = 0; from < size; from += batchSize) {
      const queries = order.slice(from, from + batchSize);
      const supports: number[] = [];
      for (const q of queries) {
        for (let k = 0; k < shots; k++) {
          let r = rng.int(size);
          while (r === q) r = rng.int(size);
          supports.push(start + r);
        }
      }
      items.push({ queries: queries.map((q) => start + q), supports });
    }
    start += size;
  }
  return rng.shuffle(items);
}

export class Regad implements Detector {
  readonly name = 'regad';
  readonly usesLabelledAnomalies = false;
  readonly epochs: number;
  readonly lr: number;
  readonly trainShots: number;
  readonly sigma: number;
  readonly trainThreads: number;
  readonly trainDevice: 'cpu' | 'cuda';
  readonly params: ResolvedBackboneParams;
  private readonly cacheImages?: boolean;
  private model: TrainModel | null = null;
  /** The support images [k, 3, side, side] the Gaussian was fitted on. */
  private support: Float32Array | null = null;
  private timing: Timing = { backboneMs: [], methodMs: [] };
  private stats: TrainingStats | null = null;

  constructor(params: RegadParams = {}) {
    if (params !== undefined && !is.object(params)) throw invalidType('object', 'params', params);
    const imageSize = params.imageSize ?? 224;
    this.params = resolveBackboneParams({ ...params, imageSize, cropSize: params.cropSize ?? imageSize, batchSize: params.batchSize ?? 32 }, ['layer1', 'layer2', 'layer3']);
    if (this.params.backbone === undefined && this.params.backboneShape !== 'resnet18') {
      throw invalidType("'resnet18' (RegAD's network is ResNet-18)", 'backboneShape', this.params.backboneShape);
    }
    if (this.params.cropSize % 16 !== 0) throw invalidType('a multiple of 16 (RegAD concatenates layers 1..3 at strides 4, 8, 16)', 'cropSize', this.params.cropSize);
    this.epochs = optionalInt(params.epochs, 'epochs', 1, 1_000_000, 50);
    if (params.lr !== undefined && !(is.number(params.lr) && params.lr > 0)) throw invalidType('positive number', 'lr', params.lr);
    this.lr = params.lr ?? 1e-4;
    this.trainShots = optionalInt(params.trainShots, 'trainShots', 1, REGAD_MAX_SUPPORT, 8);
    this.sigma = optionalSigma(params.sigma);
    this.trainThreads = optionalInt(params.trainThreads, 'trainThreads', 1, 1024, os.availableParallelism());
    if (params.cacheImages !== undefined && typeof params.cacheImages !== 'boolean') throw invalidType('boolean', 'cacheImages', params.cacheImages);
    this.cacheImages = params.cacheImages;
    trainAddon();
    this.trainDevice = resolveTrainDevice(trainDeviceParam(params.device));
  }

  private get side(): number {
    return this.params.cropSize;
  }

  private decode(paths: string[], signal?: AbortSignal): Promise<{ data: Float32Array; n: number }> {
    const { imageSize, cropSize } = this.params;
    return loadBatch(paths, { imageSize, cropSize, mean: UNIT_MEAN, std: UNIT_STD, prefetch: 8, signal });
  }

  private async createModel(withWeights: boolean): Promise<TrainModel> {
    // A loaded checkpoint replaces every weight: the ONNX file is not read then.
    const file = this.params.backbone ?? defaultBackboneFile({ shape: 'resnet18', seed: this.params.backboneSeed });
    const weights = withWeights ? await resnet18Weights(file, { upToLayer: 3 }) : undefined;
    return new TrainModel({
      kind: 'regad',
      channels: CHANNELS,
      seed: this.params.seed,
      threads: this.trainThreads,
      lr: this.lr,
      momentum: 0.9,
      weightDecay: 0,
      device: this.trainDevice,
      extra: { side: [this.side], ...resnetLayoutExtra('regad') },
      ...(weights ? { weights } : {}),
    });
  }

  async fit(train: TrainSample[], opts: FitOptions = {}): Promise<void> {
    const support = requireSamples(train, 'train').filter((s) => s.label === 'normal');
    if (support.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal support images for RegAD but received none');
    if (support.length > REGAD_MAX_SUPPORT) {
      throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Expected at most ${REGAD_MAX_SUPPORT} support images for RegAD (a few-shot detector: --setting fewshot --shots K) but received ${support.length}`);
    }
    const meta = requireMetaTraining(opts.metaTrain);
    requireBudget('RegAD\'s support Gaussian', gaussianBytes(support.length, this.side), this.params.memoryBudgetBytes, defaultMemoryBudget());
    const t0 = process.hrtime.bigint();
    const shots = Math.min(support.length, this.trainShots);
    const small = meta.find((c) => c.samples.length < 2);
    if (small) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `RegAD's meta-training category ${small.category} has ${small.samples.length} normal training image(s): each query needs another image of its category as support`);
    const paths = meta.flatMap((c) => c.samples.map((s) => s.path));
    const sizes = meta.map((c) => c.samples.length);
    const side = this.side;
    const plane = 3 * side * side;
    const budget = this.params.memoryBudgetBytes ?? defaultMemoryBudget();
    const cache = this.cacheImages ?? 4 * plane * paths.length <= budget / 2;
    const cached: (Float32Array | undefined)[] = new Array(paths.length);
    const gather = async (indices: number[]): Promise<Nchw> => {
      const out = new Float32Array(indices.length * plane);
      const missing = [...new Set(indices.filter((i) => !cached[i]))];
      const fresh = new Map<number, Float32Array>();
      if (missing.length) {
        const b = await this.decode(missing.map((i) => paths[i]), opts.signal);
        missing.forEach((idx, j) => {
          const img = b.data.subarray(j * plane, (j + 1) * plane);
          if (cache) cached[idx] = img;
          else fresh.set(idx, img);
        });
      }
      indices.forEach((idx, j) => out.set(cached[idx] ?? (fresh.get(idx) as Float32Array), j * plane));
      return { data: out, shape: [indices.length, 3, side, side] };
    };

    this.model = null;
    this.support = null;
    const model = await this.createModel(true);
    const rng = new Random(this.params.seed).fork('regad-meta');
    const perEpoch = sizes.reduce((a, n) => a + Math.ceil(n / this.params.batchSize), 0);
    const total = perEpoch * this.epochs;
    const losses: number[] = [];
    const tTrain = process.hrtime.bigint();
    let step = 0;
    let images = 0;
    for (let epoch = 1; epoch <= this.epochs; epoch++) {
      model.setLearningRate(this.lr * 0.5 * (1 + Math.cos((Math.PI * epoch) / this.epochs)));
      let sum = 0;
      let count = 0;
      for (const item of metaTrainingItems(sizes, this.params.batchSize, shots, rng)) {
        if (opts.signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
        const loss = await model.step(await gather(item.queries), [await gather(item.supports)], { signal: opts.signal });
        if (!Number.isFinite(loss)) throw imiadError('Error', 'ERR_IMIAD_NOT_FINITE', `RegAD's training loss became ${loss} in epoch ${epoch} (lower --lr)`);
        sum += loss;
        count += 1;
        step += 1;
        images += item.queries.length + item.supports.length;
        const seconds = elapsedMs(tTrain) / 1000;
        opts.onProgress?.(step, total, `epoch ${epoch}/${this.epochs} loss ${(sum / count).toFixed(4)} ${(seconds > 0 ? images / seconds : 0).toFixed(1)} img/s`);
      }
      losses.push(sum / count);
    }
    const loopSeconds = elapsedMs(tTrain) / 1000;
    const s = await this.decode(support.map((x) => x.path), opts.signal);
    await model.calibrate([{ data: s.data, shape: [s.n, 3, side, side] }], true, { signal: opts.signal });
    this.model = model;
    this.support = s.data;
    this.stats = { epochs: this.epochs, trainSeconds: elapsedMs(t0) / 1000, imagesPerSecond: loopSeconds > 0 ? images / loopSeconds : 0, losses };
  }

  async predict(samples: Sample[], opts: RunOptions = {}): Promise<Prediction> {
    requireFitted(this.model !== null, 'RegAD');
    const model = this.model as TrainModel;
    const list = requireSamples(samples, 'samples');
    const { imageSize, cropSize } = this.params;
    const scores = new Float64Array(list.length);
    const maps: AnomalyMap[] = [];
    const timing: Timing = { backboneMs: [], methodMs: [] };
    for await (const b of batches(list.map((s) => s.path), { imageSize, cropSize, mean: UNIT_MEAN, std: UNIT_STD, batchSize: 1, prefetch: 4, signal: opts.signal })) {
      const t = process.hrtime.bigint();
      const raw = await model.maps({ data: b.data, shape: [b.n, 3, cropSize, cropSize] }, [], cropSize, { signal: opts.signal });
      const out = await scoreGridsToMaps(raw, b.n, cropSize, cropSize, b.geometries, cropSize, { sigma: this.sigma, signal: opts.signal });
      const ms = elapsedMs(t);
      for (let i = 0; i < b.n; i++) {
        scores[b.start + i] = out.maxima[i];
        maps.push(out.maps[i]);
        // The network is the backbone here: its time is the method's.
        timing.backboneMs.push(0);
        timing.methodMs.push(ms / b.n);
      }
      opts.onProgress?.(b.start + b.n, list.length);
    }
    this.timing = timing;
    return { scores, maps };
  }

  saveState(): DetectorState {
    requireFitted(this.model !== null && this.support !== null, 'RegAD');
    const { arrays, config } = trainedModelState(this.model as TrainModel);
    return {
      config: { kind: 'regad', ...config, cropSize: this.side, supportCount: (this.support as Float32Array).length / (3 * this.side * this.side), stats: this.stats },
      arrays: { ...arrays, support: this.support as Float32Array },
    };
  }

  async loadState(state: DetectorState): Promise<void> {
    requireCheckpointKind(state, 'regad');
    requireCheckpointCrop(state, this.side);
    const k = configInt(state, 'supportCount');
    const support = stateArray(state, 'support', Float32Array, k * 3 * this.side * this.side);
    const model = await this.createModel(false);
    restoreTrainedModel(model, state);
    await model.calibrate([{ data: support, shape: [k, 3, this.side, this.side] }], true);
    this.model = model;
    this.support = support;
    this.stats = null;
  }

  trainingStats(): TrainingStats | null {
    return this.stats;
  }

  stateBytes(): number {
    if (!this.model || !this.support) return 0;
    // Weights, the support images, and the Gaussian.
    return this.model.parameterCount * 4 + this.support.byteLength + gaussianBytes(this.support.length / (3 * this.side * this.side), this.side);
  }

  lastTiming(): Timing {
    return this.timing;
  }

  async dispose(): Promise<void> {
    this.model = null;
  }
}

/**
 * Bytes of the support Gaussian of k images at `side` px: per layer1 position the mean, the 21 k scaled embeddings
 * (float32, 448 channels) and a 21 k x 21 k Cholesky factor (float64).
 */
export function gaussianBytes(k: number, side: number): number {
  const n = 21 * k;
  return (side / 4) ** 2 * (448 * 4 + n * 448 * 4 + n * n * 8);
}

/** FitOptions.metaTrain, checked: RegAD refuses to fit without the dataset's other categories. */
function requireMetaTraining(meta: unknown): MetaTrainCategory[] {
  if (meta === undefined || (Array.isArray(meta) && meta.length === 0)) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_SETTING',
      "RegAD meta-trains on the dataset's other categories, but none were given: it needs a dataset with at least two categories (the few-shot setting and imiad run hand them over)",
    );
  }
  if (!Array.isArray(meta)) throw invalidType('array of { category, samples }', 'metaTrain', meta);
  meta.forEach((c: unknown, i) => {
    const m = c as Partial<MetaTrainCategory> | null;
    if (!is.object(c) || !is.string(m?.category) || !Array.isArray(m?.samples)) {
      throw invalidType('{ category, samples }', `metaTrain[${i}]`, c);
    }
  });
  return (meta as MetaTrainCategory[]).map((c) => ({ category: c.category, samples: c.samples.filter((s) => s.label === 'normal') }));
}
