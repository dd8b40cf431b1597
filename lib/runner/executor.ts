/**
 * The grid's experiment executor: one Experiment (a category's split, or a continual task sequence) through
 * runExperiment, with the settings' training samples (noisy relabelling, few-shot augmented copies), the metrics
 * mapped to the store's names, Fig. 3's heatmaps and the notes the reports print.
 *
 * Continual learning (docs/settings-continual.md): one detector learns the tasks in order and, after each, is
 * evaluated on every task so far. Each task is one fit(task's training images, { continueTraining: true }); what
 * that does is the registry's continual mode: `sequential` (trained detectors: the same network trains on, from the
 * previous task's weights and optimiser state), `accumulate` (PatchCore and SPADE's memory banks grow, DNE adds a
 * Gaussian), `statistics` (PaDiM's running sums, equal to a refit on the union). With the setting's `joint` option
 * the detector is instead refitted from scratch on the union of the tasks so far (an upper bound). After each task
 * the progress is saved in the store's folder (lib/runner/continual.ts), so a killed run resumes between tasks.
 *
 * Every `imiad run` goes through this executor too (with or without --setting): `files` gives each experiment the
 * checkpoint to save or load and the scores and maps to write (lib/runner/files.ts names them; continual: per task).
 */
import * as fs from 'fs';
import * as path from 'path';

import { imiadError } from '../../bindings/errors';
import { loadDataset } from '../datasets';
import type { Category, Sample } from '../datasets/types';
import { type ContinualMode, createDetector, findMethod } from '../methods';
import type { CheckpointRun } from '../methods/checkpoint';
import type { AnomalyMap, Detector } from '../methods/types';
import type { CategorySplit } from '../settings/types';
import { continualCheckpointFile, type ContinualProgress, readContinualProgress, writeContinualProgress } from './continual';
import { runExperiment, type ExperimentResult as RunResult } from './experiment';
import { type ExperimentFiles, taskCheckpoint, taskMaps, taskScores } from './files';
import type { CategoryLoader } from './grid';
import { saveHeatmaps, selectHeatmapSamples } from './heatmaps';
import { metricsFromEvaluation, metricsFromLocoEvaluation, PRO_LIMIT } from './metrics';
import { testSamples, trainingSamples } from './samples';
import {
  NOTE_CONTINUAL_JOINT,
  NOTE_CONTINUAL_SEQUENTIAL,
  NOTE_CONTINUAL_STATISTICS,
  NOTE_IGNORES_LABELLED_ANOMALIES,
  NOTE_MEMORY_BANK_ACCUMULATES,
  type Efficiency,
  type Experiment,
  type ExperimentExecutor,
  type ExperimentResult,
  type Metrics,
} from './types';

export { NOTE_REFIT_ON_UNION } from './types';

/** The note of each continual mode (Table XI's footnote reads the mode from the setting and the registry). */
export const CONTINUAL_MODE_NOTES: Readonly<Record<ContinualMode, string>> = {
  sequential: NOTE_CONTINUAL_SEQUENTIAL,
  accumulate: NOTE_MEMORY_BANK_ACCUMULATES,
  statistics: NOTE_CONTINUAL_STATISTICS,
};

export interface ExecutorOptions {
  /** Where few-shot augmented copies are written (reused by later experiments); default <heatmapDir>/../../augmented. */
  augmentDir?: string;
  /** Save Fig. 3 heatmaps (default true). */
  heatmaps?: boolean;
  /**
   * Loads categories as the grid's expansion did (the folder layout's folders, an MTD split file); default
   * loadDataset(name, root, { categories }).
   */
  loadCategories?: CategoryLoader;
  /** Per-experiment stage progress, e.g. for a CLI line; `detail`: a trained detector's epoch, loss and images/s. */
  onStage?: (experiment: Experiment, stage: string, done: number, total: number, detail?: string) => void;
  /** The checkpoint, scores and maps files of each experiment (`imiad run`); default none. */
  files?: (experiment: Experiment) => ExperimentFiles;
}

/** What a checkpoint saved by `experiment` records about it (continual: after learning task `task`). */
export function checkpointRun(experiment: Experiment, task?: number): CheckpointRun {
  const { config } = experiment;
  return {
    dataset: config.dataset,
    category: config.category,
    setting: config.setting,
    seed: config.seed,
    ...(task !== undefined && experiment.tasks ? { task: { index: task, count: experiment.tasks.length, category: experiment.tasks[task].category } } : {}),
  };
}

/** runExperiment's snake_case metrics as the store's metric names (through the same mapping as `imiad evaluate`). */
export function storeMetrics(m: RunResult['metrics'], loco: boolean): Metrics {
  const overall = {
    image_auroc: m.image_auroc,
    image_ap: m.image_ap,
    f1_max: m.image_f1_max,
    pixel_auroc: m.pixel_auroc ?? Number.NaN,
    pixel_ap: m.pixel_ap ?? Number.NaN,
    aupro: { [PRO_LIMIT]: m.aupro ?? Number.NaN },
    ...(m.pixel_f1_max !== undefined ? { details: { pixel_f1_max: m.pixel_f1_max } } : {}),
  };
  if (!loco) return metricsFromEvaluation(overall);
  return metricsFromLocoEvaluation(
    {
      localization: m.spro ?? { logical_anomalies: {}, structural_anomalies: {}, mean: {} },
      classification: {
        logical_anomalies: m.image_auroc_logical ?? Number.NaN,
        structural_anomalies: m.image_auroc_structural ?? Number.NaN,
        mean: ((m.image_auroc_logical ?? Number.NaN) + (m.image_auroc_structural ?? Number.NaN)) / 2,
      },
    },
    overall,
  );
}

export function storeEfficiency(e: RunResult['efficiency']): Efficiency {
  const loaded = e.load_seconds !== undefined;
  return {
    inferenceMsPerImage: e.backbone_ms_per_image.p50 + e.method_ms_per_image.p50,
    backboneMsPerImage: e.backbone_ms_per_image.p50,
    methodMsPerImage: e.method_ms_per_image.p50,
    backboneMsPerImageP95: e.backbone_ms_per_image.p95,
    methodMsPerImageP95: e.method_ms_per_image.p95,
    // A loaded detector was not fitted: no fit time (its load time apart).
    ...(loaded ? { loadMs: e.load_seconds! * 1000 } : { fitMs: e.fit_seconds * 1000 }),
    ...(e.train_seconds !== undefined ? { trainMs: e.train_seconds * 1000 } : {}),
    ...(e.train_images_per_second !== undefined ? { trainImagesPerSecond: e.train_images_per_second } : {}),
    memoryBytes: e.state_bytes,
    peakRssBytes: e.peak_rss_bytes,
    device: 'cpu',
  };
}

/** The executor `imiad grid`, `imiad run --store` and `imiad demo` use. */
export function createExecutor(opts: ExecutorOptions = {}): ExperimentExecutor {
  // Categories are loaded once per (dataset, root, name): a grid runs many experiments on each.
  const loaded = new Map<string, Promise<Category>>();
  const category = (experiment: Experiment, name: string): Promise<Category> => {
    const id = JSON.stringify([experiment.config.dataset, experiment.root, name]);
    let p = loaded.get(id);
    if (!p) {
      const load: CategoryLoader = opts.loadCategories ?? ((dataset, root, o) => loadDataset(dataset, root, o));
      p = load(experiment.config.dataset, experiment.root, { categories: [name] }).then((c) => c[0]);
      p.catch(() => loaded.delete(id));
      loaded.set(id, p);
    }
    return p;
  };
  const storeDir = (experiment: Experiment): string => path.dirname(path.dirname(experiment.heatmapDir));
  const augmentDir = (experiment: Experiment): string => opts.augmentDir ?? path.join(storeDir(experiment), 'augmented');

  const single = async (experiment: Experiment, split: CategorySplit, signal: AbortSignal): Promise<ExperimentResult> => {
    const { config } = experiment;
    const files = opts.files?.(experiment) ?? {};
    const detector = createDetector(config.method, { seed: config.seed, ...config.params });
    try {
      const test = testSamples(split);
      const wanted = opts.heatmaps === false || !findMethod(config.method)?.hasMaps ? [] : selectHeatmapSamples(test);
      const kept = new Map<Sample, AnomalyMap>();
      const r = await runExperiment({
        dataset: config.dataset,
        root: experiment.root,
        category: await category(experiment, split.category),
        method: config.method,
        params: config.params,
        detector,
        seed: config.seed,
        trainSamples: await trainingSamples(split, augmentDir(experiment)),
        testSamples: test,
        ...(split.meta ? { metaTrain: split.meta.map((m) => ({ category: m.category, samples: m.samples.map((x) => x.sample) })) } : {}),
        signal,
        loadCheckpoint: files.load,
        saveCheckpoint: files.save,
        saveRun: checkpointRun(experiment),
        mapsDir: files.maps,
        scoresCsv: files.scores,
        onProgress: (stage, done, total, detail) => opts.onStage?.(experiment, stage, done, total, detail),
        onPrediction: (_i, sample, _score, map) => {
          if (map && wanted.includes(sample)) kept.set(sample, map);
        },
      });
      const notes: string[] = [];
      if (config.setting.name === 'supervised' && !detector.usesLabelledAnomalies) notes.push(NOTE_IGNORES_LABELLED_ANOMALIES);
      if (split.info.capped) notes.push(...(split.info.notes ?? []));
      const items = wanted.filter((s) => kept.has(s)).map((sample) => ({ sample, map: kept.get(sample)! }));
      const heatmaps = items.length ? await saveHeatmaps(experiment.heatmapDir, storeDir(experiment), items) : [];
      const intervals = r.intervals?.image_auroc ? { intervals: { imageAUROC: r.intervals.image_auroc } } : {};
      return { metrics: storeMetrics(r.metrics, config.dataset === 'loco'), ...intervals, efficiency: storeEfficiency(r.efficiency), heatmaps, notes };
    } finally {
      await detector.dispose?.();
    }
  };

  const continual = async (experiment: Experiment, tasks: CategorySplit[], signal: AbortSignal): Promise<ExperimentResult> => {
    const { config } = experiment;
    const entry = findMethod(config.method);
    const joint = config.setting.name === 'continual' && config.setting.joint;
    const mode: ContinualMode = entry?.continual ?? 'sequential';
    const params = { seed: config.seed, ...config.params, ...(joint ? {} : (entry?.continualParams ?? {})) };
    const detector: Detector = createDetector(config.method, params);
    const loco = config.dataset === 'loco';
    const files = opts.files?.(experiment) ?? {};
    let loadMs = 0;
    const file = continualCheckpointFile(storeDir(experiment), experiment.key);
    const names = tasks.map((t) => t.category);
    const progress: ContinualProgress = { key: experiment.key, tasks: names, rows: [], fitMs: 0, inference: [], stateBytes: 0, peakRssBytes: 0, detector: null };
    try {
      // A run killed between tasks left its progress: the detector after the last finished task and the rows so far.
      const resumed = await readContinualProgress(file, experiment.key);
      if (resumed && resumed.tasks.join('\0') === names.join('\0') && resumed.rows.length < tasks.length) {
        if (resumed.detector) {
          if (!detector.loadState) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `${config.method} cannot load checkpoints, so its continual run cannot resume`);
          await detector.loadState(resumed.detector.state);
        }
        Object.assign(progress, resumed, { detector: null });
      }
      const seen: Sample[] = [];
      for (let l = 0; l < tasks.length; l++) {
        const train = await trainingSamples(tasks[l], augmentDir(experiment));
        seen.push(...train);
        if (l < progress.rows.length) continue;
        const stage = (j: number, what: string): string => `task ${l + 1}/${tasks.length} ${tasks[j].category} ${what}`;
        // Sequential (trained), accumulate and statistics: one call per task on that task's images only, continuing
        // the detector's state. Joint: a fresh fit on the union of the tasks so far. With --load, the detector after
        // task l comes from its own checkpoint instead (read by the first runExperiment call below).
        if (!files.load) {
          const t0 = process.hrtime.bigint();
          // Held-out normals of the dataset's validation split (GCAD's map statistics): this task's, joint: every task's so far.
          const validationOf = async (j: number): Promise<Sample[]> =>
            (await category(experiment, tasks[j].category)).samples.filter((s) => s.split === 'validation' && s.label === 'normal');
          const validation = joint ? (await Promise.all(tasks.slice(0, l + 1).map((_, j) => validationOf(j)))).flat() : await validationOf(l);
          await detector.fit(joint ? seen.slice() : train, {
            continueTraining: !joint,
            validation,
            signal,
            onProgress: (done, total, detail) => opts.onStage?.(experiment, stage(l, 'fit'), done, total, detail),
          });
          progress.fitMs += Number(process.hrtime.bigint() - t0) / 1e6;
        }
        const row: Metrics[] = [];
        for (let j = l; j >= 0; j--) {
          // The task just learnt first: its call loads or saves the detector after task l; every call predicts.
          const r = await runExperiment({
            dataset: config.dataset,
            root: experiment.root,
            category: await category(experiment, tasks[j].category),
            method: config.method,
            detector,
            fit: false,
            // The stored continual result is the matrix; no per-task interval is kept.
            bootstrap: false,
            trainSamples: train,
            testSamples: testSamples(tasks[j]),
            seed: config.seed,
            signal,
            ...(files.load && j === l ? { loadCheckpoint: taskCheckpoint(files.load, l) } : {}),
            ...(files.save && j === l ? { saveCheckpoint: taskCheckpoint(files.save, l), saveRun: checkpointRun(experiment, l), params: config.params } : {}),
            ...(files.scores ? { scoresCsv: taskScores(files.scores, l, tasks[j].category) } : {}),
            ...(files.maps ? { mapsDir: taskMaps(files.maps, l) } : {}),
            onProgress: (s, done, total, detail) => opts.onStage?.(experiment, stage(j, s), done, total, detail),
          });
          if (j === l) loadMs += (r.efficiency.load_seconds ?? 0) * 1000;
          progress.inference.push(storeEfficiency(r.efficiency));
          progress.stateBytes = r.efficiency.state_bytes;
          progress.peakRssBytes = r.efficiency.peak_rss_bytes;
          row[j] = storeMetrics(r.metrics, loco);
        }
        progress.rows.push(row);
        if (l < tasks.length - 1) {
          const state = !joint && detector.saveState ? detector.saveState() : null;
          await writeContinualProgress(file, { ...progress, detector: state ? { method: config.method, params, state } : null });
        }
      }
    } finally {
      await detector.dispose?.();
    }
    const { rows, inference } = progress;
    const metricNames = [...new Set(rows.flatMap((row) => row.flatMap((m) => Object.keys(m ?? {}))))].sort();
    const matrix: { [metric: string]: (number | null)[][] } = {};
    for (const name of metricNames) matrix[name] = rows.map((row) => tasks.map((_t, j) => row[j]?.[name] ?? null));
    const mean = (f: (e: Efficiency) => number | undefined): number => inference.reduce((a, e) => a + (f(e) ?? 0), 0) / inference.length;
    const result: ExperimentResult = {
      // The runner fills the final averages (and FM) from the matrix.
      metrics: {},
      efficiency: {
        inferenceMsPerImage: mean((e) => e.inferenceMsPerImage),
        backboneMsPerImage: mean((e) => e.backboneMsPerImage),
        methodMsPerImage: mean((e) => e.methodMsPerImage),
        ...(files.load ? { loadMs } : { fitMs: progress.fitMs }),
        memoryBytes: progress.stateBytes,
        peakRssBytes: progress.peakRssBytes,
        device: 'cpu',
      },
      continual: { tasks: names, matrix },
      notes: [joint ? NOTE_CONTINUAL_JOINT : CONTINUAL_MODE_NOTES[mode]],
    };
    // The grid stores the row right after this returns; a crash in between only makes the experiment run again.
    await fs.promises.rm(file, { force: true });
    return result;
  };

  return async (experiment, { signal }) => {
    if (experiment.tasks) return continual(experiment, experiment.tasks, signal);
    if (!experiment.split) throw new TypeError(`Experiment ${experiment.key} has neither a split nor continual tasks`);
    return single(experiment, experiment.split, signal);
  };
}
