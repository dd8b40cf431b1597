/**
 * The one JSON schema of results (docs/json-schema.md): `imiad run` (with or without --setting), `imiad grid` and
 * `imiad evaluate` all write { schema, command, results: [ResultJson, ...] } (plus a few fields of their own), and
 * every result's `metrics` uses the store's flat names (METRIC_NAMES, from lib/runner/metrics.ts): a number, or
 * null where the metric does not apply. Every name of METRIC_NAMES is present in every result (null where it does
 * not apply); areas at other FPR limits than the reported one follow as `<name>@<limit>`.
 */
import type { SettingSpec } from '../settings/types';
import { METRIC_NAMES, type ContinualResult, type Efficiency, type JsonValue, type Metrics, type ResultRow } from './types';

/** The schema's name and version: bumped when a field changes meaning or disappears. */
export const RESULTS_SCHEMA = 'imiad-results/1';

export type ResultsCommand = 'run' | 'grid' | 'evaluate';

export interface ResultJson {
  /** The experiment key (lib/runner/key.ts); null for `imiad evaluate` (maps made elsewhere). */
  key: string | null;
  dataset: string;
  /** The category; continual: the tasks joined by '+', in learning order. */
  category: string;
  /** The detector; null for `imiad evaluate`. */
  method: string | null;
  /** The detector parameters the experiment set (defaults left out). */
  params: { [key: string]: JsonValue };
  /** The setting with its options (lib/settings); null for `imiad evaluate`. */
  setting: SettingSpec | null;
  seed: number | null;
  metrics: Metrics;
  /** Null for `imiad evaluate`. */
  efficiency: Efficiency | null;
  /** Continual: every metric's matrix T[l][j] (task j after learning task l) and its forgetting measure. */
  continual: (ContinualResult & { forgetting: { [metric: string]: number | null } }) | null;
  notes: string[];
  /** Files this result was read from or written to (checkpoints, scores, maps), when any. */
  files?: { [kind: string]: string | string[] };
}

export interface ResultsJson {
  schema: typeof RESULTS_SCHEMA;
  command: ResultsCommand;
  results: ResultJson[];
  [extra: string]: unknown;
}

/** Every METRIC_NAMES key first (null where absent), in that order, then the others as they come. */
export function schemaMetrics(metrics: Metrics): Metrics {
  const out: Metrics = {};
  for (const name of METRIC_NAMES) out[name] = metrics[name] ?? null;
  for (const [name, v] of Object.entries(metrics)) if (!(name in out)) out[name] = v;
  return out;
}

/** A stored (or just finished) experiment as a result. */
export function resultFromRow(row: ResultRow, files?: ResultJson['files']): ResultJson {
  return {
    key: row.key,
    dataset: row.config.dataset,
    category: row.config.category,
    method: row.config.method,
    params: row.config.params,
    setting: row.config.setting,
    seed: row.config.seed,
    metrics: schemaMetrics(row.metrics),
    efficiency: row.efficiency,
    continual: row.continual,
    notes: row.notes,
    ...(files && Object.keys(files).length ? { files } : {}),
  };
}

/** Metrics computed from maps of unknown origin (`imiad evaluate`). */
export function resultFromMetrics(dataset: string, category: string, metrics: Metrics, files?: ResultJson['files']): ResultJson {
  return { key: null, dataset, category, method: null, params: {}, setting: null, seed: null, metrics: schemaMetrics(metrics), efficiency: null, continual: null, notes: [], ...(files ? { files } : {}) };
}

export function resultsDocument(command: ResultsCommand, results: ResultJson[], extra: Record<string, unknown> = {}): ResultsJson {
  return { schema: RESULTS_SCHEMA, command, ...extra, results };
}

/** JSON text, non-finite numbers written as null (JSON has no NaN). */
export function jsonText(value: unknown): string {
  return `${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`;
}
