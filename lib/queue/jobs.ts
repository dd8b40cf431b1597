/**
 * What travels through the queue, and the checks at both ends. A job carries only the experiment's identity
 * (key, code version, configuration, dataset root); the worker rebuilds the split itself from the dataset on its
 * disk and checks that the rebuilt experiment has the job's key, so a job cannot name files to train on, folders
 * to write to, or anything to execute. The worker returns the experiment's result with the heatmap PNGs inlined
 * (the coordinator writes them next to its store, the single writer), and the coordinator checks that result
 * before it writes anything.
 */
import * as path from 'path';

import { expectedMessage, imiadError, type ImiadError } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { DATASET_NAMES } from '../datasets/types';
import { METHOD_NAMES } from '../methods';
import { canonicalJson } from '../runner/key';
import type { Experiment, ExperimentConfig, ExperimentResult, HeatmapRecord, JsonValue, MachineDescription } from '../runner/types';
import { settingSpec } from '../settings';
import { SETTING_NAMES, type SettingSpec } from '../settings/types';

/** The payload of one job; the job's id is `key`. */
export interface ExperimentJob {
  key: string;
  /** The coordinator's imiad version: part of the key, so a worker on another version must not run the job. */
  codeVersion: string;
  config: ExperimentConfig;
  /** The dataset folder, as the grid file gives it (absolute); workers see the same path (shared or copied). */
  root: string;
}

/** What a worker returns for a finished job. */
export interface JobOutcome {
  result: ExperimentResult;
  machine: MachineDescription;
  worker: string;
  startedAt: string;
  finishedAt: string;
  /** The heatmap PNGs of result.heatmaps, base64, by file name (`0-image.png`, ...). */
  heatmapFiles: { [file: string]: string };
}

/** The BullMQ job name of every experiment. */
export const JOB_NAME = 'experiment';
const KEY = /^[0-9a-f]{64}$/;
/** Heatmap files a result may carry: heatmaps.ts writes `<index>-image|mask|overlay.png`. */
const HEATMAP_FILE = /^\d{1,3}-(image|mask|overlay)\.png$/;
/** Per-file and per-result bounds on inlined PNGs (HEATMAP_SIZE 128 px PNGs are ~10-50 kB). */
const MAX_HEATMAP_FILE_BYTES = 4 << 20;
const MAX_HEATMAP_FILES = 64;

export function jobOf(experiment: Experiment, codeVersion: string): ExperimentJob {
  return { key: experiment.key, codeVersion, config: experiment.config, root: experiment.root };
}

function jobError(message: string): ImiadError {
  return imiadError('TypeError', 'ERR_IMIAD_JOB', message);
}

function expect(ok: boolean, expected: string, name: string, actual: unknown): void {
  if (!ok) throw jobError(expectedMessage(expected, name, actual));
}

function exactKeys(value: Record<string, unknown>, keys: string[], name: string): void {
  for (const k of Object.keys(value)) if (!keys.includes(k)) throw jobError(`Unexpected field '${k}' in ${name} (expected ${keys.join(', ')})`);
}

/** True for plain JSON: finite numbers, strings, booleans, null, arrays and objects of them, at most `depth` deep. */
function isJson(value: unknown, depth = 8): value is JsonValue {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (depth === 0) return false;
  if (Array.isArray(value)) return value.every((v) => isJson(v, depth - 1));
  if (is.object(value) && Object.getPrototypeOf(value) === Object.prototype) return Object.values(value).every((v) => isJson(v, depth - 1));
  return false;
}

/** A category name as a folder name: no separators, no '.' or '..', no NUL (it is joined to the dataset root). */
function isFolderName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !/[/\\\0]/.test(name) && name.length <= 255;
}

/**
 * Checks a job's payload field by field; returns it typed, or throws ERR_IMIAD_JOB naming the first bad field in
 * the project's message format. `codeVersion` is the worker's own version.
 */
export function validateJob(data: unknown, codeVersion: string): ExperimentJob {
  expect(is.object(data), 'an object', 'job', data);
  const job = data as Record<string, unknown>;
  exactKeys(job, ['key', 'codeVersion', 'config', 'root'], 'job');
  expect(typeof job.key === 'string' && KEY.test(job.key), 'a 64-digit hex experiment key', 'job.key', job.key);
  expect(typeof job.codeVersion === 'string', 'a version string', 'job.codeVersion', job.codeVersion);
  if (job.codeVersion !== codeVersion) {
    throw jobError(`The job was queued by imiad ${String(job.codeVersion)} but this worker runs imiad ${codeVersion} (the version is part of the experiment key): run workers of the coordinator's version`);
  }
  expect(typeof job.root === 'string' && path.isAbsolute(job.root) && !job.root.includes('\0'), 'an absolute dataset folder', 'job.root', job.root);
  expect(is.object(job.config), 'an object', 'job.config', job.config);
  const config = job.config as Record<string, unknown>;
  exactKeys(config, ['dataset', 'category', 'method', 'params', 'setting', 'seed'], 'job.config');
  expect(typeof config.dataset === 'string' && DATASET_NAMES.includes(config.dataset as never), `one of ${DATASET_NAMES.join(', ')}`, 'job.config.dataset', config.dataset);
  expect(typeof config.method === 'string' && METHOD_NAMES.includes(config.method as never), `one of ${METHOD_NAMES.join(', ')}`, 'job.config.method', config.method);
  expect(is.object(config.params) && isJson(config.params), 'an object of JSON values', 'job.config.params', config.params);
  expect(Number.isSafeInteger(config.seed) && (config.seed as number) >= 0, 'a non-negative integer', 'job.config.seed', config.seed);
  expect(is.object(config.setting) && SETTING_NAMES.includes((config.setting as { name?: never }).name as never), `a setting (${SETTING_NAMES.join(', ')})`, 'job.config.setting', config.setting);
  const setting = config.setting as unknown as SettingSpec;
  // The setting in its normal form (as the grid writes it): every option valid, none unknown, none missing.
  const normal = settingSpec(setting.name, setting as never);
  if (canonicalJson(normal) !== canonicalJson(setting)) throw jobError(`Expected the normal form ${canonicalJson(normal)} for job.config.setting but received ${canonicalJson(setting)}`);
  const category = config.category;
  const names = typeof category === 'string' ? (setting.name === 'continual' ? category.split('+') : [category]) : [];
  expect(typeof category === 'string' && names.every(isFolderName), 'a category name (no path separators)', 'job.config.category', category);
  return job as unknown as ExperimentJob;
}

function outcomeError(message: string): ImiadError {
  return imiadError('TypeError', 'ERR_IMIAD_QUEUE_RESULT', `Malformed result from the worker: ${message}`);
}

function check(ok: boolean, expected: string, name: string, actual: unknown): void {
  if (!ok) throw outcomeError(expectedMessage(expected, name, actual));
}

const numberOrNull = (v: unknown): boolean => v === null || typeof v === 'number';
const optionalNumber = (v: unknown): boolean => v === undefined || numberOrNull(v);

/**
 * Checks a worker's result for the job `key` before the coordinator stores it: metric and efficiency values are
 * numbers (null where JSON turned NaN), heatmap records point into heatmaps/<key>/ and every inlined file is one of
 * them, small and named as heatmaps.ts names its files.
 */
export function validateOutcome(value: unknown, key: string): JobOutcome {
  check(is.object(value), 'an object', 'result', value);
  const o = value as Record<string, unknown>;
  check(typeof o.worker === 'string', 'a worker name', 'result.worker', o.worker);
  for (const t of ['startedAt', 'finishedAt'] as const) check(typeof o[t] === 'string' && !Number.isNaN(Date.parse(o[t] as string)), 'an ISO date', `result.${t}`, o[t]);
  const machine = o.machine as Partial<MachineDescription> | undefined;
  check(is.object(machine) && typeof machine.hostname === 'string' && typeof machine.cores === 'number', 'a machine description', 'result.machine', machine);
  check(is.object(o.result), 'an object', 'result.result', o.result);
  const r = o.result as Record<string, unknown>;
  check(is.object(r.metrics) && Object.values(r.metrics).every(numberOrNull), 'an object of numbers', 'result.metrics', r.metrics);
  const e = r.efficiency as Record<string, unknown>;
  check(is.object(e) && numberOrNull(e.inferenceMsPerImage) && numberOrNull(e.memoryBytes), 'an efficiency object', 'result.efficiency', r.efficiency);
  for (const f of ['backboneMsPerImage', 'methodMsPerImage', 'fitMs', 'peakRssBytes']) check(optionalNumber(e[f]), 'a number', `result.efficiency.${f}`, e[f]);
  check(r.notes === undefined || (Array.isArray(r.notes) && r.notes.every(is.string)), 'a list of strings', 'result.notes', r.notes);
  if (r.continual !== undefined) {
    const c = r.continual as Record<string, unknown>;
    const matrix = (m: unknown): boolean => Array.isArray(m) && m.every((row) => Array.isArray(row) && row.every(numberOrNull));
    check(is.object(c) && Array.isArray(c.tasks) && c.tasks.every(is.string) && is.object(c.matrix) && Object.values(c.matrix).every(matrix), 'a continual result', 'result.continual', c);
  }
  const files = o.heatmapFiles;
  check(is.object(files) && Object.keys(files).length <= MAX_HEATMAP_FILES, 'an object of files', 'result.heatmapFiles', files);
  for (const [name, data] of Object.entries(files as Record<string, unknown>)) {
    check(HEATMAP_FILE.test(name), 'a heatmap file name', 'result.heatmapFiles', name);
    check(typeof data === 'string' && data.length <= (MAX_HEATMAP_FILE_BYTES * 4) / 3 + 4 && /^[A-Za-z0-9+/]*={0,2}$/.test(data), 'base64 PNG data', `result.heatmapFiles.${name}`, typeof data);
  }
  const heatmaps = r.heatmaps ?? [];
  check(Array.isArray(heatmaps), 'a list', 'result.heatmaps', heatmaps);
  const dir = `heatmaps/${key}/`;
  const inDir = (p: unknown): boolean => typeof p === 'string' && p.startsWith(dir) && (files as Record<string, unknown>)[p.slice(dir.length)] !== undefined;
  for (const h of heatmaps as HeatmapRecord[]) {
    check(is.object(h) && typeof h.sample === 'string' && typeof h.defectType === 'string', 'a heatmap record', 'result.heatmaps[]', h);
    for (const f of ['image', 'overlay', 'mask'] as const) {
      if (f === 'mask' && h.mask === null) continue;
      check(inDir(h[f]), `a file under ${dir} sent with the result`, `result.heatmaps[].${f}`, h[f]);
    }
  }
  return value as JobOutcome;
}
