import { spawnSync } from 'child_process';

import { defaultStartIndex, greedyCoreset, greedyCoresetPlain, splitmix64 } from '../bindings/coreset';
import { cpuAddon, packageRoot } from '../bindings/load';
import { cudaUnavailableError, probeCuda } from '../bindings/device';
import { randomFloats } from '../bench/common';

// Where no GPU is usable, device: 'cuda' throws with bindings/device.ts's reason (test/cuda.test.ts pins it down).
const cudaProbe = probeCuda();

const root = packageRoot();
const f = Math.fround;

/** Deterministic test data: uniform floats in [-0.5, 0.5). */
const uniform = (n: number, seed: number): Float32Array => randomFloats(n, seed);

/** Points around a few centres, most variance in two directions: where the fast kernel prunes a lot. */
function clustered(rows: number, dims: number, seed: number): Float32Array {
  const noise = uniform(rows * dims, seed);
  const centres = uniform(7 * dims, seed + 1);
  const out = new Float32Array(rows * dims);
  for (let i = 0; i < rows; i++) {
    const k = i % 7;
    for (let j = 0; j < dims; j++) out[i * dims + j] = centres[k * dims + j] * 10 + noise[i * dims + j] * (j < 2 ? 1 : 0.05);
  }
  return out;
}

/**
 * The kernel's distance: float32 inputs, double arithmetic (JavaScript's own), element j accumulated in lane j % 16,
 * then lanes summed pairwise (j += j+8, j += j+4, j += j+2, j += j+1).
 */
function squaredDistance(x: Float32Array, a: number, b: number, dims: number): number {
  const lanes = new Array<number>(16).fill(0);
  for (let j = 0; j < dims; j++) {
    const d = x[a * dims + j] - x[b * dims + j];
    lanes[j % 16] += d * d;
  }
  for (let w = 8; w >= 1; w >>= 1) for (let j = 0; j < w; j++) lanes[j] += lanes[j + w];
  return lanes[0];
}

/** The plain greedy k-center loop, as DESIGN.md defines it. */
function referenceCoreset(x: Float32Array, dims: number, count: number, start: number): number[] {
  const rows = x.length / dims;
  const mind = new Array<number>(rows).fill(Infinity);
  const selected = [start];
  const taken = new Uint8Array(rows);
  taken[start] = 1;
  let last = start;
  while (selected.length < count) {
    let best = -1;
    for (let i = 0; i < rows; i++) {
      if (taken[i]) continue;
      mind[i] = Math.min(mind[i], squaredDistance(x, i, last, dims));
      if (best < 0 || mind[i] > mind[best]) best = i;
    }
    selected.push(best);
    taken[best] = 1;
    last = best;
  }
  return selected;
}

const MASK64 = (1n << 64n) - 1n;

/** The documented projection: W from xoshiro256** seeded by splitmix64, then sequential float sums. */
function referenceProjection(x: Float32Array, dims: number, outDims: number, seed: number): Float32Array {
  let sm = BigInt(seed);
  const s: bigint[] = [];
  for (let k = 0; k < 4; k++) {
    s.push(splitmix64(sm));
    sm = (sm + 0x9e3779b97f4a7c15n) & MASK64;
  }
  const rotl = (v: bigint, k: bigint): bigint => ((v << k) | (v >> (64n - k))) & MASK64;
  const scale = f(1 / Math.sqrt(dims));
  const w = new Float32Array(dims * outDims);
  for (let i = 0; i < w.length; i++) {
    const r = (rotl((s[1] * 5n) & MASK64, 7n) * 9n) & MASK64;
    const t = (s[1] << 17n) & MASK64;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45n);
    const u = f((Number(r >> 40n) - 8388608) / 8388608);
    w[i] = f(u * scale);
  }
  const rows = x.length / dims;
  const out = new Float32Array(rows * outDims);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDims; o++) {
      let acc = 0;
      for (let j = 0; j < dims; j++) acc = f(acc + f(x[r * dims + j] * w[j * outDims + o]));
      out[r * outDims + o] = acc;
    }
  }
  return out;
}

describe('greedyCoreset: exactness', () => {
  const shapes: Array<[number, number, number, string]> = [
    [1, 1, 1, 'one row'],
    [300, 37, 30, 'odd dims'],
    [400, 16, 400, 'count = rows'],
    [250, 128, 25, 'wide rows'],
    [1200, 3, 150, 'low dims'],
    [600, 5, 1, 'count = 1'],
  ];
  test.each(shapes)('uniform %i x %i, count %i (%s) equals the TypeScript reference', async (rows, dims, count) => {
    const x = uniform(rows * dims, rows + dims);
    const start = (rows * 31) % rows;
    const got = await greedyCoreset(x, { dims, count, startIndex: start });
    expect(Array.from(got)).toEqual(referenceCoreset(x, dims, count, start));
  });

  test('clustered data (heavy pruning) equals the reference and the plain loop', async () => {
    const x = clustered(3000, 12, 5);
    const got = await greedyCoreset(x, { dims: 12, count: 300, startIndex: 11 });
    expect(Array.from(got)).toEqual(referenceCoreset(x, 12, 300, 11));
    expect(Array.from(await greedyCoresetPlain(x, { dims: 12, count: 300, startIndex: 11 }))).toEqual(Array.from(got));
  });

  test('duplicate rows and ties: ties go to the smaller index, every row once when count = rows', async () => {
    // Integer grid points, many repeated: lots of exactly equal distances.
    const rows = 500;
    const x = new Float32Array(rows * 2);
    const r = uniform(rows * 2, 99);
    for (let i = 0; i < x.length; i++) x[i] = Math.floor((r[i] + 0.5) * 4);
    for (const count of [1, 8, 16, 17, 200, rows]) {
      const got = Array.from(await greedyCoreset(x, { dims: 2, count, startIndex: 3 }));
      expect(got).toEqual(referenceCoreset(x, 2, count, 3));
      expect(new Set(got).size).toBe(count);
    }
  });

  test('hand-worked cases', async () => {
    expect(Array.from(await greedyCoreset(new Float32Array([0, 10, 2, 8, 5]), { dims: 1, count: 5, startIndex: 0 }))).toEqual([
      0, 1, 4, 2, 3,
    ]);
    expect(Array.from(await greedyCoreset(new Float32Array([0, 2, -2]), { dims: 1, count: 3, startIndex: 0 }))).toEqual([0, 1, 2]);
    const square = new Float32Array([0, 0, 4, 0, 0, 4, 4, 4, 2, 2]);
    expect(Array.from(await greedyCoreset(square, { dims: 2, count: 5, startIndex: 0 }))).toEqual([0, 3, 1, 2, 4]);
  });

  test('default start row comes from the seed: splitmix64(seed) mod rows', async () => {
    // splitmix64's first output for seed 0 is 0xe220a8397b1dcdaf (the generator's published test value).
    expect(splitmix64(0n)).toBe(0xe220a8397b1dcdafn);
    expect(defaultStartIndex(0, 1000)).toBe(Number(0xe220a8397b1dcdafn % 1000n));
    const x = uniform(100 * 4, 3);
    for (const seed of [0, 1, 12345]) {
      const got = await greedyCoreset(x, { dims: 4, count: 3, seed });
      expect(got[0]).toBe(defaultStartIndex(seed, 100));
    }
    expect((await greedyCoreset(x, { dims: 4, count: 1 }))[0]).toBe(defaultStartIndex(0, 100));
  });
});

describe('greedyCoreset: projection', () => {
  test('projected mode = exact mode on the documented seeded projection', async () => {
    const x = uniform(300 * 40, 8);
    const projected = referenceProjection(x, 40, 9, 77);
    const got = await greedyCoreset(x, { dims: 40, count: 40, projectionDims: 9, seed: 77, startIndex: 2 });
    expect(Array.from(got)).toEqual(referenceCoreset(projected, 9, 40, 2));
  });

  test('deterministic under a seed, and the seed matters', async () => {
    const x = clustered(2000, 64, 4);
    const opts = { dims: 64, count: 200, projectionDims: 8, startIndex: 0 };
    const a = await greedyCoreset(x, { ...opts, seed: 5 });
    const b = await greedyCoreset(x, { ...opts, seed: 5 });
    const c = await greedyCoreset(x, { ...opts, seed: 6 });
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
  });
});

describe('greedyCoreset: threads, progress, cancellation', () => {
  test('the selection does not depend on IMIAD_THREADS', async () => {
    const script = `
      const { greedyCoreset } = require('./dist/bindings/coreset');
      const { randomFloats: s } = require('./dist/bench/common');
      const x = s(40000 * 24, 21);
      for (let i = 0; i < x.length; i++) x[i] = x[i] * (i % 24 < 3 ? 10 : 1);
      Promise.all([
        greedyCoreset(x, { dims: 24, count: 2000, startIndex: 1, device: 'cpu' }),
        greedyCoreset(x, { dims: 24, count: 300, projectionDims: 6, seed: 3, device: 'cpu' }),
      ]).then((r) => console.log(JSON.stringify(r.map((a) => Array.from(a)))));`;
    const outputs = ['1', '2', '5'].map((threads) => {
      const r = spawnSync(process.execPath, ['-e', script], {
        cwd: root,
        env: { ...process.env, IMIAD_THREADS: threads },
        encoding: 'utf8',
        maxBuffer: 1 << 26,
      });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      return r.stdout.trim();
    });
    expect(outputs[0].length).toBeGreaterThan(1000);
    expect(outputs[1]).toBe(outputs[0]);
    expect(outputs[2]).toBe(outputs[0]);
  });

  test('progress reports (selected, count), ending at (count, count)', async () => {
    const events: Array<[number, number]> = [];
    const x = uniform(5000 * 8, 2);
    await greedyCoreset(x, { dims: 8, count: 500, onProgress: (done, total) => events.push([done, total]) });
    // Events queued while the event loop is busy arrive coalesced (the latest one), so only bounds are certain.
    expect(events.length).toBeGreaterThanOrEqual(1);
    expect(events.length).toBeLessThanOrEqual(101);
    expect(events[events.length - 1]).toEqual([500, 500]);
    for (let i = 1; i < events.length; i++) {
      expect(events[i][0]).toBeGreaterThan(events[i - 1][0]);
      expect(events[i][1]).toBe(500);
    }
  });

  test('an AbortSignal stops the kernel with an AbortError', async () => {
    const x = uniform(60000 * 64, 6);
    const controller = new AbortController();
    let progressAfterAbort = 0;
    const promise = greedyCoreset(x, {
      dims: 64,
      count: 6000,
      signal: controller.signal,
      onProgress: (done) => {
        if (controller.signal.aborted) progressAfterAbort = done;
        else if (done > 1) controller.abort();
      },
    });
    await expect(promise).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', message: 'The operation was aborted' });
    expect(progressAfterAbort).toBeLessThan(6000);
  });

  test('an already aborted signal rejects before any work', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(greedyCoreset(new Float32Array(4), { dims: 1, count: 2, signal: controller.signal })).rejects.toMatchObject({
      name: 'AbortError',
      code: 'ABORT_ERR',
    });
  });
});

describe('greedyCoreset: argument errors', () => {
  const x = new Float32Array([1, 2, 3, 4]);
  const cases: Array<[string, () => Promise<unknown>, string, string, string]> = [
    ['options missing', () => greedyCoreset(x, undefined as never), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected object for options but received undefined of type undefined'],
    ['features an Array', () => greedyCoreset([1, 2] as never, { dims: 1, count: 1 }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected Float32Array for features but received Array(2) of type object'],
    ['features a Float64Array', () => greedyCoreset(new Float64Array(2) as never, { dims: 1, count: 1 }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected Float32Array for features but received Float64Array(2) of type object'],
    ['features empty', () => greedyCoreset(new Float32Array(0), { dims: 1, count: 1 }), 'RangeError', 'ERR_IMIAD_EMPTY', 'Expected non-empty Float32Array for features but received Float32Array(0) of type object'],
    ['length not a multiple of dims', () => greedyCoreset(x, { dims: 3, count: 1 }), 'RangeError', 'ERR_IMIAD_DIMS', 'Expected length of features to be a multiple of dims (3) but received 4 of type number'],
    ['NaN in features', () => greedyCoreset(new Float32Array([0, 1, NaN, 2]), { dims: 2, count: 1 }), 'RangeError', 'ERR_IMIAD_NOT_FINITE', 'Expected finite numbers in features but received NaN of type number at index 2'],
    ['Infinity in features', () => greedyCoreset(new Float32Array([0, -Infinity]), { dims: 1, count: 1 }), 'RangeError', 'ERR_IMIAD_NOT_FINITE', 'Expected finite numbers in features but received -Infinity of type number at index 1'],
    ['dims 0', () => greedyCoreset(x, { dims: 0, count: 1 }), 'RangeError', 'ERR_IMIAD_DIMS', 'Expected positive integer for dims but received 0 of type number'],
    ['dims a string', () => greedyCoreset(x, { dims: '2' as never, count: 1 }), 'TypeError', 'ERR_IMIAD_DIMS', 'Expected positive integer for dims but received 2 of type string'],
    ['count 0', () => greedyCoreset(x, { dims: 2, count: 0 }), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 1 and 2 for count but received 0 of type number'],
    ['count above rows', () => greedyCoreset(x, { dims: 2, count: 3 }), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 1 and 2 for count but received 3 of type number'],
    ['count fractional', () => greedyCoreset(x, { dims: 2, count: 1.5 }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected integer between 1 and 2 for count but received 1.5 of type number'],
    ['count NaN', () => greedyCoreset(x, { dims: 2, count: NaN }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected integer between 1 and 2 for count but received NaN of type number'],
    ['count Infinity', () => greedyCoreset(x, { dims: 2, count: Infinity }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected integer between 1 and 2 for count but received Infinity of type number'],
    ['count missing', () => greedyCoreset(x, { dims: 2 } as never), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected integer between 1 and 2 for count but received undefined of type undefined'],
    ['projectionDims negative', () => greedyCoreset(x, { dims: 2, count: 1, projectionDims: -1 }), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 0 and 65536 for projectionDims but received -1 of type number'],
    ['seed negative', () => greedyCoreset(x, { dims: 2, count: 1, seed: -1 }), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 0 and 9007199254740991 for seed but received -1 of type number'],
    ['seed unsafe', () => greedyCoreset(x, { dims: 2, count: 1, seed: 2 ** 53 }), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 0 and 9007199254740991 for seed but received 9007199254740992 of type number'],
    ['seed NaN', () => greedyCoreset(x, { dims: 2, count: 1, seed: NaN }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected integer between 0 and 9007199254740991 for seed but received NaN of type number'],
    ['startIndex out of range', () => greedyCoreset(x, { dims: 2, count: 1, startIndex: 2 }), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 0 and 1 for startIndex but received 2 of type number'],
    ['startIndex -Infinity', () => greedyCoreset(x, { dims: 2, count: 1, startIndex: -Infinity }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected integer between 0 and 1 for startIndex but received -Infinity of type number'],
    ['device unknown', () => greedyCoreset(x, { dims: 2, count: 1, device: 'gpu' as never }), 'TypeError', 'ERR_IMIAD_ARGUMENT', "Expected one of 'auto', 'cpu', 'cuda' for device but received gpu of type string"],
    ...(cudaProbe.usable ? [] : [['device cuda without a usable GPU', () => greedyCoreset(x, { dims: 2, count: 1, device: 'cuda' }), 'Error', 'ERR_IMIAD_CUDA_UNAVAILABLE', cudaUnavailableError(cudaProbe.reason).message]] as Array<[string, () => Promise<unknown>, string, string, string]>),
    ['signal not an AbortSignal', () => greedyCoreset(x, { dims: 2, count: 1, signal: {} as never }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected AbortSignal for signal but received Object of type object'],
    ['onProgress not a function', () => greedyCoreset(x, { dims: 2, count: 1, onProgress: 1 as never }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected function for onProgress but received 1 of type number'],
  ];
  test.each(cases)('%s', async (_name, call, kind, code, message) => {
    const err = await call().then(
      () => undefined,
      (e: unknown) => e as Error & { code: string },
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.constructor.name).toBe(kind);
    expect(err!.code).toBe(code);
    expect(err!.message).toBe(message);
  });

  test("'cpu' and 'auto' run on the CPU", async () => {
    expect(Array.from(await greedyCoreset(x, { dims: 2, count: 2, startIndex: 1, device: 'cpu' }))).toEqual([1, 0]);
    expect(Array.from(await greedyCoreset(x, { dims: 2, count: 2, startIndex: 1, device: 'auto' }))).toEqual([1, 0]);
  });

  test('the raw addon guards its arguments too (TypeError/RangeError with a code, never a crash)', async () => {
    const raw = cpuAddon<{ greedyCoreset: (...args: unknown[]) => Promise<Uint32Array> }>().greedyCoreset;
    expect(() => raw(new Float64Array(4), 2, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_ARGUMENT', message: 'Expected Float32Array for features' }));
    expect(() => raw(x, 3, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_DIMS' }));
    expect(() => raw(x, 2, 3, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_RANGE', message: 'Expected integer between 1 and 2 for count' }));
    expect(() => raw(x, 2, 1, 0, -1, 0)).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_RANGE' }));
    expect(() => raw(x, 2, 1, 0, 0, 2)).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_RANGE', message: 'Expected integer between 0 and 1 for startIndex' }));
    expect(() => raw(x, 2, 1, 0, 0, 0, new Float32Array(1))).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_ARGUMENT' }));
    expect(() => raw(x, 2, 1, 0, 0, 0, undefined, 5)).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_ARGUMENT', message: 'Expected function for onProgress' }));
    await expect(raw(new Float32Array([1, NaN]), 1, 1, 0, 0, 0)).rejects.toMatchObject({
      name: 'RangeError',
      code: 'ERR_IMIAD_NOT_FINITE',
      message: 'Expected finite numbers in features but received NaN of type number at index 1',
    });
    expect(Array.from(await raw(x, 2, 2, 0, 0, 1, undefined, undefined))).toEqual([1, 0]);
  });
});
