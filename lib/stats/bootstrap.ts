/**
 * A bootstrap confidence interval of the image AUROC over the test images of one experiment.
 *
 * Stratified resampling (as pROC's `ci.auc` does by default): each resample draws the anomalous images with
 * replacement among the anomalous ones and the normal images among the normal ones, so every resample keeps the
 * test set's class sizes and its AUROC is always defined. The interval is the percentile interval of the resampled
 * AUROCs (linear interpolation between order statistics, NumPy's default quantile).
 *
 * The scores are sorted once and tied scores merged into groups; a resample is then only a count per group and one
 * pass over the groups (AUROC = P(score+ > score-) + 0.5 P(tie), the trapezoid area with ties merged), so 1,000
 * resamples cost O(1000 (n + groups)) with no sorting, and the work yields to the event loop between batches.
 */
import { abortError } from '../../bindings/call';
import { invalidRange, invalidType } from '../../bindings/errors';
import { Random } from '../prng';

export interface BootstrapInterval {
  /** The AUROC of the test set itself. */
  estimate: number;
  low: number;
  high: number;
  /** Coverage of [low, high], e.g. 0.95. */
  level: number;
  resamples: number;
  seed: number;
  /** Standard deviation of the resampled AUROCs (the bootstrap standard error). */
  standardError: number;
}

export interface BootstrapOptions {
  /** Default 1000. */
  resamples?: number;
  /** Default 0.95. */
  level?: number;
  /** Default 0. */
  seed?: number;
  signal?: AbortSignal;
}

/** Scores ordered ascending and merged into groups of equal score; each image's group index. */
function scoreGroups(scores: ArrayLike<number>): { groupOf: Int32Array; groups: number } {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  const groupOf = new Int32Array(n);
  let g = -1;
  for (let i = 0; i < n; i++) {
    if (i === 0 || scores[order[i]] !== scores[order[i - 1]]) g++;
    groupOf[order[i]] = g;
  }
  return { groupOf, groups: g + 1 };
}

/** AUROC from per-group counts of positives and negatives (groups in ascending score order). */
function aurocOfCounts(pos: Int32Array, neg: Int32Array, P: number, N: number): number {
  let below = 0;
  let area = 0;
  for (let g = 0; g < pos.length; g++) {
    area += pos[g] * (below + 0.5 * neg[g]);
    below += neg[g];
  }
  return area / (P * N);
}

/** The q-quantile of ascending `sorted` by linear interpolation (NumPy's default). */
function quantile(sorted: Float64Array, q: number): number {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function validate(scores: unknown, labels: unknown, opts: BootstrapOptions): { resamples: number; level: number; seed: number } {
  const isNumbers = (v: unknown): v is ArrayLike<number> => Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));
  if (!isNumbers(scores)) throw invalidType('an array of finite scores', 'scores', scores);
  if (!isNumbers(labels)) throw invalidType('an array of 0/1 labels', 'labels', labels);
  if (labels.length !== scores.length) throw invalidRange(`${scores.length} labels (one per score)`, 'labels', labels);
  for (let i = 0; i < scores.length; i++) if (typeof scores[i] !== 'number' || !Number.isFinite(scores[i])) throw invalidType('a finite number', `scores[${i}]`, scores[i]);
  for (let i = 0; i < labels.length; i++) if (labels[i] !== 0 && labels[i] !== 1) throw invalidType('0 or 1', `labels[${i}]`, labels[i]);
  const resamples = opts.resamples ?? 1000;
  if (!Number.isInteger(resamples) || resamples < 2 || resamples > 1e6) throw invalidRange('an integer between 2 and 1000000', 'resamples', resamples);
  const level = opts.level ?? 0.95;
  if (typeof level !== 'number' || !(level > 0 && level < 1)) throw invalidRange('a number between 0 and 1', 'level', level);
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0) throw invalidRange('a non-negative integer', 'seed', seed);
  return { resamples, level, seed };
}

/** Resampled work per batch before yielding to the event loop (draws + group passes). */
const BATCH_WORK = 200_000;

/**
 * The stratified percentile bootstrap interval of the AUROC of `scores` (higher = more anomalous) against `labels`
 * (1 = anomalous). null when the test set lacks either class (AUROC undefined). Deterministic for a seed.
 */
export async function bootstrapAuroc(scores: ArrayLike<number>, labels: ArrayLike<number>, opts: BootstrapOptions = {}): Promise<BootstrapInterval | null> {
  const { resamples, level, seed } = validate(scores, labels, opts);
  if (opts.signal?.aborted) throw abortError();
  const { groupOf, groups } = scoreGroups(scores);
  const positives: number[] = [];
  const negatives: number[] = [];
  for (let i = 0; i < scores.length; i++) (labels[i] === 1 ? positives : negatives).push(groupOf[i]);
  const P = positives.length;
  const N = negatives.length;
  if (P === 0 || N === 0) return null;
  const posGroup = Int32Array.from(positives);
  const negGroup = Int32Array.from(negatives);
  const pos = new Int32Array(groups);
  const neg = new Int32Array(groups);
  for (const g of posGroup) pos[g]++;
  for (const g of negGroup) neg[g]++;
  const estimate = aurocOfCounts(pos, neg, P, N);

  const rng = new Random(seed).fork('bootstrap-auroc');
  const values = new Float64Array(resamples);
  const perBatch = Math.max(1, Math.floor(BATCH_WORK / (P + N + groups)));
  for (let b = 0; b < resamples; b++) {
    if (b > 0 && b % perBatch === 0) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (opts.signal?.aborted) throw abortError();
    }
    pos.fill(0);
    neg.fill(0);
    for (let t = 0; t < P; t++) pos[posGroup[rng.int(P)]]++;
    for (let t = 0; t < N; t++) neg[negGroup[rng.int(N)]]++;
    values[b] = aurocOfCounts(pos, neg, P, N);
  }
  let mean = 0;
  for (const v of values) mean += v;
  mean /= resamples;
  let squares = 0;
  for (const v of values) squares += (v - mean) * (v - mean);
  values.sort();
  return {
    estimate,
    low: quantile(values, (1 - level) / 2),
    high: quantile(values, (1 + level) / 2),
    level,
    resamples,
    seed,
    standardError: Math.sqrt(squares / (resamples - 1)),
  };
}
