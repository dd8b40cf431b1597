import { spawnSync } from 'child_process';
import * as path from 'path';
import { Worker } from 'worker_threads';

import { KnnIndex, knnSearch, type KnnResult } from '../lib/index';
import { cpuAddon, packageRoot } from '../bindings/load';
import type { KnnAddon } from '../bindings/knn';
import { cudaUnavailableError, probeCuda } from '../bindings/device';
import { randomFloats } from '../bench/common';

// Where no GPU is usable, device: 'cuda' throws with bindings/device.ts's reason (test/cuda.test.ts pins it down).
const cudaProbe = probeCuda();
const noCudaMessage = cudaUnavailableError(cudaProbe.reason).message;

const root = packageRoot();

/** Deterministic floats in [-scale, scale) (xorshift32). */
const randomMatrix = (n: number, seed: number, scale = 1): Float32Array => randomFloats(n, seed, scale);

/**
 * The plain reference: squared differences summed in index order in double precision (what the native plain loop
 * and the re-ranking compute), sorted by (distance, index).
 */
function referenceKnn(bank: Float32Array, queries: Float32Array, dims: number, k: number): KnnResult {
  const rows = bank.length / dims;
  const nq = queries.length / dims;
  const indices = new Int32Array(nq * k);
  const distances = new Float32Array(nq * k);
  const d2 = new Float64Array(rows);
  const order = new Array<number>(rows);
  for (let q = 0; q < nq; q++) {
    for (let r = 0; r < rows; r++) {
      let sum = 0;
      for (let d = 0; d < dims; d++) {
        const t = queries[q * dims + d] - bank[r * dims + d];
        sum += t * t;
      }
      d2[r] = sum;
      order[r] = r;
    }
    order.sort((a, b) => d2[a] - d2[b] || a - b);
    for (let j = 0; j < k; j++) {
      indices[q * k + j] = order[j];
      distances[q * k + j] = Math.sqrt(d2[order[j]]);
    }
  }
  return { indices, distances };
}

/** The first k of each query's row of a reference computed for a larger k. */
function firstK(full: KnnResult, nq: number, k: number): KnnResult {
  const kFull = full.indices.length / nq;
  const indices = new Int32Array(nq * k);
  const distances = new Float32Array(nq * k);
  for (let q = 0; q < nq; q++) {
    indices.set(full.indices.subarray(q * kFull, q * kFull + k), q * k);
    distances.set(full.distances.subarray(q * kFull, q * kFull + k), q * k);
  }
  return { indices, distances };
}

function expectSame(got: KnnResult, want: KnnResult): void {
  // Tags rather than instanceof: arrays made by the addon (or a worker) belong to another realm than jest's.
  expect(Object.prototype.toString.call(got.indices)).toBe('[object Int32Array]');
  expect(Object.prototype.toString.call(got.distances)).toBe('[object Float32Array]');
  expect(Array.from(got.indices)).toEqual(Array.from(want.indices));
  expect(Buffer.from(got.distances.buffer, got.distances.byteOffset, got.distances.byteLength)).toEqual(
    Buffer.from(want.distances.buffer, want.distances.byteOffset, want.distances.byteLength),
  );
}

/** A call, and the error it must throw or reject with: name, code, message. */
type ErrorCase = [() => unknown, string, string, string];

describe('exact k-NN against the plain TypeScript reference', () => {
  const shapes: Array<{ rows: number; dims: number; nq: number; ks: number[]; scale?: number }> = [
    { rows: 1, dims: 1, nq: 3, ks: [1] },
    { rows: 50, dims: 3, nq: 20, ks: [1, 2, 5, 49, 50] },
    { rows: 300, dims: 37, nq: 40, ks: [1, 9, 64, 65, 299, 300] },
    { rows: 1000, dims: 128, nq: 30, ks: [1, 9, 100] },
    { rows: 9000, dims: 12, nq: 13, ks: [1, 9, 200] }, // more than one bank slice
    { rows: 500, dims: 64, nq: 130, ks: [1, 9], scale: 1000 }, // more than one query block, large values
  ];
  for (const { rows, dims, nq, ks, scale } of shapes) {
    test(`${rows} rows x ${dims} dims, ${nq} queries, k = ${ks.join(', ')}`, async () => {
      const bank = randomMatrix(rows * dims, rows + dims, scale);
      const queries = randomMatrix(nq * dims, nq * 7 + 1, scale);
      const index = new KnnIndex(bank, { dims });
      expect(index.rows).toBe(rows);
      expect(index.dims).toBe(dims);
      const full = referenceKnn(bank, queries, dims, Math.max(...ks));
      for (const k of ks) {
        const want = firstK(full, nq, k);
        expectSame(await index.search(queries, k), want);
        expectSame(await knnSearch(bank, queries, { dims, k }), want);
      }
    });
  }

  test('duplicate bank rows tie, and ties go to the smaller index', async () => {
    const dims = 6;
    const unique = randomMatrix(30 * dims, 99);
    const bank = new Float32Array(90 * dims);
    for (let c = 0; c < 3; c++) bank.set(unique, c * unique.length);
    const queries = unique.slice(0, 8 * dims); // queries 0..7 equal rows q, q + 30, q + 60
    const index = new KnnIndex(bank, { dims });
    for (const k of [1, 3, 4, 90]) {
      const got = await index.search(queries, k);
      expectSame(got, referenceKnn(bank, queries, dims, k));
      if (k >= 3) {
        for (let q = 0; q < 8; q++) {
          expect(Array.from(got.indices.subarray(q * k, q * k + 3))).toEqual([q, q + 30, q + 60]);
          expect(Array.from(got.distances.subarray(q * k, q * k + 3))).toEqual([0, 0, 0]);
        }
      }
    }
  });

  test('hand-computed: points on a line', async () => {
    const index = new KnnIndex(new Float32Array([0, 1, 2, 3, 10]), { dims: 1 });
    const r = await index.search(new Float32Array([1.5, 9]), 4);
    expect(Array.from(r.indices)).toEqual([1, 2, 0, 3, 4, 3, 2, 1]);
    expect(Array.from(r.distances)).toEqual([0.5, 0.5, 1.5, 1.5, 1, 6, 7, 8]);
  });

  test('near ties far from the origin are ordered by the exact distance', async () => {
    const dims = 32;
    const base = randomMatrix(dims, 5, 100);
    const bank = new Float32Array(64 * dims);
    for (let r = 0; r < 64; r++) {
      bank.set(base, r * dims);
      // Move one coordinate by r ulps: the norm formula cannot resolve such differences, the re-ranking must.
      const i = r * dims + (r % dims);
      const f = new Float32Array([bank[i]]);
      const u = new Uint32Array(f.buffer);
      u[0] += r % 4;
      bank[i] = f[0];
    }
    const queries = randomMatrix(5 * dims, 6, 0.001).map((v, i) => v + base[i % dims]);
    const index = new KnnIndex(bank, { dims });
    for (const k of [1, 5, 64]) expectSame(await index.search(queries, k), referenceKnn(bank, queries, dims, k));
  });

  test('the native plain loop agrees with the TypeScript reference', async () => {
    const addon = cpuAddon<KnnAddon>();
    const bank = randomMatrix(200 * 10, 3);
    const queries = randomMatrix(7 * 10, 4);
    expectSame(await addon.knnSearchPlain(bank, queries, 10, 12, undefined), referenceKnn(bank, queries, 10, 12));
  });
});

describe('KnnIndex behaviour', () => {
  test('results do not depend on the thread count (IMIAD_THREADS=1 and 2, bitwise)', () => {
    const script = `
      const { KnnIndex } = require('./dist/lib/index');
      const { randomFloats } = require('./dist/bench/common');
      const dims = 48, bank = randomFloats(20000 * dims, 1), queries = randomFloats(200 * dims, 2);
      new KnnIndex(bank, { dims, device: 'cpu' }).search(queries, 5).then((r) => {
        const h = require('crypto').createHash('sha256');
        h.update(Buffer.from(r.indices.buffer)); h.update(Buffer.from(r.distances.buffer));
        console.log(h.digest('hex'));
      });`;
    const run = (threads: string): string => {
      const r = spawnSync(process.execPath, ['-e', script], { cwd: root, env: { ...process.env, IMIAD_THREADS: threads }, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      return r.stdout.trim();
    };
    const one = run('1');
    expect(one).toMatch(/^[0-9a-f]{64}$/);
    expect(run('2')).toBe(one);
  });

  test('an AbortSignal cancels a running search, and an aborted one never starts', async () => {
    const dims = 256;
    const index = new KnnIndex(randomMatrix(40000 * dims, 8), { dims });
    const queries = randomMatrix(800 * dims, 9);
    const controller = new AbortController();
    const pending = index.search(queries, 3, { signal: controller.signal });
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    await expect(index.search(queries, 3, { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
    // The index still works after a cancelled search.
    const small = queries.subarray(0, 2 * dims);
    const r = await index.search(small, 2);
    expect(r.indices.length).toBe(4);
  });

  test('a search does not block the event loop', async () => {
    const dims = 256;
    const index = new KnnIndex(randomMatrix(30000 * dims, 10), { dims });
    const queries = randomMatrix(600 * dims, 11);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      await index.search(queries, 9);
    } finally {
      clearInterval(timer);
    }
    expect(ticks).toBeGreaterThan(0);
  });

  test('loads and searches in worker_threads', async () => {
    const dims = 16;
    const bank = randomMatrix(700 * dims, 12);
    const queries = randomMatrix(9 * dims, 13);
    const want = referenceKnn(bank, queries, dims, 4);
    const code = `
      const { parentPort, workerData } = require('worker_threads');
      const { KnnIndex } = require(${JSON.stringify(path.join(root, 'dist/lib/index.js'))});
      new KnnIndex(workerData.bank, { dims: ${dims} }).search(workerData.queries, 4)
        .then((r) => parentPort.postMessage(r), (e) => parentPort.postMessage({ error: String(e) }));`;
    const run = () =>
      new Promise<KnnResult>((resolve, reject) => {
        const w = new Worker(code, { eval: true, workerData: { bank, queries } });
        w.once('message', (m: KnnResult) => {
          void w.terminate();
          resolve(m);
        });
        w.once('error', reject);
      });
    const results = await Promise.all([run(), run()]);
    for (const r of results) expectSame(r, want);
  });

  test('stateBytes counts the packed bank and norms; device auto and cpu run on the CPU', async () => {
    const dims = 10;
    const bank = randomMatrix(40 * dims, 14);
    const index = new KnnIndex(bank, { dims, device: 'cpu' });
    expect(index.stateBytes).toBe(64 * (dims + 1) * 4); // 40 rows padded to two 32-row panels
    expect(index.device).toBe('cpu');
    const auto = new KnnIndex(bank, { dims, device: 'auto' });
    expectSame(await auto.search(bank.subarray(0, dims), 3), referenceKnn(bank, bank.subarray(0, dims), dims, 3));
  });
});

describe('argument errors', () => {
  const dims = 4;
  const bank = randomMatrix(10 * dims, 15);
  const queries = randomMatrix(2 * dims, 16);

  function thrown(fn: () => unknown): { name: string; code: string; message: string } {
    try {
      fn();
    } catch (e) {
      const err = e as Error & { code: string };
      return { name: err.name, code: err.code, message: err.message };
    }
    throw new Error('did not throw');
  }

  test.each<ErrorCase>([
    [() => new KnnIndex([1, 2] as unknown as Float32Array, { dims: 1 }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected Float32Array for bank but received Array(2) of type object'],
    [() => new KnnIndex(new Float64Array(4) as unknown as Float32Array, { dims: 1 }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected Float32Array for bank but received Float64Array(4) of type object'],
    [() => new KnnIndex(bank, undefined as unknown as { dims: number }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected object for options but received undefined of type undefined'],
    [() => new KnnIndex(bank, { dims: 0 }), 'RangeError', 'ERR_IMIAD_DIMS', 'Expected positive integer for dims but received 0 of type number'],
    [() => new KnnIndex(bank, { dims: 1.5 }), 'TypeError', 'ERR_IMIAD_DIMS', 'Expected positive integer for dims but received 1.5 of type number'],
    [() => new KnnIndex(bank, { dims: 3 }), 'RangeError', 'ERR_IMIAD_DIMS', 'Expected length of bank to be a multiple of dims (3) but received 40 of type number'],
    [() => new KnnIndex(new Float32Array(0), { dims }), 'RangeError', 'ERR_IMIAD_EMPTY', 'Expected non-empty Float32Array for bank but received Float32Array(0) of type object'],
    [() => new KnnIndex(new Float32Array([1, 2, NaN, 4]), { dims }), 'RangeError', 'ERR_IMIAD_NOT_FINITE', 'Expected finite numbers in bank but received NaN of type number at index 2'],
    [() => new KnnIndex(new Float32Array([1, 2, 3, -Infinity]), { dims }), 'RangeError', 'ERR_IMIAD_NOT_FINITE', 'Expected finite numbers in bank but received -Infinity of type number at index 3'],
    [() => new KnnIndex(bank, { dims, device: 'gpu' as 'cuda' }), 'TypeError', 'ERR_IMIAD_ARGUMENT', "Expected one of 'auto', 'cpu', 'cuda' for device but received gpu of type string"],
    ...(cudaProbe.usable ? [] : [[() => new KnnIndex(bank, { dims, device: 'cuda' }), 'Error', 'ERR_IMIAD_CUDA_UNAVAILABLE', noCudaMessage] as ErrorCase]),
  ])('constructor %#', (fn, name, code, message) => {
    expect(thrown(fn)).toEqual({ name, code, message });
  });

  const index = new KnnIndex(bank, { dims });
  test.each<ErrorCase>([
    [() => index.search([0, 0, 0, 0] as unknown as Float32Array, 1), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected Float32Array for queries but received Array(4) of type object'],
    [() => index.search(new Float32Array(6), 1), 'RangeError', 'ERR_IMIAD_DIMS', 'Expected length of queries to be a multiple of dims (4) but received 6 of type number'],
    [() => index.search(new Float32Array(0), 1), 'RangeError', 'ERR_IMIAD_EMPTY', 'Expected non-empty Float32Array for queries but received Float32Array(0) of type object'],
    [() => index.search(new Float32Array([0, Infinity, 0, 0]), 1), 'RangeError', 'ERR_IMIAD_NOT_FINITE', 'Expected finite numbers in queries but received Infinity of type number at index 1'],
    [() => index.search(queries, 0), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 1 and 10 for k but received 0 of type number'],
    [() => index.search(queries, 11), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 1 and 10 for k but received 11 of type number'],
    [() => index.search(queries, 2.5), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected integer between 1 and 10 for k but received 2.5 of type number'],
    [() => index.search(queries, 1, { signal: 'stop' as unknown as AbortSignal }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected AbortSignal for signal but received stop of type string'],
    [() => knnSearch(bank, queries, { dims, k: 11 }), 'RangeError', 'ERR_IMIAD_RANGE', 'Expected integer between 1 and 10 for k but received 11 of type number'],
    [() => knnSearch(bank, new Float32Array(5), { dims, k: 1 }), 'RangeError', 'ERR_IMIAD_DIMS', 'Expected length of queries to be a multiple of dims (4) but received 5 of type number'],
    [() => knnSearch(bank, 'x' as unknown as Float32Array, { dims, k: 1 }), 'TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected Float32Array for queries but received x of type string'],
    [() => knnSearch(new Float32Array([NaN]), queries, { dims: 1, k: 1 }), 'RangeError', 'ERR_IMIAD_NOT_FINITE', 'Expected finite numbers in bank but received NaN of type number at index 0'],
    ...(cudaProbe.usable ? [] : [[() => knnSearch(bank, queries, { dims, k: 1, device: 'cuda' }), 'Error', 'ERR_IMIAD_CUDA_UNAVAILABLE', noCudaMessage] as ErrorCase]),
  ])('search %#: rejects with the exact message', async (fn, name, code, message) => {
    const err = (await (fn() as Promise<unknown>).then(
      () => {
        throw new Error('did not reject');
      },
      (e: unknown) => e,
    )) as Error & { code: string };
    expect({ name: err.name, code: err.code, message: err.message }).toEqual({ name, code, message });
    expect(err.stack).toContain('knn.test.ts'); // the caller's stack, not an empty native one
  });

  test('the raw addon guards its arguments without crashing', async () => {
    const addon = cpuAddon<KnnAddon & { KnnIndex: new (...args: unknown[]) => unknown }>();
    expect(() => new addon.KnnIndex(new Float64Array(4), 2)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_IMIAD_ARGUMENT' }));
    expect(() => new addon.KnnIndex(new Float32Array(5), 2)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_IMIAD_DIMS' }));
    const raw = new addon.KnnIndex(bank, dims) as { search: (...args: unknown[]) => Promise<KnnResult> };
    expect(() => raw.search(queries, 0, undefined)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_IMIAD_RANGE' }));
    expect(() => raw.search(queries, 1, new Float32Array(1))).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_ARGUMENT' }));
    // NaN slipped past TypeScript: the kernel rejects it with the same message.
    await expect(raw.search(new Float32Array([0, 0, NaN, 0]), 1, undefined)).rejects.toMatchObject({
      code: 'ERR_IMIAD_NOT_FINITE',
      message: 'Expected finite numbers in queries but received NaN of type number at index 2',
    });
  });

  test('a bank whose buffer was transferred away is refused, not read', async () => {
    const own = randomMatrix(8 * dims, 17);
    const idx = new KnnIndex(own, { dims });
    structuredClone(own.buffer, { transfer: [own.buffer as ArrayBuffer] });
    await expect(idx.search(queries, 1)).rejects.toMatchObject({
      name: 'TypeError',
      code: 'ERR_IMIAD_ARGUMENT',
      message: "Expected the bank's ArrayBuffer to stay attached while the index exists",
    });
  });
});
