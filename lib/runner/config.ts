/**
 * The grid file (JSON or YAML): datasets x categories x methods x settings x parameters x seeds. A list of values
 * under a method's `grid` or a setting's option is swept (every combination); `params` are fixed. Example in
 * README.md, "Results store and grid".
 */
import * as fs from 'fs';
import * as path from 'path';

import YAML from 'yaml';

import { imiadError } from '../../bindings/errors';
import { DATASET_NAMES, type DatasetName } from '../datasets/types';
import { findMethod, methodNames } from '../methods/registry';
import { requireSettingName, settingSpec, type SettingOptions } from '../settings';
import type { SettingSpec } from '../settings/types';
import { DEFAULT_STORE } from './store';
import type { JsonValue } from './types';

export interface GridDataset {
  name: DatasetName;
  root: string;
  /** Default: every category of the dataset. */
  categories?: string[];
}

export interface GridMethod {
  name: string;
  params: { [key: string]: JsonValue };
  grid: { [key: string]: JsonValue[] };
}

export interface GridConfig {
  store: string;
  concurrency: number;
  datasets: GridDataset[];
  methods: GridMethod[];
  settings: SettingSpec[];
  seeds: number[];
}

function configError(file: string, message: string): Error {
  return imiadError('Error', 'ERR_IMIAD_ARGUMENT', `Grid file ${file}: ${message}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Every combination of the listed values, keys in the given order. */
export function product<T>(options: { [key: string]: T[] }): { [key: string]: T }[] {
  let out: { [key: string]: T }[] = [{}];
  for (const [k, values] of Object.entries(options)) {
    const next: { [key: string]: T }[] = [];
    for (const partial of out) for (const v of values) next.push({ ...partial, [k]: v });
    out = next;
  }
  return out;
}

function expandSetting(file: string, entry: unknown, index: number): SettingSpec[] {
  if (typeof entry === 'string') return [settingSpec(requireSettingName(entry))];
  if (!isObject(entry) || typeof entry.name !== 'string') throw configError(file, `settings[${index}] must be a setting name or an object with a name`);
  const name = requireSettingName(entry.name);
  const sweeps: { [key: string]: unknown[] } = {};
  for (const [k, v] of Object.entries(entry)) {
    if (k === 'name') continue;
    if (!['anomalies', 'shots', 'augment', 'augmentCount', 'noise', 'order', 'joint'].includes(k)) throw configError(file, `settings[${index}] has an unknown option '${k}'`);
    // `order` is itself a list (the continual task order): never swept.
    sweeps[k] = k !== 'order' && Array.isArray(v) ? v : [v];
  }
  return product(sweeps).map((opts) => settingSpec(name, opts as SettingOptions));
}

export function parseGridConfig(text: string, file: string): GridConfig {
  let raw: unknown;
  try {
    raw = /\.ya?ml$/i.test(file) ? YAML.parse(text) : JSON.parse(text);
  } catch (err) {
    throw configError(file, `cannot parse: ${(err as Error).message}`);
  }
  return gridConfig(raw, path.dirname(path.resolve(file)), file);
}

/**
 * A grid from a plain object (the parsed file, or one built in code as `imiad demo` does); relative paths resolve
 * against `base`; `file` names the source in error messages.
 */
export function gridConfig(raw: unknown, base: string = process.cwd(), file = '<inline grid>'): GridConfig {
  if (!isObject(raw)) throw configError(file, 'expected an object with datasets, methods and settings');
  const list = (key: string): unknown[] => {
    const v = raw[key];
    if (!Array.isArray(v) || v.length === 0) throw configError(file, `'${key}' must be a non-empty list`);
    return v;
  };
  const datasets = list('datasets').map((d, i): GridDataset => {
    if (!isObject(d) || typeof d.name !== 'string' || typeof d.root !== 'string') throw configError(file, `datasets[${i}] needs a name and a root`);
    if (!(DATASET_NAMES as readonly string[]).includes(d.name)) throw configError(file, `datasets[${i}]: unknown dataset '${d.name}' (one of ${DATASET_NAMES.join(', ')})`);
    if (d.categories !== undefined && (!Array.isArray(d.categories) || d.categories.some((c) => typeof c !== 'string'))) {
      throw configError(file, `datasets[${i}].categories must be a list of names`);
    }
    return { name: d.name as DatasetName, root: path.resolve(base, d.root), ...(d.categories ? { categories: d.categories as string[] } : {}) };
  });
  const methods = list('methods').map((m, i): GridMethod => {
    if (typeof m === 'string') return { name: m, params: {}, grid: {} };
    if (!isObject(m) || typeof m.name !== 'string') throw configError(file, `methods[${i}] must be a method name or an object with a name`);
    const params = m.params ?? {};
    const grid = m.grid ?? {};
    if (!isObject(params)) throw configError(file, `methods[${i}].params must be an object`);
    if (!isObject(grid) || Object.values(grid).some((v) => !Array.isArray(v))) throw configError(file, `methods[${i}].grid must map parameter names to lists of values`);
    return { name: m.name, params: params as { [key: string]: JsonValue }, grid: grid as { [key: string]: JsonValue[] } };

  });
  const settings = list('settings').flatMap((s, i) => expandSetting(file, s, i));
  const seeds = raw.seeds === undefined ? [0] : raw.seeds;
  if (!Array.isArray(seeds) || seeds.length === 0 || seeds.some((s) => !Number.isInteger(s) || (s as number) < 0)) {
    throw configError(file, "'seeds' must be a non-empty list of non-negative integers");
  }
  const concurrency = raw.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || (concurrency as number) < 1) throw configError(file, "'concurrency' must be a positive integer");
  const store = typeof raw.store === 'string' ? path.resolve(base, raw.store) : path.resolve(DEFAULT_STORE);
  return { store, concurrency: concurrency as number, datasets, methods, settings, seeds: seeds as number[] };
}

export function readGridConfig(file: string): GridConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read grid file ${file}: ${(err as Error).message}`);
  }
  return requireRegisteredMethods(parseGridConfig(text, file), file);
}

/**
 * The grid's methods must be registered detectors (lib/methods/registry.ts). The file readers check it; the grid
 * itself takes any name, since a caller may run it with an executor of its own.
 */
export function requireRegisteredMethods(config: GridConfig, file: string): GridConfig {
  config.methods.forEach((m, i) => {
    if (findMethod(m.name) === undefined) throw configError(file, `methods[${i}] is '${m.name}', expected one of ${methodNames().join(', ')}`);
  });
  return config;
}

/** A method's parameter combinations: `params` merged with each combination of `grid`. */
export function methodVariants(method: GridMethod): { [key: string]: JsonValue }[] {
  return product(method.grid).map((g) => ({ ...method.params, ...g }));
}
