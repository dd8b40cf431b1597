/**
 * lib/stats: Friedman + Iman-Davenport, Nemenyi CD, Wilcoxon-Holm and the bootstrap of the image AUROC, against
 * Demsar's (2006) worked example, the published studentized-range table, hand-computed cases, and SciPy (a test-only
 * oracle through /usr/bin/python3; skipped with a printed reason where SciPy is absent; .ci/run installs it).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import Database from 'better-sqlite3';

import { binaryClassificationMetrics } from '../bindings/metrics';
import { Random } from '../lib/prng';
import { ResultsStore } from '../lib/runner/store';
import {
  averageRanksOf,
  bootstrapAuroc,
  cdDiagramSvg,
  compareWithControl,
  friedmanTest,
  fSurvival,
  holmAdjust,
  nemenyiCriticalDifference,
  nemenyiGroups,
  nemenyiQ,
  studentizedRangeQuantile,
  wilcoxonSignedRank,
} from '../lib/stats';
import { makeRow } from './helpers/rows';

/*
 * Demsar (2006), Table 6: AUC of C4.5 with m = 0 and cf = 0.25, with m tuned, with cf tuned, and both, on 14 UCI
 * data sets, as printed, with the ranks the paper prints beside them. On "voting" C4.5+cf and C4.5+m+cf both print
 * as 0.975 yet are ranked 2 and 3 (the paper ranked the unrounded AUCs); the average ranks 3.143, 2.000, 2.893,
 * 1.964 of section 3.2.2 need exactly that, so the test of the statistics uses the printed ranks.
 */
const DEMSAR_AUC = [
  [0.763, 0.768, 0.771, 0.798], // adult (sample)
  [0.599, 0.591, 0.59, 0.569], // breast cancer
  [0.954, 0.971, 0.968, 0.967], // breast cancer wisconsin
  [0.628, 0.661, 0.654, 0.657], // cmc
  [0.882, 0.888, 0.886, 0.898], // ionosphere
  [0.936, 0.931, 0.916, 0.931], // iris
  [0.661, 0.668, 0.609, 0.685], // liver disorders
  [0.583, 0.583, 0.563, 0.625], // lung cancer
  [0.775, 0.838, 0.866, 0.875], // lymphography
  [1.0, 1.0, 1.0, 1.0], // mushroom
  [0.94, 0.962, 0.965, 0.962], // primary tumor
  [0.619, 0.666, 0.614, 0.669], // rheum
  [0.972, 0.981, 0.975, 0.975], // voting
  [0.957, 0.978, 0.946, 0.97], // wine
];
const DEMSAR_RANKS = [
  [4, 3, 2, 1],
  [1, 2, 3, 4],
  [4, 1, 2, 3],
  [4, 1, 3, 2],
  [4, 2, 3, 1],
  [1, 2.5, 4, 2.5],
  [3, 2, 4, 1],
  [2.5, 2.5, 4, 1],
  [4, 3, 2, 1],
  [2.5, 2.5, 2.5, 2.5],
  [4, 2.5, 1, 2.5],
  [3, 2, 4, 1],
  [4, 1, 2, 3],
  [3, 1, 4, 2],
];
const VOTING = 12;

// Studentized range quantiles for infinite degrees of freedom, k = 2..20 (Harter 1960; the standard tables printed
// in statistics textbooks, 3 decimals).
const Q_05 = [2.772, 3.314, 3.633, 3.858, 4.03, 4.17, 4.286, 4.387, 4.474, 4.552, 4.622, 4.685, 4.743, 4.796, 4.845, 4.891, 4.934, 4.974, 5.012];
const Q_10 = [2.326, 2.902, 3.24, 3.478, 3.661, 3.808, 3.931, 4.037, 4.129, 4.211, 4.285, 4.351, 4.412, 4.468, 4.519, 4.568, 4.612, 4.654, 4.694];
// Demsar (2006), Table 5(a): q_alpha = q / sqrt 2 for the Nemenyi test, k = 2..10.
const DEMSAR_Q_05 = [1.96, 2.343, 2.569, 2.728, 2.85, 2.949, 3.031, 3.102, 3.164];
const DEMSAR_Q_10 = [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.78, 2.855, 2.92];

describe('average ranks', () => {
  test('1 is the best, ties share the mean of the ranks they span', () => {
    expect(Array.from(averageRanksOf([0.9, 0.7, 0.9, 0.1]))).toEqual([1.5, 3, 1.5, 4]);
    expect(Array.from(averageRanksOf([0.9, 0.7, 0.9, 0.1], 'lower'))).toEqual([3.5, 2, 3.5, 1]);
    expect(Array.from(averageRanksOf([5, 5, 5]))).toEqual([2, 2, 2]);
  });
  test("Demsar's Table 6: the AUCs as printed rank as the paper ranks them (voting aside: printed as a tie)", () => {
    DEMSAR_AUC.forEach((row, i) => {
      if (i === VOTING) expect(Array.from(averageRanksOf(row))).toEqual([4, 1, 2.5, 2.5]);
      else expect(Array.from(averageRanksOf(row))).toEqual(DEMSAR_RANKS[i]);
    });
  });
});

describe("Demsar's worked example (section 3.2.2: 4 classifiers x 14 data sets)", () => {
  // Ranks as data with lower = better reproduce the paper's ranks exactly.
  const textbook = friedmanTest(DEMSAR_RANKS, { better: 'lower', tieCorrection: false });
  test('average ranks 3.143, 2.000, 2.893, 1.964', () => {
    expect(textbook.averageRanks.map((r) => Number(r.toFixed(3)))).toEqual([3.143, 2.0, 2.893, 1.964]);
    expect(textbook.averageRanks[0]).toBeCloseTo(44 / 14, 12);
  });
  test('chi2_F = 9.28, F_F = 3.69 with 3 and 39 degrees of freedom; the F(3, 39) critical value 2.85 at alpha 0.05', () => {
    expect(textbook.chiSquare.toFixed(2)).toBe('9.28');
    expect(textbook.imanDavenportF.toFixed(2)).toBe('3.69');
    expect(textbook.imanDavenportDf).toEqual([3, 39]);
    expect(textbook.imanDavenportP).toBeLessThan(0.05);
    expect(fSurvival(2.85, 3, 39)).toBeCloseTo(0.05, 2);
    expect(textbook.tieCorrection).toBe(1);
  });
  test('the tie-corrected statistic (default) divides by 1 - 78/840 (ties: iris, lung cancer, mushroom, primary tumor)', () => {
    const corrected = friedmanTest(DEMSAR_RANKS, { better: 'lower' });
    expect(corrected.tieCorrection).toBeCloseTo(1 - 78 / 840, 15);
    expect(corrected.chiSquare).toBeCloseTo(textbook.chiSquare / (1 - 78 / 840), 12);
    expect(corrected.averageRanks).toEqual(textbook.averageRanks);
  });
  test('CD = 1.25 at alpha 0.05 (q = 2.569) and 1.12 at 0.10 (q = 2.291); C4.5+m+cf beats C4.5 only at 0.10', () => {
    expect(nemenyiQ(4, 0.05).toFixed(3)).toBe('2.569');
    expect(nemenyiQ(4, 0.1).toFixed(3)).toBe('2.291');
    const cd05 = nemenyiCriticalDifference(4, 14, 0.05);
    const cd10 = nemenyiCriticalDifference(4, 14, 0.1);
    expect(cd05.toFixed(2)).toBe('1.25');
    expect(cd10.toFixed(2)).toBe('1.12');
    const r = textbook.averageRanks;
    expect(r[0] - r[3]).toBeLessThan(cd05);
    expect(r[0] - r[3]).toBeGreaterThan(cd10);
    // At 0.05 all four form one group; at 0.10 {C4.5+m+cf, C4.5+m, C4.5+cf} and {C4.5+cf, C4.5}.
    expect(nemenyiGroups(r, cd05)).toEqual([[3, 1, 2, 0]]);
    expect(nemenyiGroups(r, cd10)).toEqual([[3, 1, 2], [2, 0]]);
  });
  test('Wilcoxon, C4.5+m against C4.5 (section 3.1.3, zeros split): R+ = 93, R- = 12, T = 12 < 21 (critical at 0.05)', () => {
    const w = wilcoxonSignedRank(DEMSAR_AUC.map((r) => r[1]), DEMSAR_AUC.map((r) => r[0]), { zeroMethod: 'zsplit' });
    expect(w.rankSumPositive).toBe(93);
    expect(w.rankSumNegative).toBe(12);
    expect(w.statistic).toBe(12);
    expect(w.p).toBeLessThan(0.05);
    expect(w.method).toBe('normal');
  });
});

describe('studentized range quantiles (df = infinity)', () => {
  test('equal the published table, k = 2..20, alpha 0.05 and 0.10 (3 decimals)', () => {
    for (let k = 2; k <= 20; k++) {
      expect(Math.abs(studentizedRangeQuantile(0.95, k) - Q_05[k - 2])).toBeLessThanOrEqual(5e-4 + 1e-12);
      expect(Math.abs(studentizedRangeQuantile(0.9, k) - Q_10[k - 2])).toBeLessThanOrEqual(5e-4 + 1e-12);
    }
  });
  test("q / sqrt 2 equal Demsar's Table 5 (k = 2..10; his values are the 3-decimal q divided and rounded again)", () => {
    for (let k = 2; k <= 10; k++) {
      expect(Math.abs(nemenyiQ(k, 0.05) - DEMSAR_Q_05[k - 2])).toBeLessThanOrEqual(1e-3);
      expect(Math.abs(nemenyiQ(k, 0.1) - DEMSAR_Q_10[k - 2])).toBeLessThanOrEqual(1e-3);
      expect(Number((Q_05[k - 2] / Math.SQRT2).toFixed(3))).toBe(DEMSAR_Q_05[k - 2]);
    }
  });
  test('k = 2: the normal quantile (q / sqrt 2 = z at 1 - alpha / 2)', () => {
    expect(nemenyiQ(2, 0.05)).toBeCloseTo(1.959963984540054, 8);
    expect(nemenyiQ(2, 0.1)).toBeCloseTo(1.6448536269514722, 8);
  });
});

describe('Holm and Wilcoxon against a control', () => {
  test('Holm: sorted p times (m - i + 1), monotone, capped at 1, in input order', () => {
    expect(holmAdjust([0.01, 0.04, 0.03, 0.005])).toEqual([0.03, 0.06, 0.06, 0.02]);
    expect(holmAdjust([0.5, 0.6])).toEqual([1, 1]);
    expect(holmAdjust([])).toEqual([]);
  });
  test('exact p-value on a hand case: all 5 differences positive -> p = 2 / 32', () => {
    const w = wilcoxonSignedRank([2, 3, 4, 5, 6], [1, 1, 1, 1, 1]);
    expect(w).toMatchObject({ n: 5, rankSumPositive: 15, rankSumNegative: 0, statistic: 0, method: 'exact' });
    expect(w.p).toBeCloseTo(2 / 32, 15);
  });
  test('every method against the control column, Holm-adjusted', () => {
    const m = DEMSAR_AUC;
    const out = compareWithControl(m, 0);
    expect(out.map((c) => c.method)).toEqual([1, 2, 3]);
    expect(holmAdjust(out.map((c) => c.wilcoxon.p))).toEqual(out.map((c) => c.pHolm));
    expect(out[0].meanDifference).toBeCloseTo(m.reduce((s, r) => s + r[1] - r[0], 0) / 14, 15);
  });
  test('bad input: exact messages', () => {
    expect(() => wilcoxonSignedRank([1, 2], [1])).toThrow('Expected 2 values (as many as x) for y but received Array(1) of type object');
    expect(() => holmAdjust([0.2, 2])).toThrow('Expected a p-value between 0 and 1 for pValues[1] but received 2 of type number');
    expect(() => compareWithControl(DEMSAR_AUC, 4)).toThrow('Expected a column index below 4 for control but received 4 of type number');
  });
});

describe('input checks', () => {
  test('friedmanTest: ragged, non-finite, too small', () => {
    expect(() => friedmanTest([[1, 2]])).toThrow('Expected at least 2 rows (blocks) for matrix but received Array(1) of type object');
    expect(() => friedmanTest([[1, 2], [1]])).toThrow('Expected 2 values (one per method) for matrix[1] but received Array(1) of type object');
    expect(() => friedmanTest([[1, 2], [1, NaN]])).toThrow('Expected a finite number for matrix[1][1] but received NaN of type number');
    expect(() => friedmanTest([[1], [2]])).toThrow('Expected at least 2 columns (methods) for matrix[0] but received Array(1) of type object');
    expect(() => nemenyiCriticalDifference(1, 5)).toThrow('Expected an integer >= 2 for methods but received 1 of type number');
    expect(() => nemenyiCriticalDifference(3, 5, 1.5)).toThrow('Expected a number between 0 and 1 for alpha but received 1.5 of type number');
  });
  test('degenerate blocks: every block tied -> chi2 0, p 1; identical rankings -> F infinite, p 0', () => {
    const tied = friedmanTest([[1, 1, 1], [2, 2, 2]]);
    expect([tied.chiSquare, tied.chiSquareP]).toEqual([0, 1]);
    const same = friedmanTest([[3, 2, 1], [3, 2, 1], [3, 2, 1]]);
    expect(same.chiSquare).toBeCloseTo(6, 12);
    expect([same.imanDavenportF, same.imanDavenportP]).toEqual([Infinity, 0]);
  });
});

const python = '/usr/bin/python3';
const hasScipy = fs.existsSync(python) && spawnSync(python, ['-c', 'import scipy.stats'], { stdio: 'ignore' }).status === 0;
if (!hasScipy) console.log('skipping the SciPy comparisons: /usr/bin/python3 lacks scipy (apt-get install python3-scipy)');

function scipy(script: string, input: unknown): unknown {
  const r = spawnSync(python, ['-c', script], { input: JSON.stringify(input), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function randomMatrix(rng: Random, blocks: number, methods: number, levels: number | null): number[][] {
  return Array.from({ length: blocks }, () => Array.from({ length: methods }, () => (levels ? rng.int(levels) : rng.next())));
}

(hasScipy ? describe : describe.skip)('SciPy as the oracle', () => {
  const rng = new Random(18);
  // Random data (no ties) and small integer data (many ties), several shapes; SciPy needs k >= 3.
  const cases = [
    ...[[5, 3], [14, 4], [30, 8], [3, 12]].map(([n, k]) => randomMatrix(rng, n, k, null)),
    ...[[6, 3], [14, 4], [25, 6], [10, 10]].map(([n, k]) => randomMatrix(rng, n, k, 3)),
    DEMSAR_AUC,
  ];
  test('friedmanchisquare: statistic and p to 1e-9; Iman-Davenport F and its p = f.sf to 1e-9', () => {
    const expected = scipy(
      `import json, sys
from scipy import stats
out = []
for m in json.load(sys.stdin):
    cols = list(zip(*m))
    r = stats.friedmanchisquare(*cols)
    n, k = len(m), len(cols)
    ff = (n - 1) * r.statistic / (n * (k - 1) - r.statistic)
    out.append([float(r.statistic), float(r.pvalue), float(ff), float(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))])
print(json.dumps(out))`,
      cases,
    ) as number[][];
    cases.forEach((m, i) => {
      const r = friedmanTest(m);
      const [chi, p, ff, pf] = expected[i];
      expect(Math.abs(r.chiSquare - chi)).toBeLessThan(1e-9);
      expect(Math.abs(r.chiSquareP - p)).toBeLessThan(1e-9);
      expect(Math.abs(r.imanDavenportF - ff)).toBeLessThan(1e-9);
      // jStat's incomplete beta stops its continued fraction at a relative step of 3e-7 (docs/statistics.md).
      expect(Math.abs(r.imanDavenportP - pf)).toBeLessThan(1e-9);
    });
  });
  test('wilcoxon: exact without ties (n <= 50), normal approximation with ties and zeros (zsplit too)', () => {
    const pairs: { x: number[]; y: number[]; method: string; zero: string }[] = [];
    for (const n of [6, 14, 30, 50]) pairs.push({ x: Array.from({ length: n }, () => rng.next()), y: Array.from({ length: n }, () => rng.next()), method: 'exact', zero: 'wilcox' });
    for (const n of [12, 40, 80]) {
      const x = Array.from({ length: n }, () => rng.int(6));
      const y = Array.from({ length: n }, () => rng.int(6));
      pairs.push({ x, y, method: 'approx', zero: 'wilcox' }, { x, y, method: 'approx', zero: 'zsplit' });
    }
    const expected = scipy(
      `import json, sys
from scipy import stats
out = []
for c in json.load(sys.stdin):
    r = stats.wilcoxon(c['x'], c['y'], zero_method=c['zero'], method=c['method'])
    out.append([float(r.statistic), float(r.pvalue)])
print(json.dumps(out))`,
      pairs,
    ) as number[][];
    pairs.forEach((c, i) => {
      const w = wilcoxonSignedRank(c.x, c.y, { zeroMethod: c.zero as 'wilcox' | 'zsplit' });
      expect(w.method).toBe(c.method === 'exact' ? 'exact' : 'normal');
      expect(w.statistic).toBeCloseTo(expected[i][0], 9);
      expect(Math.abs(w.p - expected[i][1])).toBeLessThan(1e-9);
    });
  });
  test('studentized_range.ppf (df = inf) to 1e-8, k = 2..20', () => {
    const expected = scipy(
      `import json, math, sys
from scipy import stats
print(json.dumps([[float(stats.studentized_range.ppf(1 - a, k, math.inf)) for k in range(2, 21)] for a in (0.05, 0.1)]))`,
      null,
    ) as number[][];
    for (let k = 2; k <= 20; k++) {
      expect(Math.abs(studentizedRangeQuantile(0.95, k) - expected[0][k - 2])).toBeLessThan(1e-8);
      expect(Math.abs(studentizedRangeQuantile(0.9, k) - expected[1][k - 2])).toBeLessThan(1e-8);
    }
  });
});

/** The bootstrap written the slow, obvious way: draw the same indices, then count all positive-negative pairs. */
function naiveBootstrap(scores: number[], labels: number[], resamples: number, seed: number): number[] {
  const pos = scores.filter((_, i) => labels[i] === 1);
  const neg = scores.filter((_, i) => labels[i] === 0);
  const rng = new Random(seed).fork('bootstrap-auroc');
  const out: number[] = [];
  for (let b = 0; b < resamples; b++) {
    const p = pos.map(() => pos[rng.int(pos.length)]);
    const n = neg.map(() => neg[rng.int(neg.length)]);
    let area = 0;
    for (const a of p) for (const c of n) area += a > c ? 1 : a === c ? 0.5 : 0;
    out.push(area / (p.length * n.length));
  }
  return out.sort((a, b) => a - b);
}

describe('bootstrap interval of the image AUROC', () => {
  const rng = new Random(7);
  const labels = Array.from({ length: 60 }, (_, i) => (i % 3 === 0 ? 1 : 0));
  // Scores rounded to one decimal: many ties, as detectors with saturated scores give.
  const scores = labels.map((l) => Math.round((rng.normal() + 1.2 * l) * 10) / 10);

  test('the point estimate is the AUROC of lib/metrics (trapezoid, ties merged)', async () => {
    const b = (await bootstrapAuroc(scores, labels, { seed: 1 }))!;
    const ref = await binaryClassificationMetrics(Float64Array.from(scores), Uint8Array.from(labels));
    expect(b.estimate).toBeCloseTo(ref.auroc, 12);
  });
  test('equals the obvious resample-and-count-pairs bootstrap with the same draws', async () => {
    const b = (await bootstrapAuroc(scores, labels, { seed: 3, resamples: 200 }))!;
    const sorted = naiveBootstrap(scores, labels, 200, 3);
    const at = (q: number): number => {
      const pos = q * 199;
      const lo = Math.floor(pos);
      return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * (pos - lo);
    };
    expect(b.low).toBeCloseTo(at(0.025), 12);
    expect(b.high).toBeCloseTo(at(0.975), 12);
  });
  test('deterministic for a seed, different for another; contains the estimate; 1,000 resamples at 95 % by default', async () => {
    const a = (await bootstrapAuroc(scores, labels, { seed: 5 }))!;
    const again = (await bootstrapAuroc(Float64Array.from(scores), Uint8Array.from(labels), { seed: 5 }))!;
    const other = (await bootstrapAuroc(scores, labels, { seed: 6 }))!;
    expect(again).toEqual(a);
    expect([other.low, other.high]).not.toEqual([a.low, a.high]);
    expect(a).toMatchObject({ resamples: 1000, level: 0.95, seed: 5 });
    for (const s of [0, 1, 2, 3, 4]) {
      const r = (await bootstrapAuroc(scores, labels, { seed: s }))!;
      expect(r.low).toBeLessThanOrEqual(r.estimate);
      expect(r.high).toBeGreaterThanOrEqual(r.estimate);
      expect(r.high - r.low).toBeGreaterThan(0);
      expect(r.standardError).toBeGreaterThan(0);
    }
    const narrow = (await bootstrapAuroc(scores, labels, { seed: 5, level: 0.5 }))!;
    expect(narrow.high - narrow.low).toBeLessThan(a.high - a.low);
  });
  test('a perfect detector gives [1, 1]; one class only gives null', async () => {
    expect(await bootstrapAuroc([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1])).toMatchObject({ estimate: 1, low: 1, high: 1, standardError: 0 });
    expect(await bootstrapAuroc([0.1, 0.2], [0, 0])).toBeNull();
  });
  test('an aborted signal stops it with the project AbortError', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(bootstrapAuroc(scores, labels, { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
  });
  test('bad input: exact messages', async () => {
    await expect(bootstrapAuroc([0.1, NaN], [0, 1])).rejects.toThrow('Expected a finite number for scores[1] but received NaN of type number');
    await expect(bootstrapAuroc([0.1, 0.2], [0, 2])).rejects.toThrow('Expected 0 or 1 for labels[1] but received 2 of type number');
    await expect(bootstrapAuroc([0.1, 0.2], [0])).rejects.toThrow('Expected 2 labels (one per score) for labels but received Array(1) of type object');
    await expect(bootstrapAuroc([0.1, 0.2], [0, 1], { resamples: 1 })).rejects.toThrow('Expected an integer between 2 and 1000000 for resamples but received 1 of type number');
  });
});

describe('CD diagram', () => {
  test('one hanging line per method, the CD bar, and a bar per group of not significantly different methods', () => {
    const ranks = friedmanTest(DEMSAR_RANKS, { better: 'lower', tieCorrection: false }).averageRanks;
    const cd = nemenyiCriticalDifference(4, 14, 0.1);
    const svg = cdDiagramSvg({ methods: ['C4.5', 'C4.5+m', 'C4.5+cf', 'C4.5+m+cf'], averageRanks: ranks, cd, alpha: 0.1, heading: 'Demsar Fig. 2', title: 't' });
    expect(svg.match(/class="cd-method"/g)).toHaveLength(4);
    expect(svg.match(/class="cd-group"/g)).toHaveLength(2);
    expect(svg).toContain('CD = 1.12 (α = 0.1)');
    expect(svg).toContain('C4.5+m+cf (1.96)');
    expect(svg.startsWith('<svg ')).toBe(true);
  });
});

describe('results store: bootstrap intervals beside the metrics', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-stats-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const interval = { estimate: 0.9, low: 0.8, high: 0.97, level: 0.95, resamples: 1000, seed: 0, standardError: 0.04 };

  test('rows round-trip their intervals; rows without them read as null', () => {
    const store = new ResultsStore(path.join(tmp, 'new', 'results.db'));
    const withInterval = makeRow({ method: 'patchcore', metrics: { imageAUROC: 0.9 } });
    withInterval.intervals = { imageAUROC: interval };
    const without = makeRow({ method: 'padim', metrics: { imageAUROC: 0.8 } });
    store.insert(withInterval);
    store.insert(without);
    const rows = store.rows();
    expect(rows[0].intervals).toEqual({ imageAUROC: interval });
    expect(rows[1].intervals).toBeNull();
    store.close();
  });

  test('a store written before the intervals column is read as it is, and gains the column when opened for writing', () => {
    const file = path.join(tmp, 'old', 'results.db');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const old = makeRow({ method: 'spade', metrics: { imageAUROC: 0.7 } });
    // The schema of version 1, as earlier releases wrote it.
    const db = new Database(file);
    db.exec(`CREATE TABLE experiments (key TEXT PRIMARY KEY, code_version TEXT NOT NULL, dataset TEXT NOT NULL, category TEXT NOT NULL,
      method TEXT NOT NULL, setting TEXT NOT NULL, seed INTEGER NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL, efficiency TEXT NOT NULL,
      manifest TEXT NOT NULL, continual TEXT, heatmaps TEXT NOT NULL, notes TEXT NOT NULL, machine TEXT NOT NULL, started_at TEXT NOT NULL,
      finished_at TEXT NOT NULL); PRAGMA user_version = 1;`);
    db.prepare('INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
      old.key, old.codeVersion, 'mvtec', 'bottle', 'spade', 'vanilla', 0, JSON.stringify(old.config), JSON.stringify(old.metrics),
      JSON.stringify(old.efficiency), JSON.stringify(old.manifest), null, '[]', '[]', JSON.stringify(old.machine), old.startedAt, old.finishedAt,
    );
    db.close();
    const reader = new ResultsStore(file, { readonly: true });
    expect(reader.rows().map((r) => [r.config.method, r.metrics.imageAUROC, r.intervals])).toEqual([['spade', 0.7, null]]);
    reader.close();
    const writer = new ResultsStore(file);
    const fresh = makeRow({ method: 'patchcore', metrics: { imageAUROC: 0.9 } });
    fresh.intervals = { imageAUROC: interval };
    expect(writer.insert(fresh)).toBe(true);
    expect(writer.rows().map((r) => r.intervals)).toEqual([null, { imageAUROC: interval }]);
    writer.close();
    const check = new Database(file, { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(2);
    check.close();
  });
});
