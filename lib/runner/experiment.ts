/**
 * One experiment: fit a detector on a category's training samples, predict its test samples, evaluate at the
 * original resolution (lib/metrics; MVTec LOCO AD: sPRO too) and measure the efficiency figures.
 *
 * Predictions are made in chunks on demand while the evaluation walks the test samples, so only a chunk of
 * original-size maps is alive at a time; for LOCO the pixel evaluation and the sPRO evaluation walk the samples
 * together and share each chunk.
 */
import * as fs from 'fs';
import * as path from 'path';

import { binaryClassificationMetrics } from '../../bindings/metrics';
import { hasCode, imiadError } from '../../bindings/errors';
import { loadDataset } from '../datasets';
import type { Category, DatasetName, Sample } from '../datasets/types';
import { evaluateCategory, evaluateLocoCategory, type Prediction as EvalPrediction } from '../metrics/evaluate';
import { encodeTiff } from '../metrics/maps';
import { createDetector, findMethod } from '../methods';
import { type CheckpointRun, readCheckpoint, writeCheckpoint } from '../methods/checkpoint';
import type { AnomalyMap, Detector, DetectorState, MetaTrainCategory } from '../methods/types';
import { metaTrainingSplit } from '../settings/fewshot';
import { f1OptimalThreshold, quantileThreshold, type DecisionThreshold } from '../metrics/threshold';
import { bootstrapAuroc, type BootstrapInterval } from '../stats/bootstrap';

export type ExperimentStage = 'fit' | 'predict' | 'evaluate';

export interface ExperimentOptions {
  dataset: DatasetName;
  root: string;
  /** A loaded category, or its name (loaded from `root`). */
  category: Category | string;
  method: string;
  params?: Record<string, unknown>;
  /** Default: the category's 'train' samples. */
  trainSamples?: Sample[];
  /** Default: the category's 'test' samples. */
  testSamples?: Sample[];
  /**
   * A meta-training detector's other categories (RegAD; MethodEntry.metaTraining). Default for such a detector:
   * every other category of the dataset at `root`, their normal training images (a dataset of one category is
   * refused); ignored by the others.
   */
  metaTrain?: MetaTrainCategory[];
  seed?: number;
  /** Write float32 TIFF maps as MAPS/<category>/test/<defect>/<stem>.tiff. */
  mapsDir?: string;
  /** Write `image,label,score` rows (image relative to the category folder). */
  scoresCsv?: string;
  /** Test images predicted per chunk (default 16). */
  chunkSize?: number;
  signal?: AbortSignal;
  /** `detail`: the trained detectors' epoch, loss and images/s while fitting. */
  onProgress?: (stage: ExperimentStage, done: number, total: number, detail?: string) => void;
  /** Restore the fitted state from this checkpoint instead of fitting (lib/methods/checkpoint.ts). */
  loadCheckpoint?: string;
  /** Write the fitted state to this checkpoint after fitting. */
  saveCheckpoint?: string;
  /** The experiment the saved checkpoint records (`imiad run --load` checks it against its command). */
  saveRun?: CheckpointRun;
  /**
   * A detector to use instead of a new one made from `method` and `params` (continual learning keeps one detector
   * over the tasks); the caller owns it and disposes it.
   */
  detector?: Detector;
  /** false: predict and evaluate with `detector` as it is, without fitting (continual: an earlier task). Default true. */
  fit?: boolean;
  /** Sees every test prediction in test order while the maps are alive (the grid keeps Fig. 3's heatmaps). */
  onPrediction?: (index: number, sample: Sample, score: number, map: AnomalyMap | undefined) => void;
  /**
   * The bootstrap interval of the image AUROC over the test images (lib/stats/bootstrap.ts), seeded with `seed`:
   * default 1,000 resamples at 95 %; false skips it.
   */
  bootstrap?: { resamples?: number; level?: number } | false;
}

export interface Percentiles {
  p50: number;
  p95: number;
}

export interface ExperimentEfficiency {
  /** 0 when the detector was loaded from a checkpoint (nothing was fitted). */
  fit_seconds: number;
  /** With a checkpoint: the time to read it and restore the detector. */
  load_seconds?: number;
  /** Per test image after the first (warm-up) one. */
  backbone_ms_per_image: Percentiles;
  method_ms_per_image: Percentiles;
  /** The process's peak resident set size so far (getrusage). */
  peak_rss_bytes: number;
  state_bytes: number;
  /** Trained detectors (STPM, RD4AD) when they trained in this run: the training's wall time and throughput. */
  train_seconds?: number;
  train_images_per_second?: number;
}

/** Per-category metrics; null where not applicable (image-level detectors, anomalies without masks). */
export interface ExperimentMetrics {
  image_auroc: number;
  image_ap: number;
  image_f1_max: number;
  pixel_auroc: number | null;
  pixel_ap: number | null;
  /** AU-PRO up to FPR 0.3. */
  aupro: number | null;
  /** F1-max over the pixels (present when the pixels were evaluated). */
  pixel_f1_max?: number;
  /** MVTec LOCO AD: the official AU-sPRO per limit (logical, structural, mean) and the split image AUROC. */
  spro?: { logical_anomalies: Record<string, number>; structural_anomalies: Record<string, number>; mean: Record<string, number> } | null;
  image_auroc_logical?: number;
  image_auroc_structural?: number;
}

export interface ExperimentResult {
  category: string;
  metrics: ExperimentMetrics;
  /** The bootstrap interval of the image AUROC; null when skipped or when the test set lacks a class. */
  intervals?: { image_auroc: BootstrapInterval | null };
  efficiency: ExperimentEfficiency;
}

function percentiles(values: number[]): Percentiles {
  // The first image pays for lazy initialisation (sessions, packed banks): it is the warm-up.
  const v = (values.length > 1 ? values.slice(1) : values).slice().sort((a, b) => a - b);
  if (v.length === 0) return { p50: 0, p95: 0 };
  const at = (q: number): number => {
    const pos = q * (v.length - 1);
    const lo = Math.floor(pos);
    const hi = Math.ceil(pos);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
  };
  return { p50: at(0.5), p95: at(0.95) };
}

function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

function csvField(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Path of a test image relative to its category folder, with forward slashes (e.g. test/scratch/003.png). */
export function relativeImagePath(category: Category, sample: Sample): string {
  return path.relative(category.root, sample.path).split(path.sep).join('/');
}

/** Where `--maps` writes a sample's map: MAPS/<category>/test/<defect>/<stem>.tiff (the official layout). */
export function mapFilePath(mapsDir: string, category: string, sample: Sample): string {
  const stem = path.basename(sample.path, path.extname(sample.path));
  return path.join(mapsDir, category, 'test', sample.defectType, `${stem}.tiff`);
}

/**
 * Predictions in test order, made chunk by chunk and shared by `consumers` readers that walk the samples in the
 * same order; a chunk is dropped once every reader has passed it.
 */
class ChunkedPredictions {
  private readonly chunks = new Map<number, Promise<{ scores: Float64Array; maps: AnomalyMap[] }>>();
  private readonly position: number[];
  readonly backboneMs: number[] = [];
  readonly methodMs: number[] = [];
  readonly scores: Float64Array;
  private predicted = 0;

  constructor(
    private readonly detector: Detector,
    private readonly samples: Sample[],
    private readonly chunkSize: number,
    consumers: number,
    private readonly onChunk: (start: number, scores: Float64Array, maps: AnomalyMap[]) => Promise<void>,
    private readonly opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
  ) {
    this.position = new Array(consumers).fill(0);
    this.scores = new Float64Array(samples.length);
  }

  private chunk(c: number): Promise<{ scores: Float64Array; maps: AnomalyMap[] }> {
    let p = this.chunks.get(c);
    if (!p) {
      // Chunks are made strictly in order, each after the previous one, so timings stay per image and in order.
      const prev = c > 0 ? this.chunks.get(c - 1) : undefined;
      p = (async () => {
        if (prev) await prev;
        const part = this.samples.slice(c * this.chunkSize, (c + 1) * this.chunkSize);
        const r = await this.detector.predict(part, { signal: this.opts.signal });
        const t = this.detector.lastTiming?.();
        if (t) {
          this.backboneMs.push(...t.backboneMs);
          this.methodMs.push(...t.methodMs);
        }
        this.scores.set(r.scores, c * this.chunkSize);
        await this.onChunk(c * this.chunkSize, r.scores, r.maps);
        this.predicted += part.length;
        this.opts.onProgress?.(this.predicted, this.samples.length);
        return r;
      })();
      this.chunks.set(c, p);
    }
    return p;
  }

  /** Reader `consumer`'s prediction of sample `index`. */
  async get(consumer: number, index: number): Promise<{ score: number; map: AnomalyMap | undefined }> {
    const c = Math.floor(index / this.chunkSize);
    const r = await this.chunk(c);
    this.position[consumer] = index;
    const slowest = Math.min(...this.position);
    for (const key of [...this.chunks.keys()]) if ((key + 1) * this.chunkSize <= slowest) this.chunks.delete(key);
    return { score: r.scores[index - c * this.chunkSize], map: r.maps[index - c * this.chunkSize] };
  }

  /** Predicts everything not yet predicted (image-level evaluation). */
  async all(): Promise<void> {
    const n = Math.ceil(this.samples.length / this.chunkSize);
    for (let c = 0; c < n; c++) {
      await this.chunk(c);
      this.chunks.delete(c);
    }
  }
}

/**
 * The decision threshold saved with a checkpoint (lib/metrics/threshold.ts): F1-optimal on the labelled test
 * scores, or, when the test images are of one kind only, the NORMAL_QUANTILE of the training-normal images' scores.
 */
export async function decisionFor(detector: Detector, test: Sample[], testScores: Float64Array, train: Sample[], signal?: AbortSignal): Promise<DecisionThreshold> {
  const labels = test.map((s) => (s.label === 'anomaly' ? 1 : 0));
  const anomalies = labels.reduce((a: number, b) => a + b, 0);
  if (anomalies > 0 && anomalies < labels.length) return f1OptimalThreshold(testScores, labels);
  const normals = train.filter((s) => s.label === 'normal');
  const { scores } = await detector.predict(normals, { signal });
  return quantileThreshold(scores);
}

/** A detector restored from a checkpoint that meets differently preprocessed images: name the file and the options. */
function namingCheckpoint(err: unknown, file: string | undefined): unknown {
  if (file && hasCode(err, 'ERR_IMIAD_DIMS')) {
    err.message = `Checkpoint ${file}: ${err.message} (the images must be prepared as when it was saved: --image-size and --crop as then)`;
  }
  return err;
}

/** Every other category of the dataset with its normal training images (RegAD's meta-training set). */
async function otherCategories(dataset: DatasetName, root: string, category: Category, seed: number): Promise<MetaTrainCategory[]> {
  const all = await loadDataset(dataset, root, { seed });
  return metaTrainingSplit(category, all).map((m) => ({ category: m.category, samples: m.samples.map((x) => x.sample) }));
}

export async function runExperiment(opts: ExperimentOptions): Promise<ExperimentResult> {
  const seed = opts.seed ?? 0;
  let category: Category;
  if (typeof opts.category === 'string') {
    const found = await loadDataset(opts.dataset, opts.root, { categories: [opts.category], seed });
    category = found[0];
  } else {
    category = opts.category;
  }
  const train = opts.trainSamples ?? category.samples.filter((s) => s.split === 'train');
  const test = opts.testSamples ?? category.samples.filter((s) => s.split === 'test');
  if (test.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected test samples in category ${category.name} but found none`);
  if (opts.fit === false && !opts.detector) throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected a fitted detector with fit: false but received none');
  const readStart = process.hrtime.bigint();
  const checkpoint = opts.loadCheckpoint ? await readCheckpoint(opts.loadCheckpoint) : null;
  const readSeconds = Number(process.hrtime.bigint() - readStart) / 1e9;
  if (!checkpoint && opts.fit !== false && !train.some((s) => s.label === 'normal')) {
    throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected normal training images in category ${category.name} (${category.root}) but found none`);
  }
  if (checkpoint && checkpoint.method !== opts.method) {
    throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Checkpoint ${opts.loadCheckpoint}: it holds a ${checkpoint.method} detector, not ${opts.method}`);
  }
  const detectorParams = { seed, ...(opts.params ?? {}) };
  // A checkpoint restores the configuration it was fitted with; the command line's options only add to it.
  const detector = opts.detector ?? createDetector(opts.method, checkpoint ? { ...detectorParams, ...checkpoint.params } : detectorParams);
  const progress = opts.onProgress;
  try {
    const t0 = process.hrtime.bigint();
    if (checkpoint) {
      if (!detector.loadState) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Checkpoint ${opts.loadCheckpoint}: ${opts.method} cannot load checkpoints`);
      try {
        await detector.loadState(checkpoint.state);
      } catch (err) {
        if (hasCode(err, 'ERR_IMIAD_CHECKPOINT')) err.message = `Checkpoint ${opts.loadCheckpoint}: ${err.message}`;
        throw err;
      }
    } else if (opts.fit !== false) {
      const metaTrain = findMethod(opts.method)?.metaTraining ? (opts.metaTrain ?? (await otherCategories(opts.dataset, opts.root, category, seed))) : undefined;
      const validation = category.samples.filter((s) => s.split === 'validation' && s.label === 'normal');
      await detector.fit(train, { signal: opts.signal, validation, onProgress: (d, t, detail) => progress?.('fit', d, t, detail), ...(metaTrain ? { metaTrain } : {}) });
    }
    const fitSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    // Captured now, written after the evaluation with the decision threshold the test scores give.
    let saved: DetectorState | null = null;
    if (opts.saveCheckpoint) {
      if (!detector.saveState) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `${opts.method} cannot save checkpoints`);
      saved = detector.saveState();
    }
    const training = checkpoint ? null : (detector.trainingStats?.() ?? null);

    const isLoco = opts.dataset === 'loco';
    const rows: string[] = [];
    const onChunk = async (start: number, scores: Float64Array, maps: AnomalyMap[]): Promise<void> => {
      for (let i = 0; i < scores.length; i++) {
        const s = test[start + i];
        opts.onPrediction?.(start + i, s, scores[i], maps[i]);
        rows.push(`${csvField(relativeImagePath(category, s))},${s.label === 'anomaly' ? 1 : 0},${scores[i]}`);
        if (opts.mapsDir && maps[i]) {
          const file = mapFilePath(opts.mapsDir, category.name, s);
          await fs.promises.mkdir(path.dirname(file), { recursive: true });
          await fs.promises.writeFile(file, encodeTiff(maps[i]));
        }
      }
    };
    const hasMaps = findMethod(opts.method)?.hasMaps ?? true;
    const pixelEvaluable = hasMaps && test.every((s) => s.label === 'normal' || s.maskPaths.length > 0) && test.some((s) => s.label === 'anomaly');
    const consumers = pixelEvaluable ? (isLoco ? 2 : 1) : 1;
    const preds = new ChunkedPredictions(detector, test, opts.chunkSize ?? 16, consumers, onChunk, {
      signal: opts.signal,
      onProgress: (d, t) => progress?.('predict', d, t),
    });
    const evalPrediction = async (consumer: number, sample: Sample, index: number): Promise<EvalPrediction> => {
      const { score, map } = await preds.get(consumer, index);
      if (!map) throw imiadError('Error', 'ERR_IMIAD_STATE', `The detector returned no anomaly map for ${sample.path}`);
      return { anomalyMap: map.data, width: map.width, height: map.height, imageScore: score };
    };

    const labels = Uint8Array.from(test, (s) => (s.label === 'anomaly' ? 1 : 0));
    const metrics: ExperimentMetrics = { image_auroc: NaN, image_ap: NaN, image_f1_max: NaN, pixel_auroc: null, pixel_ap: null, aupro: null };
    const testCategory: Category = { ...category, samples: test };
    if (pixelEvaluable) {
      const evalOpts = { signal: opts.signal, onProgress: (d: number, t: number) => progress?.('evaluate', d, t) };
      const [mv, loco] = await Promise.all([
        evaluateCategory(testCategory, (s, i) => evalPrediction(0, s, i), evalOpts),
        isLoco ? evaluateLocoCategory(testCategory, (s, i) => evalPrediction(1, s, i), { signal: opts.signal }) : Promise.resolve(null),
      ]);
      metrics.image_auroc = mv.image_auroc;
      metrics.image_ap = mv.image_ap;
      metrics.image_f1_max = mv.f1_max;
      metrics.pixel_auroc = mv.pixel_auroc;
      metrics.pixel_ap = mv.pixel_ap;
      metrics.aupro = mv.aupro['0.3'] ?? null;
      metrics.pixel_f1_max = mv.details.pixel_f1_max;
      if (loco) {
        metrics.spro = loco.localization;
        metrics.image_auroc_logical = loco.classification.logical_anomalies;
        metrics.image_auroc_structural = loco.classification.structural_anomalies;
      }
    } else {
      await preds.all();
      const image = await binaryClassificationMetrics(preds.scores, labels, { signal: opts.signal });
      metrics.image_auroc = image.auroc;
      metrics.image_ap = image.ap;
      metrics.image_f1_max = image.f1Max;
      if (isLoco) {
        metrics.spro = null;
        for (const type of ['logical_anomalies', 'structural_anomalies'] as const) {
          const idx = test.map((s, i) => (s.defectType === 'good' || s.defectType === type ? i : -1)).filter((i) => i >= 0);
          const r = await binaryClassificationMetrics(
            Float64Array.from(idx.map((i) => preds.scores[i])),
            Uint8Array.from(idx.map((i) => labels[i])),
            { signal: opts.signal },
          );
          if (type === 'logical_anomalies') metrics.image_auroc_logical = r.auroc;
          else metrics.image_auroc_structural = r.auroc;
        }
      }
    }
    // A detector's non-finite score leaves the AUROC itself to lib/metrics' rules; the interval is then not defined.
    const bootstrappable = opts.bootstrap !== false && preds.scores.every(Number.isFinite);
    const imageInterval = !bootstrappable ? null : await bootstrapAuroc(preds.scores, labels, { ...opts.bootstrap, seed, signal: opts.signal });
    if (opts.saveCheckpoint && saved) {
      const decision = await decisionFor(detector, test, preds.scores, train, opts.signal);
      await writeCheckpoint(opts.saveCheckpoint, { method: opts.method, params: detectorParams, state: saved, decision, ...(opts.saveRun ? { run: opts.saveRun } : {}) });
    }
    if (opts.scoresCsv) {
      await fs.promises.mkdir(path.dirname(path.resolve(opts.scoresCsv)), { recursive: true });
      await fs.promises.writeFile(opts.scoresCsv, `image,label,score\n${rows.join('\n')}\n`);
    }
    return {
      category: category.name,
      metrics,
      intervals: { image_auroc: imageInterval },
      efficiency: {
        // Loading is not fitting: its time is reported apart (a loaded detector's fit time is 0).
        fit_seconds: checkpoint ? 0 : fitSeconds,
        ...(checkpoint ? { load_seconds: readSeconds + fitSeconds } : {}),
        backbone_ms_per_image: percentiles(preds.backboneMs),
        method_ms_per_image: percentiles(preds.methodMs),
        peak_rss_bytes: peakRssBytes(),
        state_bytes: detector.stateBytes(),
        ...(training ? { train_seconds: training.trainSeconds, train_images_per_second: training.imagesPerSecond } : {}),
      },
    };
  } catch (err) {
    throw namingCheckpoint(err, opts.loadCheckpoint);
  } finally {
    if (!opts.detector) await detector.dispose?.();
  }
}
