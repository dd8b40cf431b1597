import {
  adaptiveAvgPool1d,
  gatherChannels,
  gaussianBlur,
  neighbourhoodAverage,
  patchEmbedding,
  resizeBilinear,
  resizeFeatureMap,
} from '../bindings/filters';
import * as ref from './fixtures/filters-reference';

/** The fixture's input formula: f32(((i * 37) % 101) / 101). */
function ramp(length: number, f: (v: number) => number = (v) => v): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = f(Math.fround(((i * 37) % 101) / 101));
  return out;
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThanOrEqual(tol);
}

describe('gaussianBlur (scipy.ndimage.gaussian_filter, mode reflect)', () => {
  test('sigma 4 (radius 16 > map size: repeated reflection) matches scipy', async () => {
    const out = await gaussianBlur(ramp(2 * 9 * 11), { count: 2, height: 9, width: 11 });
    expectClose(out, ref.blurSigma4, 2e-7);
  });

  test('sigma 1.3, truncate 2 matches scipy', async () => {
    const out = await gaussianBlur(ramp(2 * 9 * 11), { count: 2, height: 9, width: 11, sigma: 1.3, truncate: 2 });
    expectClose(out, ref.blurSigma13Truncate2, 2e-7);
  });

  test('a 40 x 37 map matches scipy along a row and a column', async () => {
    const out = await gaussianBlur(ramp(40 * 37), { count: 1, height: 40, width: 37 });
    expectClose(out.subarray(20 * 37, 21 * 37), ref.blurBigRow20, 2e-7);
    expectClose(Array.from({ length: 40 }, (_, y) => out[y * 37 + 3]), ref.blurBigCol3, 2e-7);
  });

  test('keeps a constant map constant and is deterministic', async () => {
    const flat = new Float32Array(5 * 64 * 48).fill(0.25);
    const out = await gaussianBlur(flat, { count: 5, height: 64, width: 48 });
    for (const v of out) expect(Math.abs(v - 0.25)).toBeLessThan(1e-7);
    const a = await gaussianBlur(ramp(3 * 50 * 50), { count: 3, height: 50, width: 50 });
    const b = await gaussianBlur(ramp(3 * 50 * 50), { count: 3, height: 50, width: 50 });
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
  });

  test('rejects a wrong length and a bad sigma with exact messages', async () => {
    await expect(gaussianBlur(new Float32Array(10), { count: 1, height: 3, width: 3 })).rejects.toMatchObject({
      code: 'ERR_IMIAD_DIMS',
      message: 'Expected length of maps to be count * height * width (9) but received 10 of type number',
    });
    await expect(gaussianBlur(new Float32Array(9), { count: 1, height: 3, width: 3, sigma: -1 })).rejects.toMatchObject({
      code: 'ERR_IMIAD_ARGUMENT',
      message: 'Expected number in (0, 10000] for sigma but received -1 of type number',
    });
    await expect(gaussianBlur([1, 2] as unknown as Float32Array, { count: 1, height: 1, width: 2 })).rejects.toThrow(
      'Expected Float32Array for maps but received Array(2) of type object',
    );
  });

  test('an aborted signal rejects with AbortError', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(gaussianBlur(ramp(9), { count: 1, height: 3, width: 3, signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('resizeBilinear (torch F.interpolate, align_corners=False)', () => {
  test('upsampling 4 x 5 -> 7 x 8 matches torch', async () => {
    const out = await resizeBilinear(ramp(2 * 4 * 5), { count: 2, height: 4, width: 5, outHeight: 7, outWidth: 8 });
    expectClose(out, ref.resizeUp7x8, 1e-6);
  });

  test('downsampling 4 x 5 -> 3 x 2 matches torch', async () => {
    const out = await resizeBilinear(ramp(2 * 4 * 5), { count: 2, height: 4, width: 5, outHeight: 3, outWidth: 2 });
    expectClose(out, ref.resizeDown3x2, 1e-6);
  });

  test('the same size is the identity; resizeFeatureMap resizes every channel', async () => {
    const x = ramp(3 * 6 * 7);
    expect(Array.from(await resizeBilinear(x, { count: 3, height: 6, width: 7, outHeight: 6, outWidth: 7 }))).toEqual(Array.from(x));
    const up = await resizeFeatureMap({ data: ramp(2 * 3 * 2 * 2), channels: 3, height: 2, width: 2 }, 2, 4, 4);
    expect([up.channels, up.height, up.width, up.data.length]).toEqual([3, 4, 4, 2 * 3 * 16]);
    // 2 -> 4: the corner cell equals the source corner (source index clamped at 0).
    expect(up.data[0]).toBe(ramp(1)[0]);
  });
});

describe('PatchCore feature operations', () => {
  test('adaptiveAvgPool1d matches torch when shrinking and when growing', async () => {
    expectClose(await adaptiveAvgPool1d(ramp(14), { dims: 7, targetDims: 3 }), ref.pool7to3, 1e-7);
    expectClose(await adaptiveAvgPool1d(ramp(14), { dims: 7, targetDims: 10 }), ref.pool7to10, 1e-7);
  });

  test('neighbourhoodAverage equals Unfold(3, padding 1) then the mean', async () => {
    const out = await neighbourhoodAverage(ramp(3 * 4 * 5), { count: 3, height: 4, width: 5 });
    expectClose(out, ref.neighbourhood3, 2e-7); // torch.mean sums the 9 values in another order: 1 ulp
  });

  test('patchEmbedding matches the reference PatchCore._embed on two layers of different grids', async () => {
    const l0 = { data: ramp(2 * 4 * 4 * 4), channels: 4, height: 4, width: 4 };
    const l1 = { data: ramp(2 * 6 * 2 * 2, (v) => Math.fround(v * 2 - 0.5)), channels: 6, height: 2, width: 2 };
    const e = await patchEmbedding([l0, l1], { n: 2, patchSize: 3, pretrainDims: 10, targetDims: 7 });
    expect([e.dims, e.height, e.width, e.embeddings.length]).toEqual([7, 4, 4, 2 * 16 * 7]);
    expectClose(e.embeddings, ref.patchEmbed, 1e-6);
  });

  test('with C * 9 pooled to C, one layer is exactly the 3 x 3 neighbourhood average', async () => {
    const n = 2, c = 5, h = 6, w = 7;
    const x = ramp(n * c * h * w);
    const e = await patchEmbedding([{ data: x, channels: c, height: h, width: w }], { n, pretrainDims: c, targetDims: c });
    const avg = await neighbourhoodAverage(x, { count: n * c, height: h, width: w });
    for (let img = 0; img < n; img++) {
      for (let p = 0; p < h * w; p++) {
        for (let ch = 0; ch < c; ch++) {
          expect(e.embeddings[(img * h * w + p) * c + ch]).toBeCloseTo(avg[(img * c + ch) * h * w + p], 6);
        }
      }
    }
  });

  test('is independent of the thread count', async () => {
    const { spawnSync } = await import('child_process');
    const script = `
      const f = require('./dist/bindings/filters');
      const x = new Float32Array(3 * 64 * 9 * 9).map((_, i) => Math.sin(i));
      const y = new Float32Array(3 * 32 * 5 * 5).map((_, i) => Math.cos(i));
      f.patchEmbedding([{ data: x, channels: 64, height: 9, width: 9 }, { data: y, channels: 32, height: 5, width: 5 }], { n: 3, pretrainDims: 40, targetDims: 24 })
        .then(async (e) => { const b = await f.gaussianBlur(x, { count: 192, height: 9, width: 9 });
          const h = require('crypto').createHash('sha256'); h.update(Buffer.from(e.embeddings.buffer)); h.update(Buffer.from(b.buffer)); console.log(h.digest('hex')); });`;
    const run = (threads: string): string =>
      spawnSync(process.execPath, ['-e', script], { cwd: `${__dirname}/..`, env: { ...process.env, IMIAD_THREADS: threads }, encoding: 'utf8' }).stdout.trim();
    const one = run('1');
    expect(one).toMatch(/^[0-9a-f]{64}$/);
    expect(run('3')).toBe(one);
  });

  test('gatherChannels matches PaDiM\'s embedding_concat + index_select', async () => {
    const p1 = { data: ramp(2 * 3 * 4 * 4), channels: 3, height: 4, width: 4 };
    const p2 = { data: ramp(2 * 2 * 2 * 2, (v) => Math.fround(v * 2 - 0.5)), channels: 2, height: 2, width: 2 };
    const p3 = { data: ramp(2 * 2, (v) => Math.fround(v + 3)), channels: 2, height: 1, width: 1 };
    const e = await gatherChannels([p1, p2, p3], { n: 2, channels: [5, 0, 6, 3] });
    expect([e.channels, e.height, e.width]).toEqual([4, 4, 4]);
    expect(Array.from(e.data)).toEqual(ref.padimEmbedding);
    await expect(gatherChannels([p1], { n: 2, channels: [3] })).rejects.toMatchObject({
      code: 'ERR_IMIAD_RANGE',
      message: 'Expected integer between 0 and 2 for channels[0] but received 3 of type number',
    });
  });

  test('patchEmbedding rejects mismatched layers with exact messages', async () => {
    await expect(
      patchEmbedding([{ data: new Float32Array(10), channels: 2, height: 2, width: 2 }], { n: 1 }),
    ).rejects.toMatchObject({
      code: 'ERR_IMIAD_DIMS',
      message: 'Expected length of layers[0].data to be n * channels * height * width (8) but received 10 of type number',
    });
    await expect(patchEmbedding([], { n: 1 })).rejects.toThrow('Expected array of 1 to 16 feature maps for layers but received Array(0) of type object');
    await expect(
      patchEmbedding([{ data: new Float32Array(8), channels: 2, height: 2, width: 2 }], { n: 1, patchSize: 2 }),
    ).rejects.toThrow('Expected odd integer for patchSize but received 2 of type number');
  });
});
