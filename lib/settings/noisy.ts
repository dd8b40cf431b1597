/**
 * Noisy-label IAD (paper III-A-4, after SoftPatch): n anomalous test images join the m normal training images
 * labelled normal, so that n / (m + n) is the noise ratio (0.05 to 0.20 in the paper); n = round(r m / (1 - r)),
 * capped at floor(75 % of the category's test anomalies); the injected images leave the test set. Which ones: spread
 * over the defect types (round-robin, each type shuffled by the seed).
 */
import { invalidRange } from '../../bindings/errors';
import type { Category } from '../datasets/types';
import { asIs, pickRoundRobin, requireCategory, requireNonEmptyTrain, requireSeed, testSamples, trainNormals } from './common';
import { randomFor } from './random';
import { NOISE_CAP_FRACTION, type CategorySplit, type SplitSample } from './types';

export interface NoisyOptions {
  seed?: number;
  noise: number;
}

/** n for m normal images at ratio r, before the cap. */
export function noiseCount(normalCount: number, ratio: number): number {
  return Math.round((ratio * normalCount) / (1 - ratio));
}

export function noisySplit(category: Category, opts: NoisyOptions): CategorySplit {
  requireCategory(category, 0);
  const seed = requireSeed(opts.seed ?? 0);
  const r = opts.noise;
  if (typeof r !== 'number' || !Number.isFinite(r) || r <= 0 || r >= 1) throw invalidRange('a number in (0, 1)', 'noise', r);
  const normals = trainNormals(category);
  requireNonEmptyTrain(category, normals);
  const test = testSamples(category);
  const anomalies = test.filter((s) => s.label === 'anomaly');
  const wanted = noiseCount(normals.length, r);
  const cap = Math.floor(NOISE_CAP_FRACTION * anomalies.length);
  const n = Math.min(wanted, cap);
  const capped = wanted > cap;
  const injected = pickRoundRobin(anomalies, n, randomFor(seed, category.name, 'noisy'));
  const injectedPaths = new Set(injected.map((s) => s.path));
  const noise: SplitSample[] = injected.map((s) => ({ entry: { path: s.path, label: 'normal', trueLabel: 'anomaly' }, sample: s }));
  const notes = capped
    ? [`noise ${r} needs ${wanted} anomalous images but the cap is ${cap} (75 % of ${anomalies.length} test anomalies): achieved ${(n / (normals.length + n)).toFixed(4)}`]
    : [];
  return {
    category: category.name,
    train: [...normals.map(asIs), ...noise],
    test: test.filter((s) => !injectedPaths.has(s.path)).map(asIs),
    info: {
      setting: 'noisy',
      seed,
      noise: r,
      achievedNoise: n / (normals.length + n),
      noiseCount: n,
      normalCount: normals.length,
      capped,
      ...(notes.length ? { notes } : {}),
    },
  };
}
