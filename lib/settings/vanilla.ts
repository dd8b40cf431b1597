/** Vanilla (unsupervised) IAD: train on the normal training images, test on the whole test split. */
import type { Category } from '../datasets/types';
import { asIs, requireCategory, requireNonEmptyTrain, requireSeed, testSamples, trainNormals } from './common';
import type { CategorySplit } from './types';

export interface VanillaOptions {
  seed?: number;
}

export function vanillaSplit(category: Category, opts: VanillaOptions = {}): CategorySplit {
  requireCategory(category, 0);
  const seed = requireSeed(opts.seed ?? 0);
  const train = trainNormals(category);
  requireNonEmptyTrain(category, train);
  return {
    category: category.name,
    train: train.map(asIs),
    test: testSamples(category).map(asIs),
    info: { setting: 'vanilla', seed },
  };
}
