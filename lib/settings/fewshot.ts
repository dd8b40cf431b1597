/**
 * Few-shot IAD (paper III-A-3): k normal training images (k in {1, 2, 4, 8} in the paper) chosen by the seed; the
 * test set is the whole test split. The k shots are the manifest's train entries (a meta-training detector's support
 * set, RegAD); its meta-training categories are named in the manifest's info. With `augment`, each shot is followed by `augmentCount` augmented copies; the
 * manifest names the copies (kind and a per-copy seed) and lib/image/augment.ts makes them.
 */
import * as path from 'path';

import { imiadError, invalidRange } from '../../bindings/errors';
import type { Category } from '../datasets/types';
import { asIs, requireCategory, requireNonEmptyTrain, requireSeed, testSamples, trainNormals } from './common';
import { hashString, randomFor, shuffled } from './random';
import { AUGMENT_KINDS, type AugmentKind, type CategorySplit, type SplitSample } from './types';

/** Augmented copies per shot when `augment` is given without a count. */
export const DEFAULT_AUGMENT_COUNT = 4;

export interface FewshotOptions {
  seed?: number;
  shots: number;
  augment?: AugmentKind | null;
  augmentCount?: number;
  /**
   * For a meta-training detector (RegAD): the dataset's categories (this one among them or not). Every OTHER one
   * with normal training images goes into the split as meta-training data (CategorySplit.meta), its name into
   * info.metaCategories; a dataset without another such category is refused (ERR_IMIAD_SETTING).
   */
  metaFrom?: Category[];
}

/** The other categories' normal training images, in the given order (RegAD's meta-training set). */
export function metaTrainingSplit(category: Category, all: Category[]): { category: string; samples: SplitSample[] }[] {
  const meta = all
    .filter((c) => c.name !== category.name)
    .map((c) => ({ category: c.name, samples: trainNormals(c).map(asIs) }))
    .filter((c) => c.samples.length > 0);
  if (meta.length === 0) {
    const names = all.map((c) => c.name).join(', ') || category.name;
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_SETTING',
      `RegAD meta-trains on the other categories of the dataset, but category ${category.name} (${category.root}) has none beside it (categories: ${names}): use a dataset with at least two categories`,
    );
  }
  return meta;
}

export function requireAugment(augment: unknown): AugmentKind | null {
  if (augment === undefined || augment === null || augment === 'none') return null;
  if (typeof augment !== 'string' || !(AUGMENT_KINDS as readonly string[]).includes(augment)) {
    throw invalidRange(`one of ${AUGMENT_KINDS.join(', ')}`, 'augment', augment);
  }
  return augment as AugmentKind;
}

export function fewshotSplit(category: Category, opts: FewshotOptions): CategorySplit {
  requireCategory(category, 0);
  const seed = requireSeed(opts.seed ?? 0);
  const k = opts.shots;
  if (typeof k !== 'number' || !Number.isInteger(k) || k < 1) throw invalidRange('a positive integer', 'shots', k);
  const augment = requireAugment(opts.augment);
  const augmentCount = augment === null ? 0 : (opts.augmentCount ?? DEFAULT_AUGMENT_COUNT);
  if (augment !== null && (typeof augmentCount !== 'number' || !Number.isInteger(augmentCount) || augmentCount < 1)) {
    throw invalidRange('a positive integer', 'augmentCount', opts.augmentCount);
  }
  const normals = trainNormals(category);
  requireNonEmptyTrain(category, normals);
  if (k > normals.length) {
    throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Category ${category.name} (${category.root}) has ${normals.length} normal training images: cannot take ${k} shots`);
  }
  const shots = shuffled(normals, randomFor(seed, category.name, 'fewshot')).slice(0, k);
  const train: SplitSample[] = [];
  for (const shot of shots) {
    train.push(asIs(shot));
    for (let copy = 0; copy < augmentCount; copy++) {
      // The path inside the category, not the absolute one: a moved dataset keeps its copies (and its stored results).
      const copySeed = hashString(seed, category.name, path.relative(category.root, shot.path).split(path.sep).join('/'), augment!, copy);
      train.push({ entry: { path: shot.path, label: 'normal', augment: { kind: augment!, seed: copySeed } }, sample: shot });
    }
  }
  const meta = opts.metaFrom ? metaTrainingSplit(category, opts.metaFrom) : null;
  return {
    category: category.name,
    train,
    test: testSamples(category).map(asIs),
    info: {
      setting: 'fewshot',
      seed,
      shots: k,
      augment,
      augmentCount,
      ...(meta ? { metaCategories: meta.map((m) => m.category), metaImages: meta.reduce((a, m) => a + m.samples.length, 0) } : {}),
    },
    ...(meta ? { meta } : {}),
  };
}
