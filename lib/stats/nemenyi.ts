/**
 * The Nemenyi post-hoc test (Demsar 2006, section 3.2.2): two methods differ significantly when their average ranks
 * differ by at least the critical difference
 *
 *   CD = q_alpha sqrt(k (k + 1) / (6 N)),   q_alpha = (studentized range quantile at 1 - alpha, k means, df = inf) / sqrt 2
 *
 * (Demsar's Table 5 lists q_alpha for k = 2..10; 2.569 for k = 4 at alpha = 0.05).
 */
import { invalidRange, invalidType } from '../../bindings/errors';
import { studentizedRangeQuantile } from './distributions';

function requireCount(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw invalidType(`an integer >= ${min}`, name, value);
  if (value < min) throw invalidRange(`an integer >= ${min}`, name, value);
  return value;
}

function requireAlpha(alpha: unknown): number {
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw invalidType('a number between 0 and 1', 'alpha', alpha);
  if (!(alpha > 0 && alpha < 1)) throw invalidRange('a number between 0 and 1', 'alpha', alpha);
  return alpha;
}

/** Demsar's q_alpha: the studentized range quantile for k means and infinite df, divided by sqrt 2. */
export function nemenyiQ(methods: number, alpha = 0.05): number {
  const k = requireCount(methods, 'methods', 2);
  return studentizedRangeQuantile(1 - requireAlpha(alpha), k, Infinity) / Math.SQRT2;
}

/** The Nemenyi critical difference for k methods compared over N blocks. */
export function nemenyiCriticalDifference(methods: number, blocks: number, alpha = 0.05): number {
  const k = requireCount(methods, 'methods', 2);
  const N = requireCount(blocks, 'blocks', 1);
  return nemenyiQ(k, alpha) * Math.sqrt((k * (k + 1)) / (6 * N));
}

/**
 * The groups a CD diagram joins with a bar: maximal runs of methods (in rank order) whose average ranks all differ
 * by less than `cd`, of two or more methods. Returned as method indices, sorted by rank; groups in rank order.
 */
export function nemenyiGroups(averageRanks: readonly number[], cd: number): number[][] {
  const order = averageRanks.map((_, i) => i).sort((a, b) => averageRanks[a] - averageRanks[b] || a - b);
  const groups: number[][] = [];
  let lastEnd = -1;
  for (let i = 0; i < order.length; i++) {
    let j = i;
    while (j + 1 < order.length && averageRanks[order[j + 1]] - averageRanks[order[i]] < cd) j++;
    // A run ending where the previous one ended is contained in it: not maximal.
    if (j > i && j > lastEnd) {
      groups.push(order.slice(i, j + 1));
      lastEnd = j;
    }
  }
  return groups;
}
