/**
 * The files an experiment reads and writes besides its result row (`imiad run --save/--load/--scores/--maps`), and
 * their names (docs/run.md, "Files"):
 * - one category: the names as given;
 * - several categories: FILE.<category>.imiad (checkpoints) and FILE.<category>.csv (scores);
 * - continual (one detector over the tasks): after learning task N (from 1), the checkpoint FILE.task<N>.imiad, and
 *   for every task seen so far the scores FILE.task<N>.<category>.csv and the maps MAPS/task<N>/<category>/...
 * Maps are always MAPS/<category>/test/<defect>/<stem>.tiff below their folder (the official layout).
 */
import * as path from 'path';

import type { Experiment } from './types';

export interface ExperimentFiles {
  /** Write the fitted detector here (continual: the base name of one checkpoint per task). */
  save?: string;
  /** Restore the detector from here instead of fitting (continual: the base name, one checkpoint per task). */
  load?: string;
  /** `image,label,score` rows of the test images. */
  scores?: string;
  /** Folder of float32 TIFF anomaly maps. */
  maps?: string;
}

export const CHECKPOINT_EXTENSION = '.imiad';
export const SCORES_EXTENSION = '.csv';

/** FILE.ext -> FILE.<part>.ext; a name without that extension gets .<part> appended. */
export function withPart(file: string, part: string, extension: string): string {
  const lower = file.toLowerCase();
  return lower.endsWith(extension) ? `${file.slice(0, file.length - extension.length)}.${part}${file.slice(file.length - extension.length)}` : `${file}.${part}`;
}

/** The files of one experiment of a run whose options name `files`; `several`: the run has several experiments. */
export function experimentFiles(files: ExperimentFiles, experiment: Experiment, several: boolean): ExperimentFiles {
  if (!several || experiment.tasks) return { ...files };
  const category = experiment.config.category;
  return {
    ...(files.save ? { save: withPart(files.save, category, CHECKPOINT_EXTENSION) } : {}),
    ...(files.load ? { load: withPart(files.load, category, CHECKPOINT_EXTENSION) } : {}),
    ...(files.scores ? { scores: withPart(files.scores, category, SCORES_EXTENSION) } : {}),
    ...(files.maps ? { maps: files.maps } : {}),
  };
}

const taskPart = (index: number): string => `task${index + 1}`;

/** Continual: the checkpoint of the detector after learning task `index` (0-based). */
export function taskCheckpoint(file: string, index: number): string {
  return withPart(file, taskPart(index), CHECKPOINT_EXTENSION);
}

/** Continual: the scores of `category`'s test images by the detector after learning task `index`. */
export function taskScores(file: string, index: number, category: string): string {
  return withPart(withPart(file, taskPart(index), SCORES_EXTENSION), category, SCORES_EXTENSION);
}

/** Continual: the maps folder of the detector after learning task `index`. */
export function taskMaps(dir: string, index: number): string {
  return path.join(dir, taskPart(index));
}

/** Every checkpoint file an experiment reads or writes under `file` (continual: one per task). */
export function checkpointFiles(file: string, experiment: Experiment): string[] {
  return experiment.tasks ? experiment.tasks.map((_t, i) => taskCheckpoint(file, i)) : [file];
}
