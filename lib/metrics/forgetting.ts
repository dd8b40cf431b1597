/**
 * The forgetting measure of continual learning (Chaudhry et al., Riemannian Walk, 2018), as the IM-IAD paper uses
 * it: with T[l][j] the metric on task j after learning task l, FM_j^k = max_{l<k} T[l][j] - T[k][j]; the reported
 * value is the mean over the tasks j < k after the last task k.
 */
import { imiadError } from '../../bindings/errors';
import { invalidType } from '../../bindings/errors';

export interface ForgettingMeasure {
  /** FM_j^k for each earlier task j (k = the last task). */
  perTask: number[];
  /** Their mean; NaN when there is only one task. */
  mean: number;
}

/**
 * Forgetting after the last task of a lower-triangular result matrix: results[l][j] (j <= l) is the metric on task
 * j after learning task l. Entries with j > l are ignored and may be omitted.
 */
export function forgettingMeasure(results: number[][]): ForgettingMeasure {
  if (!Array.isArray(results) || results.length === 0) throw invalidType('non-empty number[][]', 'results', results);
  results.forEach((row, l) => {
    if (!Array.isArray(row) || row.length < l + 1) {
      throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected results[${l}] to hold the metric of tasks 0..${l} but received ${Array.isArray(row) ? `Array(${row.length})` : String(row)} of type ${typeof row}`);
    }
    for (let j = 0; j <= l; j++) {
      if (typeof row[j] !== 'number' || !Number.isFinite(row[j])) throw invalidType('finite number', `results[${l}][${j}]`, row[j]);
    }
  });
  const r = forgettingMeasureWithGaps(results);
  return { perTask: r.perTask as number[], mean: r.mean ?? Number.NaN };
}

export interface PartialForgettingMeasure {
  /** FM_j after the last task, for j = 0 .. K-2 (null where T is missing). */
  perTask: (number | null)[];
  /** Mean over the tasks before the last whose FM is known; null with a single task. */
  mean: number | null;
}

/**
 * The same measure over a result matrix with gaps (a metric not defined for some task, as the results store holds
 * them): missing entries (null, undefined, not finite) are skipped in the max; a task whose final entry or every
 * earlier entry is missing gets null and is left out of the mean. Entries above the diagonal are ignored.
 */
export function forgettingMeasureWithGaps(matrix: readonly (readonly (number | null | undefined)[] | undefined)[]): PartialForgettingMeasure {
  const known = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);
  const k = matrix.length - 1;
  const perTask: (number | null)[] = [];
  for (let j = 0; j < k; j++) {
    const final = matrix[k]?.[j];
    let best = -Infinity;
    for (let l = j; l < k; l++) {
      const v = matrix[l]?.[j];
      if (known(v)) best = Math.max(best, v);
    }
    perTask.push(known(final) && best > -Infinity ? best - final : null);
  }
  const values = perTask.filter(known);
  return { perTask, mean: values.length ? values.reduce((a, b) => a + b, 0) / values.length : null };
}
