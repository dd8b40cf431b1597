/**
 * The five IM-IAD settings behind one entry point: a canonical SettingSpec (defaults filled in, so that it can be
 * part of an experiment key) and the splits it makes of loaded categories.
 */
import { invalidRange, invalidType } from '../../bindings/errors';
import type { Category } from '../datasets/types';
import { manifestOf, requireSeed } from './common';
import { continualTasks } from './continual';
import { DEFAULT_AUGMENT_COUNT, fewshotSplit, requireAugment } from './fewshot';
import { noisySplit } from './noisy';
import { DEFAULT_SUPERVISED_ANOMALIES, supervisedSplit } from './supervised';
import { SETTING_NAMES, type CategorySplit, type SettingManifest, type SettingName, type SettingSpec } from './types';
import { vanillaSplit } from './vanilla';

export * from './types';
export { vanillaSplit } from './vanilla';
export { supervisedSplit, DEFAULT_SUPERVISED_ANOMALIES } from './supervised';
export { fewshotSplit, metaTrainingSplit, DEFAULT_AUGMENT_COUNT } from './fewshot';
export { noisySplit, noiseCount } from './noisy';
export { continualTasks, forgettingMeasure, finalAverage, type ForgettingMeasure } from './continual';
export { manifestOf } from './common';

/** Loose options as they come from the command line or a grid file. */
export interface SettingOptions {
  anomalies?: number;
  shots?: number;
  augment?: string | null;
  augmentCount?: number;
  noise?: number;
  order?: string[] | null;
  /** continual: joint training on the union of the tasks so far (default false: sequential). */
  joint?: boolean;
}

export function requireSettingName(name: unknown): SettingName {
  if (typeof name !== 'string' || !(SETTING_NAMES as readonly string[]).includes(name)) {
    throw invalidRange(`one of ${SETTING_NAMES.join(', ')}`, 'setting', name);
  }
  return name as SettingName;
}

/** The canonical spec of a setting: its own options only, defaults filled in. */
export function settingSpec(name: string, opts: SettingOptions = {}): SettingSpec {
  switch (requireSettingName(name)) {
    case 'vanilla':
      return { name: 'vanilla' };
    case 'supervised': {
      const anomalies = opts.anomalies ?? DEFAULT_SUPERVISED_ANOMALIES;
      if (!Number.isInteger(anomalies) || anomalies < 1) throw invalidRange('a positive integer', 'anomalies', anomalies);
      return { name: 'supervised', anomalies };
    }
    case 'fewshot': {
      const shots = opts.shots;
      if (typeof shots !== 'number' || !Number.isInteger(shots) || shots < 1) throw invalidRange('a positive integer', 'shots', shots);
      const augment = requireAugment(opts.augment);
      const augmentCount = augment === null ? 0 : (opts.augmentCount ?? DEFAULT_AUGMENT_COUNT);
      if (!Number.isInteger(augmentCount) || (augment !== null && augmentCount < 1)) throw invalidRange('a positive integer', 'augmentCount', augmentCount);
      return { name: 'fewshot', shots, augment, augmentCount };
    }
    case 'noisy': {
      const noise = opts.noise;
      if (typeof noise !== 'number' || !Number.isFinite(noise) || noise <= 0 || noise >= 1) throw invalidRange('a number in (0, 1)', 'noise', noise);
      return { name: 'noisy', noise };
    }
    case 'continual': {
      const joint = opts.joint ?? false;
      if (typeof joint !== 'boolean') throw invalidType('boolean', 'joint', joint);
      return { name: 'continual', order: opts.order ?? null, joint };
    }
  }
}

/** A short label of a spec for tables and logs: 'fewshot-8-rotation4', 'noisy-0.15'. */
export function settingLabel(spec: SettingSpec): string {
  switch (spec.name) {
    case 'vanilla':
      return spec.name;
    case 'continual':
      return spec.joint ? 'continual-joint' : 'continual';
    case 'supervised':
      return `supervised-${spec.anomalies}`;
    case 'fewshot':
      return spec.augment ? `fewshot-${spec.shots}-${spec.augment}${spec.augmentCount}` : `fewshot-${spec.shots}`;
    case 'noisy':
      return `noisy-${spec.noise}`;
  }
}

/**
 * Splits of one category under a non-continual setting. `metaFrom` (few-shot only): the dataset's categories, for a
 * meta-training detector (RegAD; fewshotSplit).
 */
export function categorySplit(spec: SettingSpec, category: Category, seed: number, opts: { metaFrom?: Category[] } = {}): CategorySplit {
  requireSeed(seed);
  if (opts.metaFrom && spec.name !== 'fewshot') {
    throw invalidRange("'fewshot' (a meta-training detector such as RegAD is a few-shot detector: --setting fewshot --shots K)", 'setting', spec.name);
  }
  switch (spec.name) {
    case 'vanilla':
      return vanillaSplit(category, { seed });
    case 'supervised':
      return supervisedSplit(category, { seed, anomalies: spec.anomalies });
    case 'fewshot':
      return fewshotSplit(category, { seed, shots: spec.shots, augment: spec.augment, augmentCount: spec.augmentCount, metaFrom: opts.metaFrom });
    case 'noisy':
      return noisySplit(category, { seed, noise: spec.noise });
    case 'continual':
      throw invalidRange('a per-category setting (continual splits all categories at once: continualTasks)', 'setting', spec.name);
  }
}

/**
 * The manifest of a setting over loaded categories: one object keyed by category, or for continual an array of
 * one-category objects, one per task in learning order.
 */
export function buildManifest(spec: SettingSpec, categories: Category[], seed: number): SettingManifest | SettingManifest[] {
  if (spec.name === 'continual') return continualTasks(categories, { seed, order: spec.order }).map((t) => manifestOf([t]));
  return manifestOf(categories.map((c) => categorySplit(spec, c, seed)));
}
