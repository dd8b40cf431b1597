/**
 * Per-task progress of a continual experiment, so that a grid killed between tasks resumes where it stopped and
 * gives the same matrix as an uninterrupted run. After each task the executor writes one file,
 * `<store folder>/continual/<experiment key>.imiad`: the checkpoint format of lib/methods/checkpoint.ts (atomic:
 * temporary file, then rename; SHA-256 checked) holding the detector's state (weights and optimiser state, memory
 * bank or running statistics) and, in the header, the tasks done, the result rows so far and the efficiency figures
 * measured so far. The file is removed when the experiment finishes.
 */
import * as fs from 'fs';
import * as path from 'path';

import { hasCode, imiadError } from '../../bindings/errors';
import { readCheckpoint, writeCheckpoint } from '../methods/checkpoint';
import type { DetectorState } from '../methods/types';
import type { Efficiency, Metrics } from './types';

export interface ContinualProgress {
  /** The experiment key the file belongs to (a renamed file is not taken for another experiment's). */
  key: string;
  /** The tasks' categories, in learning order. */
  tasks: string[];
  /** Tasks learnt and evaluated so far: rows[l][j] for l < rows.length. */
  rows: Metrics[][];
  /** Sum of the fits' wall times so far, milliseconds. */
  fitMs: number;
  /** Efficiency of every evaluation so far (their mean is the row's inference time). */
  inference: Efficiency[];
  /** The last evaluation's state and peak memory figures. */
  stateBytes: number;
  peakRssBytes: number;
  /** The detector after the last task (absent in joint training, which refits from scratch each task). */
  detector: { method: string; params: Record<string, unknown>; state: DetectorState } | null;
}

const FORMAT = 'imiad-continual-progress';

export function continualCheckpointFile(storeDir: string, key: string): string {
  return path.join(storeDir, 'continual', `${key}.imiad`);
}

// Metric values may be NaN (a metric the category cannot define); JSON would turn them into null.
const encodeNumber = (_k: string, v: unknown): unknown => (typeof v === 'number' && !Number.isFinite(v) ? { nonFinite: String(v) } : v);
const decodeNumber = (_k: string, v: unknown): unknown =>
  v !== null && typeof v === 'object' && typeof (v as { nonFinite?: unknown }).nonFinite === 'string' && Object.keys(v).length === 1
    ? Number((v as { nonFinite: string }).nonFinite)
    : v;

/** Writes the progress atomically. */
export async function writeContinualProgress(file: string, progress: ContinualProgress): Promise<void> {
  const { detector, ...rest } = progress;
  const header = JSON.parse(JSON.stringify(rest, encodeNumber)) as Record<string, unknown>;
  await writeCheckpoint(file, {
    method: detector?.method ?? '',
    params: detector?.params ?? {},
    state: {
      config: { format: FORMAT, progress: header, detector: detector ? detector.state.config : null },
      arrays: detector ? detector.state.arrays : {},
    },
  });
}

/**
 * The progress stored for `key`, or null when there is none. A file that is unreadable, corrupt or belongs to
 * another experiment is an ERR_IMIAD_CHECKPOINT error naming it (delete it to start the experiment over).
 */
export async function readContinualProgress(file: string, key: string): Promise<ContinualProgress | null> {
  if (!fs.existsSync(file)) return null;
  let c;
  try {
    c = await readCheckpoint(file);
  } catch (err) {
    if (hasCode(err, 'ERR_IMIAD_FILE') && !fs.existsSync(file)) return null;
    throw err;
  }
  const bad = (reason: string): Error => imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Continual progress ${file}: ${reason} (delete it to start the experiment over)`);
  const config = c.state.config as { format?: unknown; progress?: unknown; detector?: unknown };
  if (config.format !== FORMAT || config.progress === null || typeof config.progress !== 'object') throw bad('not a continual progress file');
  const p = JSON.parse(JSON.stringify(config.progress), decodeNumber) as Omit<ContinualProgress, 'detector'>;
  if (p.key !== key) throw bad(`it belongs to experiment ${String(p.key)}, not ${key}`);
  if (!Array.isArray(p.rows) || !Array.isArray(p.tasks) || !Array.isArray(p.inference) || typeof p.fitMs !== 'number') throw bad('incomplete progress');
  const detector =
    config.detector !== null && typeof config.detector === 'object'
      ? { method: c.method, params: c.params, state: { config: config.detector as Record<string, unknown>, arrays: c.state.arrays } }
      : null;
  return { ...p, detector };
}
