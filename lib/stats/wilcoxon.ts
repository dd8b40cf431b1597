/**
 * The Wilcoxon signed-ranks test for two methods over paired blocks (Demsar 2006, section 3.1.3), two-sided, and
 * Holm's step-down correction for comparing every method with one control (section 3.2.2).
 *
 * Zero differences are dropped by default (SciPy's default zero_method 'wilcox'); `zeroMethod: 'zsplit'` ranks them
 * with the others and splits their ranks evenly between R+ and R- (Demsar's choice, SciPy's 'zsplit'). The p-value
 * is exact (the null distribution of R+ counted over all 2^n sign patterns) for n <= 50 differences without ties or
 * zeros; otherwise it is the normal approximation with the tie-corrected variance and no continuity correction, as
 * SciPy's `wilcoxon` computes it.
 */
import { invalidRange, invalidType } from '../../bindings/errors';
import { normalSurvival } from './distributions';
import { averageRanksOf, tieGroupSizes } from './ranks';

export type ZeroMethod = 'wilcox' | 'zsplit';

export interface WilcoxonResult {
  /** Pairs ranked: those with a non-zero difference ('wilcox'), or all ('zsplit'). */
  n: number;
  /** Sum of the ranks of |d| where x > y, and where x < y. */
  rankSumPositive: number;
  rankSumNegative: number;
  /** min(R+, R-), the statistic of the two-sided test. */
  statistic: number;
  p: number;
  method: 'exact' | 'normal';
}

const EXACT_LIMIT = 50;
const exactCounts = new Map<number, Float64Array>();

/** counts[s] = number of the 2^n sign patterns of ranks 1..n whose positive ranks sum to s (exact up to 2^53). */
function signedRankCounts(n: number): Float64Array {
  let counts = exactCounts.get(n);
  if (counts) return counts;
  const max = (n * (n + 1)) / 2;
  counts = new Float64Array(max + 1);
  counts[0] = 1;
  for (let r = 1; r <= n; r++) for (let s = (r * (r + 1)) / 2; s >= r; s--) counts[s] += counts[s - r];
  exactCounts.set(n, counts);
  return counts;
}

function requireSample(v: unknown, name: string): ArrayLike<number> {
  if (!Array.isArray(v) && !(ArrayBuffer.isView(v) && !(v instanceof DataView))) throw invalidType('an array of finite numbers', name, v);
  const a = v as ArrayLike<unknown>;
  for (let i = 0; i < a.length; i++) if (typeof a[i] !== 'number' || !Number.isFinite(a[i])) throw invalidType('a finite number', `${name}[${i}]`, a[i]);
  return a as ArrayLike<number>;
}

/** Two-sided Wilcoxon signed-ranks test of the paired samples x and y (same length). */
export function wilcoxonSignedRank(x: ArrayLike<number>, y: ArrayLike<number>, opts: { zeroMethod?: ZeroMethod } = {}): WilcoxonResult {
  const a = requireSample(x, 'x');
  const b = requireSample(y, 'y');
  if (a.length !== b.length) throw invalidRange(`${a.length} values (as many as x)`, 'y', y);
  const zeroMethod = opts.zeroMethod ?? 'wilcox';
  if (zeroMethod !== 'wilcox' && zeroMethod !== 'zsplit') throw invalidType("'wilcox' or 'zsplit'", 'zeroMethod', zeroMethod);
  const d: number[] = [];
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] || zeroMethod === 'zsplit') d.push(a[i] - b[i]);
  const n = d.length;
  const zeros = d.filter((v) => v === 0).length;
  if (n === zeros) return { n, rankSumPositive: n * (n + 1) / 4, rankSumNegative: n * (n + 1) / 4, statistic: n * (n + 1) / 4, p: 1, method: 'exact' };
  const abs = d.map(Math.abs);
  const ranks = averageRanksOf(abs, 'lower');
  let plus = 0;
  let minus = 0;
  for (let i = 0; i < n; i++) {
    if (d[i] > 0) plus += ranks[i];
    else if (d[i] < 0) minus += ranks[i];
    else {
      plus += ranks[i] / 2;
      minus += ranks[i] / 2;
    }
  }
  const statistic = Math.min(plus, minus);
  const ties = tieGroupSizes(abs);
  if (n <= EXACT_LIMIT && ties.length === 0 && zeros === 0) {
    const counts = signedRankCounts(n);
    const total = 2 ** n;
    const max = (n * (n + 1)) / 2;
    let p: number;
    if (2 * plus === max) p = 1;
    else {
      // Two-sided: twice the smaller tail of R+ (SciPy's definition).
      let lower = 0;
      for (let s = 0; s <= plus; s++) lower += counts[s];
      let upper = 0;
      for (let s = plus; s <= max; s++) upper += counts[s];
      p = Math.min(1, (2 * Math.min(lower, upper)) / total);
    }
    return { n, rankSumPositive: plus, rankSumNegative: minus, statistic, p, method: 'exact' };
  }
  const mean = (n * (n + 1)) / 4;
  let variance = n * (n + 1) * (2 * n + 1);
  for (const t of ties) variance -= 0.5 * t * (t * t - 1);
  const se = Math.sqrt(variance / 24);
  const z = (statistic - mean) / se;
  return { n, rankSumPositive: plus, rankSumNegative: minus, statistic, p: Math.min(1, 2 * normalSurvival(Math.abs(z))), method: 'normal' };
}

/**
 * Holm's step-down adjustment of m p-values: sorted ascending, p_(i) * (m - i + 1) (i from 1), made monotone
 * non-decreasing and capped at 1; returned in the input order. Reject where the adjusted p-value <= alpha.
 */
export function holmAdjust(pValues: readonly number[]): number[] {
  const m = pValues.length;
  pValues.forEach((p, i) => {
    if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw invalidType('a p-value between 0 and 1', `pValues[${i}]`, p);
  });
  const order = pValues.map((_, i) => i).sort((a, b) => pValues[a] - pValues[b] || a - b);
  const adjusted = new Array<number>(m);
  let running = 0;
  order.forEach((idx, i) => {
    running = Math.max(running, Math.min(1, (m - i) * pValues[idx]));
    adjusted[idx] = running;
  });
  return adjusted;
}

export interface ControlComparison {
  /** Index of the compared method (a column of the matrix). */
  method: number;
  wilcoxon: WilcoxonResult;
  /** Mean over blocks of (method - control). */
  meanDifference: number;
  /** Holm-adjusted p-value over the k - 1 comparisons. */
  pHolm: number;
}

/**
 * Every other method against the `control` column of a blocks x methods matrix: Wilcoxon signed-ranks per pair,
 * Holm-adjusted over the k - 1 comparisons.
 */
export function compareWithControl(matrix: number[][], control: number, opts: { zeroMethod?: ZeroMethod } = {}): ControlComparison[] {
  const k = matrix[0]?.length ?? 0;
  if (!Number.isInteger(control) || control < 0 || control >= k) throw invalidRange(`a column index below ${k}`, 'control', control);
  const column = (j: number): number[] => matrix.map((row) => row[j]);
  const base = column(control);
  const others = Array.from({ length: k }, (_, j) => j).filter((j) => j !== control);
  const tests = others.map((j) => {
    const values = column(j);
    return { method: j, wilcoxon: wilcoxonSignedRank(values, base, opts), meanDifference: values.reduce((s, v, i) => s + v - base[i], 0) / values.length };
  });
  const adjusted = holmAdjust(tests.map((t) => t.wilcoxon.p));
  return tests.map((t, i) => ({ ...t, pHolm: adjusted[i] }));
}
