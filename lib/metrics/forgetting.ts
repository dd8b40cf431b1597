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
  const k = results.length - 1;
  const perTask: number[] = [];
  for (let j = 0; j < k; j++) {
    let best = -Infinity;
    for (let l = j; l < k; l++) best = Math.max(best, results[l][j]);
    perTask.push(best - results[k][j]);
  }
  const mean = perTask.length === 0 ? Number.NaN : perTask.reduce((a, b) => a + b, 0) / perTask.length;
  return { perTask, mean };
}
