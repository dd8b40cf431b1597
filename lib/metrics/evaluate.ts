/**
 * Per-category evaluation: the metrics a detector (or `imiad evaluate`, from saved maps) reports for one category,
 * computed the way the official MVTec AD and MVTec LOCO AD evaluation scripts do. Anomaly maps are taken at the
 * images' original size, one image at a time (a provider function lets the caller read or compute each map only
 * when needed), and are accumulated natively at 8 bytes per pixel.
 */
import { imiadError } from '../../bindings/errors';
import { binaryClassificationMetrics, type KernelOptions, type MaskedAnomalyMap, PixelAccumulator, type ChannelAnomalyMap, requireLimits } from '../../bindings/metrics';
import type { Category, Sample } from '../datasets/types';
import { optionalInteger } from '../../bindings/validate';
import { readImageSize } from '../image/decode';
import { readMask } from '../image/mask';
import { byLimit } from './pro';
import { readLocoChannel } from '../datasets/loco';
import { checkDefectsConfig, LOCO_LIMITS } from './spro';

export interface Prediction {
  /** Anomaly scores at the image's original size, row-major. */
  anomalyMap: Float32Array;
  width: number;
  height: number;
  /** Image-level score; default: the map's maximum, as in the official scripts. */
  imageScore?: number;
  /** Where the map came from (a file), for error messages. */
  source?: string;
}

/** Predictions in the order of the category's test samples, or a function giving each one on demand. */
export type PredictionSource = Prediction[] | ((sample: Sample, index: number) => Promise<Prediction> | Prediction);

/** The metrics of one MVTec-like category (the JSON shape of `imiad evaluate`). */
export interface CategoryMetrics {
  image_auroc: number;
  image_ap: number;
  pixel_auroc: number;
  pixel_ap: number;
  /** AU-PRO per FPR limit, keyed as Python prints the limit ("0.3"). */
  aupro: Record<string, number>;
  /** F1-max of the image-level classification. */
  f1_max: number;
}

/** CategoryMetrics plus the numbers behind them. */
export interface CategoryEvaluation extends CategoryMetrics {
  details: {
    pixel_f1_max: number;
    images: number;
    anomalous_images: number;
    pixels: number;
    anomalous_pixels: number;
    regions: number;
  };
}

/** MVTec LOCO AD's result shape: the official script's auc_spro / auc_roc, per anomaly type and their mean. */
export interface LocoCategoryMetrics {
  localization: {
    logical_anomalies: Record<string, number>;
    structural_anomalies: Record<string, number>;
    mean: Record<string, number>;
  };
  classification: {
    logical_anomalies: number;
    structural_anomalies: number;
    mean: number;
  };
}

export interface EvaluateOptions extends KernelOptions {
  /** FPR integration limits of AU-PRO (default [0.3]); LOCO uses 0.01, 0.05, 0.1, 0.3 and 1.0 unless given. */
  limits?: number[];
  /**
   * MVTec-like categories: samples read ahead, 1..64 (default 1: a provider function is called for one sample at a
   * time; with more it runs for up to `prefetch` samples at once, so it must allow that). `imiad evaluate` uses 4.
   */
  prefetch?: number;
}

function testSamples(category: Category | Sample[]): Sample[] {
  const samples = Array.isArray(category) ? category : category.samples;
  const test = samples.filter((s) => s.split === 'test');
  if (test.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected test samples${Array.isArray(category) ? '' : ` in category ${category.name}`} but found none`);
  return test;
}

function mapMaximum(map: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < map.length; i++) if (map[i] > max) max = map[i];
  return max;
}

async function predictionFor(source: PredictionSource, sample: Sample, index: number, count: number): Promise<Prediction> {
  if (Array.isArray(source)) {
    if (source.length !== count) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected one prediction per test sample (${count}) but received ${source.length} of type number`);
    }
    return source[index];
  }
  return source(sample, index);
}

function checkPrediction(p: Prediction, sample: Sample): void {
  const where = p.source ?? `the anomaly map of ${sample.path}`;
  if (!(p.anomalyMap instanceof Float32Array) || p.anomalyMap.length !== p.width * p.height) {
    throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected a Float32Array of width * height scores in ${where}`);
  }
  if (p.imageScore !== undefined && !Number.isFinite(p.imageScore)) {
    throw imiadError('RangeError', 'ERR_IMIAD_NOT_FINITE', `Expected a finite image score for ${sample.path} but received ${p.imageScore} of type ${typeof p.imageScore}`);
  }
}

function sizeMismatch(p: Prediction, sample: Sample, width: number, height: number, of: string): Error {
  return imiadError(
    'RangeError',
    'ERR_IMIAD_DIMS',
    `Anomaly map ${p.source ?? `of ${sample.path}`} is ${p.width}x${p.height} but ${of} is ${width}x${height}`,
  );
}

/** Binary ground truth of one MVTec-like test sample (several mask files are OR-ed), or null for normal ones. */
async function groundTruth(sample: Sample): Promise<{ data: Uint8Array; width: number; height: number; file: string } | null> {
  if (sample.label === 'normal') return null;
  if (sample.maskPaths.length === 0) {
    throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Expected a ground-truth mask for anomalous test image ${sample.path} but the dataset has none`);
  }
  const first = await readMask(sample.maskPaths[0]);
  for (const file of sample.maskPaths.slice(1)) {
    const m = await readMask(file);
    if (m.width !== first.width || m.height !== first.height) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Mask ${file} is ${m.width}x${m.height} but ${sample.maskPaths[0]} is ${first.width}x${first.height}`);
    }
    for (let i = 0; i < m.data.length; i++) first.data[i] |= m.data[i];
  }
  return { ...first, file: sample.maskPaths[0] };
}

// Pixels per addImages call: small enough that the accumulation of one batch overlaps the reading of the next.
const BATCH_PIXELS = 1 << 22;

type Settled<T> = { value: T; error?: undefined } | { error: unknown };

function settle<T>(fn: () => Promise<T> | T): Promise<Settled<T>> {
  return Promise.resolve()
    .then(fn)
    .then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
}

function unwrap<T>(s: Settled<T>): T {
  if ('value' in s) return s.value;
  throw s.error;
}

/** The size of a normal sample's image, or an anomalous one's ground truth. */
async function truthOf(sample: Sample): Promise<{ gt: Awaited<ReturnType<typeof groundTruth>>; size: { width: number; height: number } }> {
  const gt = await groundTruth(sample);
  return { gt, size: gt ?? (await readImageSize(sample.path)) };
}

/**
 * Evaluates one MVTec-like category (MVTec AD, MPDD, BTAD, VisA, MTD, DAGM): image AUROC / AP / F1-max from the
 * image scores, pixel AUROC / AP over all test pixels, AU-PRO per limit. Every anomalous test image needs a mask
 * (the official script fails without one too); normal images count as all-normal pixels. With `prefetch` > 1 the
 * predictions and ground truths of the next samples are read while earlier ones accumulate (errors still surface
 * in sample order).
 */
export async function evaluateCategory(category: Category | Sample[], predictions: PredictionSource, opts: EvaluateOptions = {}): Promise<CategoryEvaluation> {
  const limits = requireLimits(opts.limits ?? [0.3]);
  const prefetch = optionalInteger(opts.prefetch, 'prefetch', 1, 64, 1);
  const samples = testSamples(category);
  const acc = new PixelAccumulator();
  const scores = new Float64Array(samples.length);
  const labels = new Uint8Array(samples.length);
  let batch: MaskedAnomalyMap[] = [];
  let batchPixels = 0;
  // One batch accumulates natively while the next one is read.
  let accumulating: Promise<void> | null = null;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const images = batch;
    batch = [];
    batchPixels = 0;
    if (accumulating) await accumulating;
    accumulating = acc.addImages(images, { signal: opts.signal });
    // Awaited by the next flush or at the end; this only keeps an early failure from going unhandled meanwhile.
    accumulating.catch(() => undefined);
  };
  // Reads in flight, of samples i, i + 1, ... in order. They never reject (settled): an error surfaces when its
  // sample is reached, as without prefetch.
  const ahead: Array<Promise<[Settled<Prediction>, Settled<Awaited<ReturnType<typeof truthOf>>>]>> = [];
  const read = (i: number) => {
    const sample = samples[i];
    return Promise.all([settle(() => predictionFor(predictions, sample, i, samples.length)), settle(() => truthOf(sample))]);
  };
  let next = 0;
  for (let i = 0; i < samples.length; i++) {
    while (next < Math.min(samples.length, i + prefetch)) ahead.push(read(next++));
    const sample = samples[i];
    const [prediction, truth] = await (ahead.shift() as (typeof ahead)[number]);
    const p = unwrap(prediction);
    checkPrediction(p, sample);
    const { gt, size } = unwrap(truth);
    if (gt) {
      if (gt.width !== p.width || gt.height !== p.height) throw sizeMismatch(p, sample, gt.width, gt.height, `mask ${gt.file}`);
    } else if (size.width !== p.width || size.height !== p.height) {
      throw sizeMismatch(p, sample, size.width, size.height, `image ${sample.path}`);
    }
    if (i === 0) await acc.reserve(p.width * p.height * samples.length);
    scores[i] = p.imageScore ?? mapMaximum(p.anomalyMap);
    labels[i] = sample.label === 'anomaly' ? 1 : 0;
    batch.push({ anomalyMap: p.anomalyMap, mask: gt?.data ?? null, width: p.width, height: p.height });
    batchPixels += p.width * p.height;
    if (batchPixels >= BATCH_PIXELS) await flush();
    opts.onProgress?.(i + 1, samples.length);
  }
  await flush();
  if (accumulating) await accumulating;
  const image = await binaryClassificationMetrics(scores, labels, { signal: opts.signal });
  const pixel = await acc.compute({ limits, signal: opts.signal });
  if (pixel.positives === 0 || pixel.negatives === 0) {
    throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected both normal and anomalous pixels in the test masks but received only ${pixel.positives === 0 ? 'normal' : 'anomalous'} ones`);
  }
  return {
    image_auroc: image.auroc,
    image_ap: image.ap,
    pixel_auroc: pixel.auroc,
    pixel_ap: pixel.ap,
    aupro: byLimit(limits, pixel.areaUnderPro),
    f1_max: image.f1Max,
    details: {
      pixel_f1_max: pixel.f1Max,
      images: samples.length,
      anomalous_images: image.positives,
      pixels: pixel.positives + pixel.negatives,
      anomalous_pixels: pixel.positives,
      regions: pixel.units,
    },
  };
}

const LOCO_TYPES = ['good', 'logical_anomalies', 'structural_anomalies'] as const;

/**
 * Evaluates one MVTec LOCO AD category as the official evaluate_experiment.py: AU-sPRO per limit for logical and
 * structural anomalies separately (each with all good images) and their mean; image AUROC split the same way.
 */
export async function evaluateLocoCategory(category: Category, predictions: PredictionSource, opts: EvaluateOptions = {}): Promise<LocoCategoryMetrics> {
  const limits = requireLimits(opts.limits ?? [...LOCO_LIMITS]);
  const config = category.defectsConfig;
  if (!config) throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Expected defects_config.json for MVTec LOCO AD category ${category.name} in ${category.root}`);
  checkDefectsConfig(config, category.root);
  const samples = testSamples(category);
  const acc = { logical_anomalies: new PixelAccumulator(), structural_anomalies: new PixelAccumulator() };
  const scores: Record<(typeof LOCO_TYPES)[number], number[]> = { good: [], logical_anomalies: [], structural_anomalies: [] };
  for (let i = 0; i < samples.length; i++) {
    const sample = samples[i];
    const type = sample.defectType as (typeof LOCO_TYPES)[number];
    if (!LOCO_TYPES.includes(type)) {
      throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Expected MVTec LOCO AD test image ${sample.path} under good, logical_anomalies or structural_anomalies`);
    }
    const p = await predictionFor(predictions, sample, i, samples.length);
    checkPrediction(p, sample);
    const image: ChannelAnomalyMap = { anomalyMap: p.anomalyMap, channels: [], saturationAreas: [], width: p.width, height: p.height };
    if (type === 'good') {
      const size = await readImageSize(sample.path);
      if (size.width !== p.width || size.height !== p.height) throw sizeMismatch(p, sample, size.width, size.height, `image ${sample.path}`);
    } else {
      if (sample.maskPaths.length === 0) {
        throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Anomalous test image ${sample.path} has no ground-truth channels (expected a folder of PNGs under ground_truth)`);
      }
      for (const file of [...sample.maskPaths].sort()) {
        const ch = await readLocoChannel(file, config);
        if (ch.mask.width !== p.width || ch.mask.height !== p.height) throw sizeMismatch(p, sample, ch.mask.width, ch.mask.height, `ground-truth channel ${file}`);
        image.channels.push(ch.mask.data);
        image.saturationAreas.push(ch.saturationArea);
      }
    }
    scores[type].push(p.imageScore ?? mapMaximum(p.anomalyMap));
    if (type === 'good') {
      await acc.logical_anomalies.addChannelImages([image], { signal: opts.signal });
      await acc.structural_anomalies.addChannelImages([image], { signal: opts.signal });
    } else {
      await acc[type].addChannelImages([image], { signal: opts.signal });
    }
    opts.onProgress?.(i + 1, samples.length);
  }
  for (const type of LOCO_TYPES) {
    if (scores[type].length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected ${type} test images in MVTec LOCO AD category ${category.name} but found none`);
  }
  const localization = { logical_anomalies: {}, structural_anomalies: {}, mean: {} } as LocoCategoryMetrics['localization'];
  const classification = { logical_anomalies: 0, structural_anomalies: 0, mean: 0 };
  for (const type of ['logical_anomalies', 'structural_anomalies'] as const) {
    const r = await acc[type].compute({ limits, signal: opts.signal });
    localization[type] = byLimit(limits, r.areaUnderPro);
    const s = Float64Array.from([...scores.good, ...scores[type]]);
    const l = Uint8Array.from([...scores.good.map(() => 0), ...scores[type].map(() => 1)]);
    classification[type] = (await binaryClassificationMetrics(s, l, { signal: opts.signal })).auroc;
  }
  for (const key of Object.keys(localization.logical_anomalies)) {
    localization.mean[key] = 0.5 * (localization.logical_anomalies[key] + localization.structural_anomalies[key]);
  }
  classification.mean = 0.5 * (classification.logical_anomalies + classification.structural_anomalies);
  return { localization, classification };
}
