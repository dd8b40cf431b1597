/**
 * Fully supervised IAD (paper III-A-2): the normal training images plus n anomalous test images that have masks
 * (n = 10 in the paper), labelled as anomalies and removed from the test set. The n are spread over the defect
 * types (round-robin, each type's images shuffled by the seed).
 */
import { imiadError, invalidRange } from '../../bindings/errors';
import type { Category } from '../datasets/types';
import { asIs, pickRoundRobin, requireCategory, requireNonEmptyTrain, requireSeed, testSamples, trainNormals } from './common';
import { randomFor } from './random';
import type { CategorySplit } from './types';

export const DEFAULT_SUPERVISED_ANOMALIES = 10;

export interface SupervisedOptions {
  seed?: number;
  /** Anomalous images moved into training (default 10). */
  anomalies?: number;
}

export function supervisedSplit(category: Category, opts: SupervisedOptions = {}): CategorySplit {
  requireCategory(category, 0);
  const seed = requireSeed(opts.seed ?? 0);
  const n = opts.anomalies ?? DEFAULT_SUPERVISED_ANOMALIES;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) throw invalidRange('a positive integer', 'anomalies', n);
  const train = trainNormals(category);
  requireNonEmptyTrain(category, train);
  const test = testSamples(category);
  const testAnomalies = test.filter((s) => s.label === 'anomaly');
  const candidates = testAnomalies.filter((s) => s.maskPaths.length > 0);
  if (candidates.length < n || testAnomalies.length - n < 1) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_RANGE',
      `Category ${category.name} (${category.root}) has ${testAnomalies.length} anomalous test images, ${candidates.length} with masks: ` +
        `cannot move ${n} into training and keep at least one for testing`,
    );
  }
  const moved = pickRoundRobin(candidates, n, randomFor(seed, category.name, 'supervised'));
  const movedPaths = new Set(moved.map((s) => s.path));
  return {
    category: category.name,
    train: [...train.map(asIs), ...moved.map(asIs)],
    test: test.filter((s) => !movedPaths.has(s.path)).map(asIs),
    info: { setting: 'supervised', seed, anomalies: n },
  };
}
