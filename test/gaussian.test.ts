import { spawnSync } from 'child_process';

import { gaussianFit, gaussianStateBytes, mahalanobisDistances } from '../bindings/gaussian';
import { mulberry32 } from '../lib/settings/random';

/** A seeded generator for test data (mulberry32). */
const rng = mulberry32;

/** Correlated embeddings [n, c, p]: a random mixing of independent noise, different per position. */
function embeddings(n: number, c: number, p: number, seed: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n * c * p);
  const mix = Array.from({ length: p }, () => Array.from({ length: c * c }, () => r() - 0.5));
  for (let i = 0; i < n; i++) {
    const z = Array.from({ length: c }, () => r() * 2 - 1);
    for (let pos = 0; pos < p; pos++) {
      for (let a = 0; a < c; a++) {
        let v = pos * 0.1;
        for (let b = 0; b < c; b++) v += mix[pos][a * c + b] * z[b];
        out[(i * c + a) * p + pos] = v + 0.3 * (r() - 0.5);
      }
    }
  }
  return out;
}

/** Plain reference: np.cov (divisor n - 1) + eps I, Gauss-Jordan inverse, sqrt(d^T S^-1 d). */
function referenceDistances(train: Float32Array, n: number, test: Float32Array, m: number, c: number, p: number, eps: number): number[] {
  const out: number[] = new Array(m * p);
  for (let pos = 0; pos < p; pos++) {
    const x = (i: number, a: number, src: Float32Array): number => src[(i * c + a) * p + pos];
    const mu = Array.from({ length: c }, (_, a) => {
      let s = 0;
      for (let i = 0; i < n; i++) s += x(i, a, train);
      return s / n;
    });
    const cov = Array.from({ length: c }, (_, a) =>
      Array.from({ length: c }, (_, b) => {
        let s = 0;
        for (let i = 0; i < n; i++) s += (x(i, a, train) - mu[a]) * (x(i, b, train) - mu[b]);
        return s / (n - 1) + (a === b ? eps : 0);
      }),
    );
    // Gauss-Jordan with partial pivoting.
    const aug = cov.map((row, i) => [...row, ...Array.from({ length: c }, (_, j) => (i === j ? 1 : 0))]);
    for (let col = 0; col < c; col++) {
      let piv = col;
      for (let r = col + 1; r < c; r++) if (Math.abs(aug[r][col]) > Math.abs(aug[piv][col])) piv = r;
      [aug[col], aug[piv]] = [aug[piv], aug[col]];
      const d = aug[col][col];
      for (let k = 0; k < 2 * c; k++) aug[col][k] /= d;
      for (let r = 0; r < c; r++) {
        if (r === col) continue;
        const f = aug[r][col];
        for (let k = 0; k < 2 * c; k++) aug[r][k] -= f * aug[col][k];
      }
    }
    const inv = aug.map((row) => row.slice(c));
    for (let t = 0; t < m; t++) {
      const d = Array.from({ length: c }, (_, a) => x(t, a, test) - mu[a]);
      let q = 0;
      for (let a = 0; a < c; a++) for (let b = 0; b < c; b++) q += d[a] * inv[a][b] * d[b];
      out[t * p + pos] = Math.sqrt(q);
    }
  }
  return out;
}

describe('PaDiM Gaussian statistics', () => {
  test('means, Cholesky factors and distances match a plain TypeScript reference', async () => {
    const n = 40, m = 7, c = 12, p = 21;
    const train = embeddings(n, c, p, 1);
    const test = embeddings(m, c, p, 2);
    const state = await gaussianFit(train, { n, channels: c, positions: p });
    expect(state.mean.length).toBe(p * c);
    expect(state.cholesky.length).toBe((p * c * (c + 1)) / 2);
    // mean at position 5, channel 3
    let s = 0;
    for (let i = 0; i < n; i++) s += train[(i * c + 3) * p + 5];
    expect(state.mean[5 * c + 3]).toBeCloseTo(s / n, 5);
    const dist = await mahalanobisDistances(state, test, { m });
    const expected = referenceDistances(train, n, test, m, c, p, 0.01);
    for (let i = 0; i < expected.length; i++) expect(Math.abs(dist[i] - expected[i]) / expected[i]).toBeLessThan(2e-5);
    // a training image is closer to its own distribution than a shifted one
    const shifted = test.map((v) => v + 1);
    const far = await mahalanobisDistances(state, shifted, { m });
    expect(far.reduce((a, b) => a + b, 0)).toBeGreaterThan(dist.reduce((a, b) => a + b, 0));
  });

  test('a hand-computed case: one channel, variance known', async () => {
    // values 1, 2, 3, 4 at one position: mean 2.5, unbiased variance 5/3, + 0.01
    const state = await gaussianFit(new Float32Array([1, 2, 3, 4]), { n: 4, channels: 1, positions: 1 });
    expect(state.mean[0]).toBe(2.5);
    expect(state.cholesky[0]).toBeCloseTo(Math.sqrt(5 / 3 + 0.01), 6);
    const d = await mahalanobisDistances(state, new Float32Array([4.5]), { m: 1 });
    expect(d[0]).toBeCloseTo(2 / Math.sqrt(5 / 3 + 0.01), 6);
  });

  test('n = 1 gives regularization * I', async () => {
    const state = await gaussianFit(new Float32Array([3, -1]), { n: 1, channels: 2, positions: 1, regularization: 0.25 });
    expect(Array.from(state.cholesky)).toEqual([0.5, 0, 0.5]);
    const d = await mahalanobisDistances(state, new Float32Array([3, 0]), { m: 1 });
    expect(d[0]).toBeCloseTo(2, 6);
  });

  test('is deterministic and independent of the thread count', () => {
    const script = `
      const g = require('./dist/bindings/gaussian');
      const x = new Float32Array(30 * 20 * 50).map((_, i) => Math.sin(i * 0.37) + Math.cos(i * 0.011));
      g.gaussianFit(x, { n: 30, channels: 20, positions: 50 }).then(async (s) => {
        const d = await g.mahalanobisDistances(s, x.subarray(0, 5 * 20 * 50), { m: 5 });
        const h = require('crypto').createHash('sha256');
        h.update(Buffer.from(s.cholesky.buffer)); h.update(Buffer.from(d.buffer)); console.log(h.digest('hex')); });`;
    const run = (threads: string): string =>
      spawnSync(process.execPath, ['-e', script], { cwd: `${__dirname}/..`, env: { ...process.env, IMIAD_THREADS: threads }, encoding: 'utf8' }).stdout.trim();
    const one = run('1');
    expect(one).toMatch(/^[0-9a-f]{64}$/);
    expect(run('4')).toBe(one);
  });

  test('reports progress', async () => {
    const calls: number[] = [];
    await gaussianFit(embeddings(5, 4, 40, 3), { n: 5, channels: 4, positions: 40, onProgress: (done, total) => calls.push(done / total) });
    expect(calls[calls.length - 1]).toBe(1);
  });

  test('a state over the memory budget is an error that says how many bytes are needed', async () => {
    expect(gaussianStateBytes(550, 3136)).toBe(4 * 3136 * (550 + 151525));
    await expect(gaussianFit(new Float32Array(2 * 3 * 4), { n: 2, channels: 3, positions: 4, memoryBudgetBytes: 100 })).rejects.toMatchObject({
      code: 'ERR_IMIAD_MEMORY',
      message:
        'The Gaussian statistics for 3 channels x 4 positions need 144 bytes (mean 48 + Cholesky factors 96) but the memory budget is 100 bytes',
    });
  });

  test('rejects bad arguments with exact messages', async () => {
    await expect(gaussianFit(new Float32Array(5), { n: 2, channels: 3, positions: 1 })).rejects.toMatchObject({
      code: 'ERR_IMIAD_DIMS',
      message: 'Expected length of embeddings to be n * channels * positions (6) but received 5 of type number',
    });
    await expect(gaussianFit(new Float32Array([1, NaN]), { n: 2, channels: 1, positions: 1 })).rejects.toMatchObject({
      code: 'ERR_IMIAD_NOT_FINITE',
      message: 'Expected finite numbers in embeddings but received NaN of type number at index 1',
    });
    const state = await gaussianFit(new Float32Array([1, 2]), { n: 2, channels: 1, positions: 1 });
    await expect(mahalanobisDistances(state, new Float32Array(3), { m: 2 })).rejects.toMatchObject({
      code: 'ERR_IMIAD_DIMS',
      message: 'Expected length of embeddings to be m * channels * positions (2) but received 3 of type number',
    });
  });
});
