/**
 * The distributions the tests need, from jStat (npm `jstat`): the chi-square upper tail for the Friedman p-value, the normal tail for Wilcoxon's large-sample approximation, and the studentized range
 * quantile for the Nemenyi critical difference (jStat's `tukey` is a port of R's ptukey/qtukey: Gauss-Legendre
 * integration after Copenhaver & Holland 1988). Only these few functions are typed here, so jStat stays an
 * implementation detail. The F upper tail (Iman-Davenport) is computed here from the regularized incomplete beta
 * function with a 9-term Lanczos log-gamma: jStat's agrees with SciPy only to ~1e-9.
 */

interface JStatDistributions {
  chisquare: { cdf(x: number, dof: number): number };
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

// Lanczos's approximation (g = 7, 9 terms; relative error ~1e-15). jStat's gammaln uses a 6-term form good to
// ~1e-10, which left its F tail 1e-9 away from SciPy's; the F tail below needs the better one.
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
  -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0. */
export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const y = x - 1;
  let a = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) a += LANCZOS[i] / (y + i);
  const t = y + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (y + 0.5) * Math.log(t) - t + Math.log(a);
}

/** The continued fraction of the incomplete beta function (modified Lentz), for x < (a + 1) / (a + b + 2). */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 1000; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const step = d * c;
    h *= step;
    if (Math.abs(step - 1) < 1e-16) break;
  }
  return h;
}

/** The regularized incomplete beta function I_x(a, b). */
export function regularizedBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x));
  return x < (a + 1) / (a + b + 2) ? (front * betaContinuedFraction(x, a, b)) / a : 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

/** P(X >= x) for X ~ F(df1, df2): I_{df2 / (df2 + df1 x)}(df2 / 2, df1 / 2). */
export function fSurvival(x: number, df1: number, df2: number): number {
  if (!(x > 0)) return 1;
  if (x === Infinity) return 0;
  return Math.min(1, Math.max(0, regularizedBeta(df2 / (df2 + df1 * x), df2 / 2, df1 / 2)));
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
