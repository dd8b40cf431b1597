/**
 * The runner's interfaces: one experiment (what is run), its result (what is stored), and the executor that the
 * detectors plug in (fit + predict + evaluate one category under a split, or a continual task sequence).
 */
import type { DatasetName } from '../datasets/types';
import type { CategorySplit, SettingManifest, SettingSpec } from '../settings/types';
import type { BootstrapInterval } from '../stats/bootstrap';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** The identity of an experiment: everything that changes its result. Hashed with the code version into `key`. */
export interface ExperimentConfig {
  dataset: DatasetName;
  /** The category; for continual, the tasks joined by '+', in order. */
  category: string;
  method: string;
  /** Method parameters (coreset ratio, layers, backbone file, ...), canonical JSON. */
  params: { [key: string]: JsonValue };
  setting: SettingSpec;
  seed: number;
}

export interface Experiment {
  key: string;
  config: ExperimentConfig;
  /** The dataset folder; not part of the key (moving a dataset does not invalidate its results). */
  root: string;
  /** Non-continual settings: the category's split. */
  split?: CategorySplit;
  /** Continual: the tasks in learning order. */
  tasks?: CategorySplit[];
  manifest: SettingManifest | SettingManifest[];
  /** Where the executor may write this experiment's small heatmap PNGs (see lib/runner/heatmaps.ts). */
  heatmapDir: string;
}

/**
 * Metric names the reports read (DESIGN.md "Metrics"); an executor may add others. null: not defined for this
 * experiment (no masks, image-level detector).
 */
export const METRIC_NAMES = [
  'imageAUROC',
  'imageAP',
  'imageF1Max',
  'pixelAUROC',
  'pixelAP',
  'pixelPRO',
  'pixelF1Max',
  // MVTec LOCO AD: logical and structural anomalies evaluated separately, each with all good images; sPRO at 0.05.
  'imageAUROCLogical',
  'imageAUROCStructural',
  'sPROLogical',
  'sPROStructural',
  'sPRO',
] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

export type Metrics = { [name: string]: number | null };

export interface Efficiency {
  /** Inference time per test image (backbone + method, each the median after a warm-up image), milliseconds. */
  inferenceMsPerImage: number;
  backboneMsPerImage?: number;
  methodMsPerImage?: number;
  /** The 95th percentiles of the same per-image times. */
  backboneMsPerImageP95?: number;
  methodMsPerImageP95?: number;
  /** Wall time of fit, milliseconds; absent when the detector was loaded from a checkpoint (nothing was fitted). */
  fitMs?: number;
  /** Loaded from a checkpoint (`imiad run --load`): the time to read it and restore the detector, milliseconds. */
  loadMs?: number;
  /** Trained detectors that trained in this experiment: the training's wall time and throughput. */
  trainMs?: number;
  trainImagesPerSecond?: number;
  /** Bytes of the fitted state (Detector.stateBytes()), the circle size of Fig. 2. */
  memoryBytes: number;
  /** Peak resident set size of the process during the experiment, when measured. */
  peakRssBytes?: number;
  /** 'cpu' or 'cuda'. */
  device?: string;
}

/** One saved heatmap triple (paths relative to the store's folder). */
export interface HeatmapRecord {
  sample: string;
  defectType: string;
  image: string;
  mask: string | null;
  overlay: string;
}

/** Continual: metric name -> result matrix T[l][j] (task j after learning task l; null above the diagonal). */
export interface ContinualResult {
  tasks: string[];
  matrix: { [metric: string]: (number | null)[][] };
}

/**
 * Notes the reports look for (exact strings, in ExperimentResult.notes): a detector that trains on the normal images
 * only in the supervised setting (Table VIII footnote), and a memory bank that grows over continual tasks (Table XI).
 */
export const NOTE_IGNORES_LABELLED_ANOMALIES = 'ignores the labelled anomalies (trains on the normal images only)';
export const NOTE_MEMORY_BANK_ACCUMULATES = 'memory bank accumulated over the tasks';

/** Metric name -> its bootstrap interval over the test images (imageAUROC; lib/stats/bootstrap.ts). */
export type MetricIntervals = { [metric: string]: BootstrapInterval };
/**
 * Continual: how the row's detector learnt the tasks (one note per continual row; Table XI's footnote). The
 * accumulate mode's note is NOTE_MEMORY_BANK_ACCUMULATES (PatchCore and SPADE's banks, DNE's per-task Gaussians).
 */
export const NOTE_CONTINUAL_SEQUENTIAL = 'learnt the tasks in turn: one model, each task trained on its own images from the weights the previous task left';
export const NOTE_CONTINUAL_STATISTICS = 'Gaussian statistics updated with each task through running sums (equal to a refit on the union of the tasks)';
export const NOTE_CONTINUAL_JOINT = 'joint training: refitted on the training images of every task so far after each task (an upper bound, not continual learning)';
/** What rows stored before the continual modes existed say for a refit on the union (read as joint training). */
export const NOTE_REFIT_ON_UNION = 'refitted on the training images of every task so far after each task (no incremental form)';

export interface ExperimentResult {
  /** Non-continual: the metrics of the category. Continual: filled by the runner from `continual` (final average). */
  metrics: Metrics;
  /** Bootstrap intervals of metrics over the test images, where the executor computed them. */
  intervals?: MetricIntervals;
  efficiency: Efficiency;
  continual?: ContinualResult;
  heatmaps?: HeatmapRecord[];
  /** Things a reader must know; use the NOTE_ constants above where they apply. */
  notes?: string[];
}

export type ExperimentExecutor = (
  experiment: Experiment,
  opts: { signal: AbortSignal; onProgress?: (done: number, total: number) => void },
) => Promise<ExperimentResult>;

/** A row of the results store. */
export interface ResultRow {
  key: string;
  codeVersion: string;
  config: ExperimentConfig;
  metrics: Metrics;
  /** Bootstrap intervals (null: none computed, and every row of a store written before they existed). */
  intervals?: MetricIntervals | null;
  efficiency: Efficiency;
  manifest: SettingManifest | SettingManifest[];
  continual: (ContinualResult & { forgetting: { [metric: string]: number | null } }) | null;
  heatmaps: HeatmapRecord[];
  notes: string[];
  machine: MachineDescription;
  startedAt: string;
  finishedAt: string;
}

export interface MachineDescription {
  cpu: string;
  cores: number;
  memoryBytes: number;
  node: string;
  platform: string;
  hostname: string;
  gpu?: string;
}
