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
  fit(train: TrainSample[], opts?: RunOptions): Promise<void>;
  predict(samples: Sample[], opts?: RunOptions): Promise<Prediction>;
  /** Bytes held by the fitted state (memory bank, statistics). */
  stateBytes(): number;
  /** Per-image times of the last predict call, split into backbone and method. */
  lastTiming?(): Timing;
  /** The fitted state, for a checkpoint (every built-in detector has it). */
  saveState?(): DetectorState;
  /** Restores a state saveState() returned, instead of fit(). */
  loadState?(state: DetectorState): Promise<void>;
  /** Trained detectors: what the last fit() did; null before. */
  trainingStats?(): TrainingStats | null;
  /** Releases the backbone session (native memory); the detector cannot predict afterwards. */
  dispose?(): Promise<void>;
}
