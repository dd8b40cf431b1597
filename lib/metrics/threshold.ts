/**
 * The decision threshold a saved detector carries (`imiad run --save`, used by `imiad predict`): an image is called
 * anomalous when its score is at or above the threshold.
 * - With labelled evaluation images of both kinds: the F1-optimal threshold, the score value at which F1 over those
 *   images is highest (the same curve as image F1-max: every distinct score is a candidate, images at or above it are
 *   called anomalous); on equal F1 the higher threshold wins (fewer false alarms).
 * - Without (only normal or only anomalous evaluation images): the NORMAL_QUANTILE quantile of the training-normal
 *   images' scores, linearly interpolated between order statistics (numpy's default).
 */
import { imiadError } from '../../bindings/errors';

/** The quantile of training-normal scores used when no labelled evaluation images exist. */
export const NORMAL_QUANTILE = 0.99;

export type ThresholdSource = 'f1-optimal' | 'normal-quantile' | 'option';

export interface DecisionThreshold {
  threshold: number;
  source: ThresholdSource;
  /** Images the threshold was chosen on. */
  images: number;
  /** f1-optimal: the F1 at the threshold. */
  f1?: number;
  /** normal-quantile: the quantile. */
  quantile?: number;
}

function requireScores(scores: ArrayLike<number>, what: string): void {
  if (scores.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected at least one score for ${what} but received none`);
  for (let i = 0; i < scores.length; i++) {
    if (!Number.isFinite(scores[i])) throw imiadError('RangeError', 'ERR_IMIAD_NOT_FINITE', `Expected finite scores for ${what} but score ${i} is ${scores[i]}`);
  }
}

/** The F1-optimal threshold over labelled scores (labels: 1 = anomaly); needs both kinds. */
export function f1OptimalThreshold(scores: ArrayLike<number>, labels: ArrayLike<number>): DecisionThreshold {
  requireScores(scores, 'the F1-optimal threshold');
  if (labels.length !== scores.length) throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected ${scores.length} labels for the F1-optimal threshold but received ${labels.length}`);
  let positives = 0;
  for (let i = 0; i < labels.length; i++) positives += labels[i] ? 1 : 0;
  if (positives === 0 || positives === labels.length) {
    throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected normal and anomalous images for the F1-optimal threshold but received one kind only');
  }
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  let tp = 0;
  let fp = 0;
  let best = { threshold: scores[order[0]], f1: -1 };
  for (let k = 0; k < order.length; k++) {
    if (labels[order[k]]) tp++;
    else fp++;
    // Only after the last image of a run of equal scores: all of them fall on the same side of the threshold.
    if (k + 1 < order.length && scores[order[k + 1]] === scores[order[k]]) continue;
    const f1 = (2 * tp) / (tp + fp + positives);
    if (f1 > best.f1) best = { threshold: scores[order[k]], f1 };
  }
  return { threshold: best.threshold, source: 'f1-optimal', images: scores.length, f1: best.f1 };
}

/** The q quantile of scores, linear between order statistics (numpy.quantile's default). */
export function quantileThreshold(scores: ArrayLike<number>, q = NORMAL_QUANTILE): DecisionThreshold {
  requireScores(scores, 'the normal-score quantile');
  if (!(q >= 0 && q <= 1)) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Expected a number in [0, 1] for quantile but received ${q} of type ${typeof q}`);
  const v = Array.from(scores).sort((a, b) => a - b);
  const pos = q * (v.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return { threshold: v[lo] + (v[hi] - v[lo]) * (pos - lo), source: 'normal-quantile', images: v.length, quantile: q };
}
