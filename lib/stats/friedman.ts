/**
 * The Friedman test over methods (columns) with blocks (rows: categories, or dataset x category) and the
 * Iman-Davenport F statistic derived from it, as Demsar (2006, section 3.2.2) recommends them for comparing several
 * methods over several data sets.
 *
 *   chi2_F = 12 N / (k (k + 1)) * (sum_j R_j^2 - k (k + 1)^2 / 4)            R_j: average rank of method j
 *   with ties (default, as SciPy's friedmanchisquare): chi2_F / (1 - sum_blocks sum_groups (t^3 - t) / (N k (k^2 - 1)))
 *   F_F    = (N - 1) chi2_F / (N (k - 1) - chi2_F)      ~ F(k - 1, (k - 1)(N - 1))
 */
import { averageRanksOf, requireScoreMatrix, tieGroupSizes, type Direction } from './ranks';
import { chiSquareSurvival, fSurvival } from './distributions';

export interface FriedmanResult {
  /** N: blocks (rows). */
  blocks: number;
  /** k: methods (columns). */
  methods: number;
  /** Average rank of each method over the blocks, 1 = best. */
  averageRanks: number[];
  /** The Friedman statistic (tie-corrected unless `tieCorrection: false`); k - 1 degrees of freedom. */
  chiSquare: number;
  chiSquareP: number;
  /** The tie-correction divisor 1 - sum(t^3 - t) / (N k (k^2 - 1)) that was applied (1 without ties or correction). */
  tieCorrection: number;
  imanDavenportF: number;
  imanDavenportDf: [number, number];
  imanDavenportP: number;
}

export interface FriedmanOptions {
  /** Which values are better (rank 1): 'higher' (default; AUROC and the like) or 'lower' (errors, forgetting). */
  better?: Direction;
  /**
   * Divide by the tie-correction factor as SciPy's friedmanchisquare does (default true). false gives the textbook
   * statistic of Demsar's worked example, which ignores ties.
   */
  tieCorrection?: boolean;
}

/** The Friedman and Iman-Davenport tests on a blocks x methods matrix (at least 2 blocks and 2 methods). */
export function friedmanTest(matrix: number[][], opts: FriedmanOptions = {}): FriedmanResult {
  const rows = requireScoreMatrix(matrix, 'matrix', 2, 2);
  const N = rows.length;
  const k = rows[0].length;
  const rankSums = new Float64Array(k);
  let ties = 0;
  for (const row of rows) {
    const r = averageRanksOf(row, opts.better ?? 'higher');
    for (let j = 0; j < k; j++) rankSums[j] += r[j];
    for (const t of tieGroupSizes(row)) ties += t * t * t - t;
  }
  const averageRanks = Array.from(rankSums, (s) => s / N);
  const sumSquares = rankSums.reduce((a, s) => a + s * s, 0);
  // The same as 12N/(k(k+1)) * (sum R_j^2 - k(k+1)^2/4), written on rank sums as SciPy does.
  const raw = (12 / (k * N * (k + 1))) * sumSquares - 3 * N * (k + 1);
  const correction = opts.tieCorrection === false ? 1 : 1 - ties / (k * (k * k - 1) * N);
  // Every block entirely tied: no evidence of any difference (SciPy would return NaN from 0/0).
  const chiSquare = correction > 0 ? Math.max(0, raw / correction) : 0;
  const df2 = (k - 1) * (N - 1);
  const denominator = N * (k - 1) - chiSquare;
  // chi2_F reaches N(k - 1) when every block ranks the methods identically: F is then infinite, its p-value 0.
  const imanDavenportF = denominator > 1e-12 * N * (k - 1) ? ((N - 1) * chiSquare) / denominator : Infinity;
  return {
    blocks: N,
    methods: k,
    averageRanks,
    chiSquare,
    chiSquareP: chiSquareSurvival(chiSquare, k - 1),
    tieCorrection: correction,
    imanDavenportF,
    imanDavenportDf: [k - 1, df2],
    imanDavenportP: fSurvival(imanDavenportF, k - 1, df2),
  };
}
