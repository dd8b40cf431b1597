/** The common detector interface (DESIGN.md, "Detectors"): fit on training samples, predict maps and scores. */
import type { Sample } from '../datasets/types';

/** A training sample as a setting hands it to a detector: labelled anomalies only in the supervised setting. */
export type TrainSample = Sample;

/** One anomaly map at the image's original resolution (row-major, width * height). */
export interface AnomalyMap {
  data: Float32Array;
  width: number;
  height: number;
}

export interface Prediction {
  /** One image score per sample, in input order. */
  scores: Float64Array;
  /** One anomaly map per sample at its original size; empty for image-level detectors (e.g. DNE). */
  maps: AnomalyMap[];
}

export interface RunOptions {
  signal?: AbortSignal;
  /** `detail` (trained detectors: epoch, loss, images/s) is shown beside the counts. */
  onProgress?: (done: number, total: number, detail?: string) => void;
}

/** One other category of the dataset, for detectors that meta-train across categories (RegAD). */
export interface MetaTrainCategory {
  category: string;
  /** Its normal training images. */
  samples: Sample[];
}

/**
 * Options of Detector.fit(). The continual setting (lib/runner/executor.ts) calls fit() once per task with
 * `continueTraining: true`; every other caller fits from scratch.
 */
export interface FitOptions extends RunOptions {
  /**
   * Continue from the detector's current state (left by an earlier fit() or by loadState()) instead of starting
   * over. On a detector that holds no state yet it is an ordinary first fit. What "continue" means is the detector's
   * continual mode (MethodEntry.continual in lib/methods/registry.ts):
   * - `sequential` (every trained detector; new trained detectors must follow this): the same network goes on
   *   training from its current weights **and optimiser state** (momentum buffers, Adam moments and step count) on
   *   these samples only, for the detector's own epochs and schedule; nothing is re-initialised. The epoch shuffles
   *   of the k-th fit are drawn from the seed and k, so a detector restored by loadState() from a checkpoint taken
   *   after k fits continues exactly as the one that was saved (saveState() must carry the optimiser state and k).
   * - `accumulate` (PatchCore, SPADE: the memory bank grows by these samples' entries; DNE: one more Gaussian).
   * - `statistics` (PaDiM, built with `runningSums: true`): the running float64 sums are updated with these samples
   *   and the Gaussians recomputed, equal to a fit on every sample seen so far.
   * Default false: fit() discards any earlier state (a trained detector starts from a fresh, seeded
   * initialisation), so that fitting twice gives the same detector as fitting once.
   */
  continueTraining?: boolean;
  /**
   * The dataset's other categories, for detectors that meta-train on them before adapting to this one (RegAD;
   * MethodEntry.metaTraining). The few-shot setting puts them in the split (CategorySplit.meta) and the runner
   * passes them; the others ignore them.
   */
  metaTrain?: MetaTrainCategory[];
  /**
   * Normal images of the dataset's validation split (MVTec LOCO AD's `validation/good`), never trained on. Detectors
   * that fix constants on held-out normals use them (GCAD: its map statistics); the others ignore them. The runner
   * passes them when the category has a validation split; absent or empty, such a detector holds out a seeded slice
   * of the training normals instead.
   */
  validation?: Sample[];
}

/** Typed arrays a fitted state is made of. */
export type StateArray = Float32Array | Float64Array | Int32Array;

/** A detector's fitted state as a checkpoint stores it (lib/methods/checkpoint.ts): JSON config + named arrays. */
export interface DetectorState {
  config: Record<string, unknown>;
  arrays: Record<string, StateArray>;
}

/** What a trained detector's last fit() did (the efficiency figures' train_seconds and images/s). */
export interface TrainingStats {
  epochs: number;
  /** Training steps only (teacher features included), without the first pass that caches them. */
  trainSeconds: number;
  imagesPerSecond: number;
  /** Mean loss of each epoch. */
  losses: number[];
}

/** Time split of one predict call, for the efficiency figures. */
export interface Timing {
  backboneMs: number[];
  methodMs: number[];
}

export interface Detector {
  readonly name: string;
  /** Whether labelled anomalies in the training set are used (supervised setting); others ignore them. */
  readonly usesLabelledAnomalies: boolean;
  fit(train: TrainSample[], opts?: FitOptions): Promise<void>;
  predict(samples: Sample[], opts?: RunOptions): Promise<Prediction>;
  /** Bytes held by the fitted state (memory bank, statistics). */
  stateBytes(): number;
  /** Per-image times of the last predict call, split into backbone and method. */
  lastTiming?(): Timing;
  /** The fitted state, for a checkpoint (every built-in detector has it). */
  saveState?(): DetectorState;
  /** Restores a state saveState() returned, instead of fit() (a later fit(..., { continueTraining: true }) goes on from it). */
  loadState?(state: DetectorState): Promise<void>;
  /** Trained detectors: what the last fit() did; null before. */
  trainingStats?(): TrainingStats | null;
  /** Releases the backbone session (native memory); the detector cannot predict afterwards. */
  dispose?(): Promise<void>;
}
