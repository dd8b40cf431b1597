/** Ranks within a block, ties sharing their average rank (Demsar 2006, section 3.2.2; SciPy's rankdata 'average'). */
import { invalidRange, invalidType } from '../../bindings/errors';

export type Direction = 'higher' | 'lower';

/**
 * Ranks of `values`, 1 for the best: the highest value when `better` is 'higher' (a metric such as AUROC), the lowest
 * when 'lower'. Tied values get the average of the ranks they span.
 */
export function averageRanksOf(values: ArrayLike<number>, better: Direction = 'higher'): Float64Array {
  const n = values.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => (better === 'higher' ? values[b] - values[a] : values[a] - values[b]));
  const ranks = new Float64Array(n);
  for (let i = 0; i < n; ) {
    let j = i + 1;
    while (j < n && values[order[j]] === values[order[i]]) j++;
    // Positions i..j-1 (0-based) share ranks i+1..j: their mean.
    const rank = (i + 1 + j) / 2;
    for (let t = i; t < j; t++) ranks[order[t]] = rank;
    i = j;
  }
  return ranks;
}

/** Sizes of the groups of equal values (only groups of 2 or more), for tie corrections. */
export function tieGroupSizes(values: ArrayLike<number>): number[] {
  const sorted = Float64Array.from(values).sort();
  const sizes: number[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i + 1;
    while (j < sorted.length && sorted[j] === sorted[i]) j++;
    if (j - i > 1) sizes.push(j - i);
    i = j;
  }
  return sizes;
}

/**
 * A blocks x methods matrix of finite numbers (every row the same length, at least `minBlocks` rows and `minMethods`
 * columns), checked in the project's message format.
 */
export function requireScoreMatrix(matrix: unknown, name: string, minBlocks: number, minMethods: number): number[][] {
  if (!Array.isArray(matrix)) throw invalidType('an array of rows (blocks x methods)', name, matrix);
  if (matrix.length < minBlocks) throw invalidRange(`at least ${minBlocks} rows (blocks)`, name, matrix);
  const width = Array.isArray(matrix[0]) ? matrix[0].length : -1;
  matrix.forEach((row: unknown, i) => {
    if (!Array.isArray(row) && !ArrayBuffer.isView(row)) throw invalidType('an array of numbers', `${name}[${i}]`, row);
    const cells = row as ArrayLike<unknown>;
    if (cells.length !== width) throw invalidRange(`${width} values (one per method)`, `${name}[${i}]`, row);
    for (let j = 0; j < cells.length; j++) {
      const v = cells[j];
      if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidType('a finite number', `${name}[${i}][${j}]`, v);
    }
  });
  if (width < minMethods) throw invalidRange(`at least ${minMethods} columns (methods)`, `${name}[0]`, matrix[0]);
  return matrix as number[][];
}
