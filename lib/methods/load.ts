/**
 * A saved detector put to work on new images (`imiad predict`, and the Node API's `loadDetector`): the checkpoint
 * (lib/methods/checkpoint.ts, written by `imiad run --save`) restores the detector with the parameters it was fitted
 * with, and its decision threshold (lib/metrics/threshold.ts) turns each score into a decision.
 */
import * as path from 'path';

import { hasCode, imiadError, invalidType } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { isFile } from '../datasets/files';
import type { Sample } from '../datasets/types';
import type { DecisionThreshold } from '../metrics/threshold';
import { readCheckpoint } from './checkpoint';
import { createDetector } from './index';
import type { AnomalyMap, Detector } from './types';

export type Decision = 'anomaly' | 'normal';

export interface ImagePrediction {
  /** The image file, as given. */
  path: string;
  score: number;
  /** 'anomaly' when score >= threshold. */
  decision: Decision;
  /** The anomaly map at the image's original size (absent for image-level detectors such as DNE). */
  map?: AnomalyMap;
}

export interface PredictOptions {
  /** Overrides the checkpoint's threshold for this call. */
  threshold?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface LoadedDetector {
  readonly file: string;
  readonly method: string;
  /** The parameters the detector was fitted with. */
  readonly params: Record<string, unknown>;
  /** The threshold in use: the `threshold` option, else the checkpoint's; null when neither exists. */
  readonly threshold: DecisionThreshold | null;
  /** Scores image files (all decoded together: pass a batch, not a whole folder). */
  predict(images: string[], opts?: PredictOptions): Promise<ImagePrediction[]>;
  /** Releases the backbone session. */
  dispose(): Promise<void>;
}

function requireThreshold(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalidType('finite number', name, value);
  return value;
}

/** A Sample for an image outside any dataset layout. */
export function imageSample(file: string): Sample {
  return { path: path.resolve(file), maskPaths: [], label: 'normal', defectType: 'unknown', split: 'test' };
}

/**
 * Restores the detector saved in `file`. `opts.threshold` replaces the checkpoint's decision threshold; a checkpoint
 * without one (written before imiad stored thresholds) needs it.
 */
export async function loadDetector(file: string, opts: { threshold?: number } = {}): Promise<LoadedDetector> {
  if (!is.string(file) || file === '') throw invalidType('checkpoint file path', 'file', file);
  const checkpoint = await readCheckpoint(file);
  const threshold: DecisionThreshold | null =
    opts.threshold !== undefined
      ? { threshold: requireThreshold(opts.threshold, 'threshold'), source: 'option', images: 0 }
      : (checkpoint.decision ?? null);
  const detector: Detector = createDetector(checkpoint.method, checkpoint.params);
  if (!detector.loadState) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Checkpoint ${file}: ${checkpoint.method} cannot load checkpoints`);
  try {
    await detector.loadState(checkpoint.state);
  } catch (err) {
    await detector.dispose?.();
    if (hasCode(err, 'ERR_IMIAD_CHECKPOINT')) err.message = `Checkpoint ${file}: ${err.message}`;
    throw err;
  }
  return {
    file,
    method: checkpoint.method,
    params: checkpoint.params,
    threshold,
    async predict(images: string[], popts: PredictOptions = {}): Promise<ImagePrediction[]> {
      if (!Array.isArray(images) || images.length === 0 || !images.every((f) => is.string(f))) {
        throw invalidType('non-empty array of image file paths', 'images', images);
      }
      for (const f of images) if (!isFile(f)) throw imiadError('Error', 'ERR_IMIAD_FILE', `Image ${f} does not exist or is not a file`);
      const t = popts.threshold !== undefined ? requireThreshold(popts.threshold, 'threshold') : threshold?.threshold;
      if (t === undefined) {
        throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', `Checkpoint ${file} holds no decision threshold (saved by an older imiad): pass a threshold (--threshold T)`);
      }
      let result;
      try {
        result = await detector.predict(images.map(imageSample), { signal: popts.signal, onProgress: popts.onProgress });
      } catch (err) {
        if (hasCode(err, 'ERR_IMIAD_DIMS')) {
          err.message = `Checkpoint ${file}: ${err.message} (the images are prepared with the checkpoint's imageSize and cropSize)`;
        }
        throw err;
      }
      return images.map((p, i) => ({
        path: p,
        score: result.scores[i],
        decision: result.scores[i] >= t ? 'anomaly' : 'normal',
        ...(result.maps[i] ? { map: result.maps[i] } : {}),
      }));
    },
    async dispose(): Promise<void> {
      await detector.dispose?.();
    },
  };
}
