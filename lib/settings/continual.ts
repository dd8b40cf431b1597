/**
 * Continual IAD (paper III-A-5): the categories of a dataset are tasks learnt one after another in a fixed order
 * (the given `order`, else the dataset's category order); each task is a vanilla split. After learning task l the
 * detector is evaluated on tasks 0..l, giving the result matrix T[l][j] (j <= l). Forgetting measure (Chaudhry et
 * al., Riemannian walk; paper Table IV): FM_j^k = max_{l<k} T[l][j] - T[k][j], reported as the mean over j < k after
 * the last task k.
 */
import { imiadError, invalidType } from '../../bindings/errors';
import type { Category } from '../datasets/types';
import { requireCategory, requireSeed } from './common';
import type { CategorySplit } from './types';
import { vanillaSplit } from './vanilla';

export interface ContinualOptions {
  seed?: number;
  /** Category names in learning order; default: the order of `categories`. Every name must be present. */
  order?: string[] | null;
}

export function continualTasks(categories: Category[], opts: ContinualOptions = {}): CategorySplit[] {
  categories.forEach(requireCategory);
  const seed = requireSeed(opts.seed ?? 0);
  const byName = new Map(categories.map((c) => [c.name, c]));
  let order: string[];
  if (opts.order === undefined || opts.order === null) {
    order = categories.map((c) => c.name);
  } else {
    if (!Array.isArray(opts.order) || opts.order.some((n) => typeof n !== 'string')) throw invalidType('an array of category names', 'order', opts.order);
    order = opts.order.slice();
    for (const name of order) {
      if (!byName.has(name)) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Continual task order names category '${name}', which is not loaded (${[...byName.keys()].join(', ')})`);
    }
    if (new Set(order).size !== order.length) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', `Continual task order repeats a category: ${order.join(', ')}`);
  }
  if (order.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Continual learning needs at least one category');
  return order.map((name, task) => {
    const split = vanillaSplit(byName.get(name)!, { seed });
    return { ...split, info: { setting: 'continual', seed, task, order } };
  });
}

/** The forgetting measure over a matrix with gaps: lib/metrics' one implementation (forgettingMeasureWithGaps). */
export { forgettingMeasureWithGaps as forgettingMeasure, type PartialForgettingMeasure as ForgettingMeasure } from '../metrics/forgetting';

/** Mean of the last row (the metric on every task after learning all of them). */
export function finalAverage(matrix: (number | null)[][]): number | null {
  const row = matrix[matrix.length - 1] ?? [];
  const known = row.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  return known.length ? known.reduce((a, b) => a + b, 0) / known.length : null;
}
