/**
 * The experiment grid: expands a GridConfig over loaded categories into experiments (each with its split and
 * manifest), skips those whose key is already stored, and runs the rest with bounded concurrency through an
 * ExperimentExecutor, writing each finished experiment as one row. Aborting (Ctrl-C) starts nothing new, passes the
 * signal to the running experiments, records those that still finish, and returns.
 */
import type { Category, DatasetName } from '../datasets/types';
import { findMethod, settingRefusal } from '../methods/registry';
import { forgettingMeasureWithGaps } from '../metrics/forgetting';
import { categorySplit, continualTasks, finalAverage, manifestOf, settingLabel } from '../settings';
import { version as codeVersion } from '../version';
import { methodVariants, type GridConfig } from './config';
import { experimentKey } from './key';
import { machineDescription, type ResultsStore } from './store';
import type { Experiment, ExperimentConfig, ExperimentExecutor, ExperimentResult, MachineDescription, ResultRow } from './types';

export type CategoryLoader = (name: DatasetName, root: string, opts: { categories?: string[] }) => Promise<Category[]>;

/** An experiment that could not be formed (its split is impossible for the category), with the reason. */
export interface InvalidExperiment {
  config: ExperimentConfig;
  reason: string;
}

export function describeExperiment(config: ExperimentConfig): string {
  const params = Object.keys(config.params).length ? ` ${JSON.stringify(config.params)}` : '';
  return `${config.dataset}/${config.category} ${config.method}${params} ${settingLabel(config.setting)} seed ${config.seed}`;
}

/** Every experiment of the grid, in the order dataset, setting, method (and parameters), category, seed. */
export async function expandGrid(
  config: GridConfig,
  loadCategories: CategoryLoader,
  heatmapDir: (key: string) => string,
  version: string = codeVersion,
): Promise<{ experiments: Experiment[]; invalid: InvalidExperiment[] }> {
  const experiments: Experiment[] = [];
  const invalid: InvalidExperiment[] = [];
  for (const dataset of config.datasets) {
    const categories = await loadCategories(dataset.name, dataset.root, dataset.categories ? { categories: dataset.categories } : {});
    // A meta-training detector (RegAD) trains on every other category of the dataset, not only the selected ones.
    let everyCategory: Promise<Category[]> | null = null;
    const metaFrom = (): Promise<Category[]> => {
      everyCategory ??= dataset.categories ? loadCategories(dataset.name, dataset.root, {}) : Promise.resolve(categories);
      return everyCategory;
    };
    for (const setting of config.settings) {
      for (const method of config.methods) {
        for (const params of methodVariants(method)) {
          const units = setting.name === 'continual' ? [null] : categories;
          for (const category of units) {
            for (const seed of config.seeds) {
              const cfg: ExperimentConfig = {
                dataset: dataset.name,
                category: category ? category.name : ((setting.name === 'continual' ? setting.order : null) ?? categories.map((c) => c.name)).join('+'),
                method: method.name,
                params,
                setting,
                seed,
              };
              try {
                const entry = findMethod(method.name);
                const refusal = entry ? settingRefusal(entry, setting.name) : null;
                if (refusal) throw new Error(refusal);
                const key = experimentKey(cfg, version);
                const base = { key, config: cfg, root: dataset.root, heatmapDir: heatmapDir(key) };
                const metaTraining = entry?.metaTraining === true;
                if (metaTraining && setting.name === 'continual') {
                  throw new Error(`${method.name} is a few-shot detector that meta-trains on the other categories: use --setting fewshot --shots K`);
                }
                if (category) {
                  const split = categorySplit(setting, category, seed, metaTraining ? { metaFrom: await metaFrom() } : {});
                  experiments.push({ ...base, split, manifest: manifestOf([split]) });
                } else {
                  const tasks = continualTasks(categories, { seed, order: setting.name === 'continual' ? setting.order : null });
                  experiments.push({ ...base, tasks, manifest: tasks.map((t) => manifestOf([t])) });
                }
              } catch (err) {
                invalid.push({ config: cfg, reason: (err as Error).message });
              }
            }
          }
        }
      }
    }
  }
  return { experiments, invalid };
}

/** The stored row of a finished experiment; continual results get their final averages and forgetting measures. */
export function resultRow(
  experiment: Experiment,
  result: ExperimentResult,
  startedAt: Date,
  finishedAt: Date,
  machine: MachineDescription,
  version: string = codeVersion,
): ResultRow {
  let metrics = { ...result.metrics };
  let continual: ResultRow['continual'] = null;
  if (result.continual) {
    const forgetting: { [metric: string]: number | null } = {};
    for (const [name, matrix] of Object.entries(result.continual.matrix)) {
      forgetting[name] = forgettingMeasureWithGaps(matrix).mean;
      if (!(name in metrics)) metrics[name] = finalAverage(matrix);
    }
    continual = { ...result.continual, forgetting };
    metrics = Object.fromEntries(Object.entries(metrics).sort(([a], [b]) => (a < b ? -1 : 1)));
  }
  return {
    key: experiment.key,
    codeVersion: version,
    config: experiment.config,
    metrics,
    intervals: result.intervals ?? null,
    efficiency: result.efficiency,
    manifest: experiment.manifest,
    continual,
    heatmaps: result.heatmaps ?? [],
    notes: result.notes ?? [],
    machine,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
  };
}

export interface GridEvents {
  /** Called when the counts change: finished (this run), running, total to run. */
  onUpdate?: (state: { done: number; running: number; failed: number; total: number }) => void;
  onFinished?: (experiment: Experiment, row: ResultRow) => void;
  onFailed?: (experiment: Experiment, error: Error) => void;
}

export interface GridSummary {
  /** Experiments already in the store before this run. */
  skipped: number;
  /** Experiments run and stored now. */
  done: number;
  failed: { key: string; experiment: string; error: string }[];
  /** Experiments not started (or abandoned) because the run was aborted. */
  notRun: number;
  aborted: boolean;
}

export async function runGrid(
  experiments: Experiment[],
  store: ResultsStore,
  executor: ExperimentExecutor,
  opts: { concurrency?: number; signal?: AbortSignal; machine?: MachineDescription; version?: string } & GridEvents = {},
): Promise<GridSummary> {
  const concurrency = opts.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`Expected a positive integer for concurrency but received ${concurrency} of type ${typeof concurrency}`);
  const machine = opts.machine ?? machineDescription();
  const stored = store.keys();
  const seen = new Set<string>();
  const todo: Experiment[] = [];
  let skipped = 0;
  for (const e of experiments) {
    if (stored.has(e.key)) skipped++;
    else if (!seen.has(e.key)) todo.push(e);
    seen.add(e.key);
  }
  const controller = new AbortController();
  const abort = (): void => controller.abort(opts.signal?.reason);
  if (opts.signal?.aborted) abort();
  else opts.signal?.addEventListener('abort', abort, { once: true });

  const summary: GridSummary = { skipped, done: 0, failed: [], notRun: 0, aborted: false };
  let next = 0;
  let running = 0;
  const update = (): void => opts.onUpdate?.({ done: summary.done, running, failed: summary.failed.length, total: todo.length });
  update();

  const worker = async (): Promise<void> => {
    while (next < todo.length && !controller.signal.aborted) {
      const experiment = todo[next++];
      running++;
      update();
      const startedAt = new Date();
      try {
        const result = await executor(experiment, { signal: controller.signal });
        const row = resultRow(experiment, result, startedAt, new Date(), machine, opts.version);
        // A finished result is recorded even when an abort arrived meanwhile: the work is done and valid.
        store.insert(row);
        summary.done++;
        opts.onFinished?.(experiment, row);
      } catch (err) {
        if (controller.signal.aborted) {
          summary.notRun++;
        } else {
          const error = err instanceof Error ? err : new Error(String(err));
          summary.failed.push({ key: experiment.key, experiment: describeExperiment(experiment.config), error: error.message });
          opts.onFailed?.(experiment, error);
        }
      } finally {
        running--;
        update();
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, todo.length)) }, worker));
  } finally {
    opts.signal?.removeEventListener('abort', abort);
  }
  summary.aborted = controller.signal.aborted;
  summary.notRun += todo.length - next;
  return summary;
}
