/**
 * The distributions the tests need, from jStat (npm `jstat`): chi-square and F upper tails for the Friedman and
 * Iman-Davenport p-values, the normal tail for Wilcoxon's large-sample approximation, and the studentized range
 * quantile for the Nemenyi critical difference (jStat's `tukey` is a port of R's ptukey/qtukey: Gauss-Legendre
 * integration after Copenhaver & Holland 1988). Only these few functions are typed here, so jStat stays an
 * implementation detail.
 */

interface JStatDistributions {
  chisquare: { cdf(x: number, dof: number): number };
  centralF: { cdf(x: number, df1: number, df2: number): number };
  normal: { cdf(x: number, mean: number, sd: number): number; inv(p: number, mean: number, sd: number): number };
  tukey: { cdf(q: number, nmeans: number, df: number): number; inv(p: number, nmeans: number, df: number): number };
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { jStat } = require('jstat') as { jStat: JStatDistributions };

/** P(X >= x) for X ~ chi-square with `dof` degrees of freedom. */
export function chiSquareSurvival(x: number, dof: number): number {
  if (!(x > 0)) return 1;
  if (x === Infinity) return 0;
  return Math.min(1, Math.max(0, 1 - jStat.chisquare.cdf(x, dof)));
}

/** P(X >= x) for X ~ F(df1, df2). */
export function fSurvival(x: number, df1: number, df2: number): number {
  if (!(x > 0)) return 1;
  if (x === Infinity) return 0;
  return Math.min(1, Math.max(0, 1 - jStat.centralF.cdf(x, df1, df2)));
}

/** P(Z >= z) for a standard normal Z, from the lower tail of -z (no cancellation for large z). */
export function normalSurvival(z: number): number {
  return jStat.normal.cdf(-z, 0, 1);
}

/** The standard normal quantile z with P(Z <= z) = p. */
export function normalQuantile(p: number): number {
  return jStat.normal.inv(p, 0, 1);
}

/** P(Q <= q) for the studentized range of `groups` means with `df` degrees of freedom (Infinity: the normal case). */
export function studentizedRangeCdf(q: number, groups: number, df = Infinity): number {
  return jStat.tukey.cdf(q, groups, df);
}

const quantiles = new Map<string, number>();

/**
 * The studentized range quantile q with P(Q <= q) = p, for `groups` means and `df` degrees of freedom (Infinity for
 * the Nemenyi test). jStat's qtukey stops its secant iteration at a step below 1e-4; bisection on jStat's CDF
 * around that answer then takes it to the CDF's own accuracy (published tables give 3 decimals).
 */
export function studentizedRangeQuantile(p: number, groups: number, df = Infinity): number {
  const id = `${p}:${groups}:${df}`;
  const cached = quantiles.get(id);
  if (cached !== undefined) return cached;
  let q = jStat.tukey.inv(p, groups, df);
  // Refine by bisection on a bracket around jStat's answer: the CDF is monotone, so this cannot diverge.
  let lo = Math.max(0, q - 1e-3);
  let hi = q + 1e-3;
  while (studentizedRangeCdf(lo, groups, df) > p) lo = Math.max(0, lo - 0.01);
  while (studentizedRangeCdf(hi, groups, df) < p) hi += 0.01;
  for (let i = 0; i < 60 && hi - lo > 1e-12; i++) {
    const mid = (lo + hi) / 2;
    if (studentizedRangeCdf(mid, groups, df) < p) lo = mid;
    else hi = mid;
  }
  q = (lo + hi) / 2;
  quantiles.set(id, q);
  return q;
}
