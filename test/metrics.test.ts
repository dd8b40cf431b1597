import { spawnSync } from 'child_process';
import * as path from 'path';

import { xorshift32 } from '../bench/common';
import { packageRoot } from '../bindings/load';
import { saturationArea } from '../lib/datasets';
import {
  auPro,
  auSpro,
  binaryClassificationMetrics,
  forgettingMeasure,
  labelComponents,
  PixelAccumulator,
  trapezoid,
  type MaskedAnomalyMap,
} from '../lib/metrics';

// Fixed data and the official numbers for it: see test/fixtures/metrics_reference.py (run once with /usr/bin/python3).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fixture = require('./fixtures/metrics_reference.json') as {
  mvtec: { width: number; height: number; maps: number[][]; masks: number[][]; labels: number[] };
  loco: { width: number; height: number; images: { kind: string; map: number[]; channels: number[][]; saturation: number[] }[] };
};

/** Official numbers for the fixture (scikit-learn 1.2.1; numpy port of compute_pro + trapezoid; LOCO sPRO/trapz). */
const OFFICIAL = {
  mvtec: {
    pixel_auroc: 0.8101478723404255,
    pixel_ap: 0.1502840379310375,
    pixel_f1_max: 0.24489795918367346,
    image_auroc: 0.5416666666666666,
    image_ap: 0.7222222222222222,
    image_f1_max: 0.8,
    limits: [0.3, 0.05, 0.123, 1.0],
    aupro: [0.5415797365365442, 0.23960865697020264, 0.35744883303389935, 0.8007070180317989],
    regions: 12,
  },
  loco: {
    logical_anomalies: [0.15416338041861094, 0.37816939076553735, 0.45276273727962707, 0.5736873059621567, 0.8061760330019612],
    structural_anomalies: [0.07493018247184914, 0.3927928141817031, 0.5352085029168362, 0.7723392671408545, 0.9218796635463302],
    classification_logical_anomalies: 0.7222222222222222,
    classification_structural_anomalies: 0.5555555555555556,
  },
};

function mvtecImages(): MaskedAnomalyMap[] {
  const { width, height, maps, masks } = fixture.mvtec;
  return maps.map((m, i) => ({ anomalyMap: Float32Array.from(m), mask: Uint8Array.from(masks[i]), width, height }));
}

/** A seeded xorshift generator. */
const rng = xorshift32;

/** Plain reference: every distinct threshold in descending order with its cumulative counts. */
function referenceCurve(scores: number[], positive: boolean[], weight: number[]): { neg: number; pos: number; w: number }[] {
  const order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a]);
  const points: { neg: number; pos: number; w: number }[] = [];
  let neg = 0;
  let pos = 0;
  let w = 0;
  for (let k = 0; k < order.length; k++) {
    const i = order[k];
    if (positive[i]) {
      pos++;
      w += weight[i];
    } else neg++;
    if (k === order.length - 1 || scores[order[k + 1]] !== scores[i]) points.push({ neg, pos, w });
  }
  return points;
}

function referenceTrapezoid(x: number[], y: number[], limit: number): number {
  let area = 0;
  for (let i = 1; i < x.length; i++) {
    if (x[i] <= limit) area += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1]);
    else if (x[i - 1] <= limit) {
      const yi = y[i - 1] + ((y[i] - y[i - 1]) * (limit - x[i - 1])) / (x[i] - x[i - 1]);
      area += 0.5 * (yi + y[i - 1]) * (limit - x[i - 1]);
    }
  }
  return area;
}

/** 8-connected components by flood fill (the plain reference for the union-find labelling). */
function referenceLabels(mask: Uint8Array, width: number, height: number): { labels: Uint32Array; count: number } {
  const labels = new Uint32Array(mask.length);
  let count = 0;
  for (let start = 0; start < mask.length; start++) {
    if (!mask[start] || labels[start]) continue;
    labels[start] = ++count;
    const stack = [start];
    while (stack.length) {
      const p = stack.pop() as number;
      const x = p % width;
      const y = (p - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          const ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= width || ny >= height) continue;
          const q = ny * width + nx;
          if (mask[q] && !labels[q]) {
            labels[q] = count;
            stack.push(q);
          }
        }
      }
    }
  }
  return { labels, count };
}

describe('labelComponents (8-connectivity)', () => {
  test('numbers components in raster order of their first pixel; diagonal neighbours join', async () => {
    const mask = Uint8Array.from([1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1]);
    const r = await labelComponents(mask, 4, 4);
    expect(r.count).toBe(4);
    expect(Array.from(r.labels)).toEqual([1, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 3, 4, 4, 0, 3]);
  });

  test('a U shape whose arms meet late is one component', async () => {
    const mask = Uint8Array.from([1, 0, 1, 1, 0, 1, 0, 1, 0]);
    const r = await labelComponents(mask, 3, 3);
    expect(r.count).toBe(1);
    expect(Array.from(r.labels)).toEqual([1, 0, 1, 1, 0, 1, 0, 1, 0]);
  });

  test('matches a flood-fill reference on random masks', async () => {
    const next = rng(11);
    for (let t = 0; t < 20; t++) {
      const width = 1 + Math.floor(next() * 40);
      const height = 1 + Math.floor(next() * 40);
      const density = next();
      const mask = new Uint8Array(width * height).map(() => (next() < density ? 255 : 0));
      const r = await labelComponents(mask, width, height);
      const ref = referenceLabels(mask, width, height);
      expect(r.count).toBe(ref.count);
      expect(Array.from(r.labels)).toEqual(Array.from(ref.labels));
    }
  });

  test('rejects a mask of the wrong length with the exact message', async () => {
    expect(() => labelComponents(new Uint8Array(5), 2, 2)).toThrow('Expected length of mask to be 4 but received 5 of type number');
    expect(() => labelComponents(new Float32Array(4) as unknown as Uint8Array, 2, 2)).toThrow(
      'Expected Uint8Array for mask but received Float32Array(4) of type object',
    );
    expect(() => labelComponents(new Uint8Array(4), 0, 4)).toThrow('Expected integer between 1 and 1073741824 for width but received 0 of type number');
  });
});

describe('classification metrics', () => {
  test('hand-computed case with tied scores', async () => {
    // Descending: 0.8 (+), 0.5 (+ and - tied), 0.2 (-). ROC (0,0) (0,.5) (.5,1) (1,1): 0.375 + 0.5.
    const r = await binaryClassificationMetrics([0.5, 0.5, 0.2, 0.8], [1, 0, 0, 1]);
    expect(r.auroc).toBe(0.875);
    expect(r.ap).toBeCloseTo(0.5 * 1 + 0.5 * (2 / 3), 15);
    expect(r.f1Max).toBeCloseTo(0.8, 15);
    expect(r.thresholds).toBe(3);
  });

  test('matches scikit-learn on the fixture (image level)', async () => {
    const scores = fixture.mvtec.maps.map((m) => Math.max(...m));
    const r = await binaryClassificationMetrics(scores, fixture.mvtec.labels);
    expect(r.auroc).toBeCloseTo(OFFICIAL.mvtec.image_auroc, 12);
    expect(r.ap).toBeCloseTo(OFFICIAL.mvtec.image_ap, 12);
    expect(r.f1Max).toBeCloseTo(OFFICIAL.mvtec.image_f1_max, 12);
  });

  test('matches the plain reference on random tied data', async () => {
    const next = rng(5);
    for (let t = 0; t < 10; t++) {
      const n = 50 + Math.floor(next() * 500);
      const labels = Array.from({ length: n }, () => (next() < 0.3 ? 1 : 0));
      labels[0] = 1;
      labels[1] = 0;
      const scores = labels.map((l) => Math.round((next() + 0.4 * l) * 20) / 20);
      const curve = referenceCurve(scores, labels.map(Boolean), labels);
      const P = labels.filter(Boolean).length;
      const N = n - P;
      const x = [0, ...curve.map((c) => c.neg / N)];
      const y = [0, ...curve.map((c) => c.pos / P)];
      let ap = 0;
      let prev = 0;
      let f1 = 0;
      for (const c of curve) {
        ap += ((c.pos - prev) / P) * (c.pos / (c.pos + c.neg));
        prev = c.pos;
        if (c.pos > 0) f1 = Math.max(f1, (2 * c.pos) / (c.pos + c.neg + P));
      }
      const r = await binaryClassificationMetrics(Float64Array.from(scores), Uint8Array.from(labels));
      expect(r.auroc).toBeCloseTo(referenceTrapezoid(x, y, 1), 12);
      expect(r.ap).toBeCloseTo(ap, 12);
      expect(r.f1Max).toBeCloseTo(f1, 12);
    }
  });

  test('exact errors', async () => {
    await expect(binaryClassificationMetrics([0.1, 0.2], [0, 0])).rejects.toThrow('Expected both normal and anomalous samples but received only normal ones');
    await expect(binaryClassificationMetrics([0.1, Number.NaN], [0, 1])).rejects.toThrow('Expected finite numbers in scores but received NaN of type number at index 1');
    await expect(binaryClassificationMetrics([0.1, 0.2], [0, 1, 1])).rejects.toThrow('Expected length of labels to be 2 but received 3 of type number');
    await expect(binaryClassificationMetrics([], [])).rejects.toThrow('Expected non-empty scores but received Float64Array(0) of type object');
    await expect(binaryClassificationMetrics([0.1, 0.2], [0, 2])).rejects.toThrow('Expected 0, 1, true or false for labels[1] but received 2 of type number');
  });
});

describe('trapezoid (the official generic_util.trapezoid)', () => {
  test('interpolates at a limit between points and stops at a limit on a point', async () => {
    const x = [0, 0.2, 0.5, 1];
    const y = [0, 0.4, 0.6, 1];
    const yi = 0.4 + (0.2 * 0.1) / 0.3;
    expect(await trapezoid(x, y, 0.3)).toBeCloseTo(0.5 * 0.4 * 0.2 + 0.5 * (yi + 0.4) * 0.1, 15);
    expect(await trapezoid(x, y, 0.5)).toBeCloseTo(0.04 + 0.5 * 1.0 * 0.3, 15);
    expect(await trapezoid(x, y)).toBeCloseTo(0.04 + 0.15 + 0.4, 15);
  });
});

describe('AU-PRO', () => {
  test('a single region, ties and limits on and between curve points', async () => {
    // Descending: 0.9 (+, region of area 2) -> (0, .5); 0.7 (-) -> (.5, .5); 0.5 (+) -> (.5, 1); 0.1 (-) -> (1, 1).
    const images = [{ anomalyMap: Float32Array.from([0.1, 0.9, 0.5, 0.7]), mask: Uint8Array.from([0, 1, 1, 0]), width: 4, height: 1 }];
    const r = await auPro(images, { limits: [1, 0.3, 0.5] });
    expect(r.aupro).toEqual({ '1.0': 0.75, '0.3': 0.5, '0.5': 0.5 });
    expect(r.pixel.units).toBe(1);
  });

  test('regions touching only diagonally are one region', async () => {
    // (0,0) and (1,1),(1,2): one region of area 3 with 8-connectivity (4-connectivity would give PRO 0.5 here).
    const mask = Uint8Array.from([1, 0, 0, 0, 1, 1, 0, 0, 0]);
    const map = Float32Array.from([0.9, 0.5, 0.4, 0.3, 0.1, 0.1, 0.2, 0.25, 0.35]);
    const r = await auPro([{ anomalyMap: map, mask, width: 3, height: 3 }], { limits: [1] });
    expect(r.pixel.units).toBe(1);
    // Curve: (0,0) (0,1/3) (1/6,1/3) (2/6,1/3) (3/6,1/3) (4/6,1/3) (5/6,1/3) (1,1/3) (1,1).
    expect(r.aupro['1.0']).toBeCloseTo(1 / 3, 15);
  });

  test('an image with no anomaly only adds normal pixels', async () => {
    const withNormal = [
      { anomalyMap: Float32Array.from([0.1, 0.9, 0.5, 0.7]), mask: Uint8Array.from([0, 1, 1, 0]), width: 4, height: 1 },
      { anomalyMap: Float32Array.from([0.6, 0.05]), mask: null, width: 2, height: 1 },
    ];
    // Descending: .9(+) .7(-) .6(-) .5(+) .1(-) .05(-): (0,.5) (.25,.5) (.5,.5) (.5,1) (.75,1) (1,1).
    const r = await auPro(withNormal, { limits: [1, 0.3] });
    expect(r.aupro['1.0']).toBeCloseTo(0.5 * 0.5 + 0.5 * 1, 15);
    expect(r.aupro['0.3']).toBeCloseTo(0.5, 15);
    expect(r.pixel.negatives).toBe(4);
  });

  test('matches the official compute_pro + trapezoid and scikit-learn on the fixture', async () => {
    const r = await auPro(mvtecImages(), { limits: OFFICIAL.mvtec.limits });
    OFFICIAL.mvtec.limits.forEach((l, i) => expect(r.pixel.areaUnderPro[i]).toBeCloseTo(OFFICIAL.mvtec.aupro[i], 12));
    expect(r.pixel.auroc).toBeCloseTo(OFFICIAL.mvtec.pixel_auroc, 12);
    expect(r.pixel.ap).toBeCloseTo(OFFICIAL.mvtec.pixel_ap, 12);
    expect(r.pixel.f1Max).toBeCloseTo(OFFICIAL.mvtec.pixel_f1_max, 12);
    expect(r.pixel.units).toBe(OFFICIAL.mvtec.regions);
  });

  test('matches the plain reference on random data, in both the sorted and the table path', async () => {
    const next = rng(99);
    for (const wide of [false, true]) {
      const images: MaskedAnomalyMap[] = [];
      const scores: number[] = [];
      const positive: boolean[] = [];
      const weight: number[] = [];
      let regions = 0;
      for (let i = 0; i < 4; i++) {
        const width = wide ? 200 : 30;
        const height = wide ? 150 : 20;
        const mask = new Uint8Array(width * height);
        for (let b = 0; b < 3; b++) {
          const x0 = Math.floor(next() * (width - 6));
          const y0 = Math.floor(next() * (height - 6));
          for (let y = y0; y < y0 + 1 + Math.floor(next() * 5); y++) for (let x = x0; x < x0 + 1 + Math.floor(next() * 5); x++) mask[y * width + x] = 1;
        }
        // wide: every score in [1, 1 + 2^-7): all pixels share the top 16 key bits, so one bucket holds > 2^16 records.
        const map = new Float32Array(width * height).map((_, p) =>
          wide ? 1 + Math.floor((next() * 0.5 + 0.5 * mask[p]) * 60000) * 2 ** -23 : Math.round((next() + 0.5 * mask[p]) * 50) / 50,
        );
        const { labels, count } = referenceLabels(mask, width, height);
        const area = new Array(count + 1).fill(0);
        labels.forEach((l) => area[l]++);
        regions += count;
        map.forEach((s, p) => {
          scores.push(s);
          positive.push(mask[p] === 1);
          weight.push(labels[p] ? 1 / area[labels[p]] : 0);
        });
        images.push({ anomalyMap: map, mask, width, height });
      }
      const curve = referenceCurve(scores, positive, weight);
      const N = positive.filter((p) => !p).length;
      const P = scores.length - N;
      const x = [0, ...curve.map((c) => c.neg / N)];
      const y = [0, ...curve.map((c) => Math.min(c.w / regions, 1))];
      const rocY = [0, ...curve.map((c) => c.pos / P)];
      const r = await auPro(images, { limits: [0.3, 0.05, 1] });
      expect(r.pixel.areaUnderPro[0]).toBeCloseTo(referenceTrapezoid(x, y, 0.3) / 0.3, 10);
      expect(r.pixel.areaUnderPro[1]).toBeCloseTo(referenceTrapezoid(x, y, 0.05) / 0.05, 10);
      expect(r.pixel.areaUnderPro[2]).toBeCloseTo(referenceTrapezoid(x, y, 1), 10);
      expect(r.pixel.auroc).toBeCloseTo(referenceTrapezoid(x, rocY, 1), 12);
      expect(r.pixel.thresholds).toBe(curve.length);
    }
  });

  test('the result does not depend on the thread count', () => {
    const script = `
      const m = require(${JSON.stringify(path.join(packageRoot(), 'dist/lib/index.js'))});
      const fx = require(${JSON.stringify(path.join(__dirname, 'fixtures/metrics_reference.json'))}).mvtec;
      const imgs = fx.maps.map((s, i) => ({ anomalyMap: Float32Array.from(s), mask: Uint8Array.from(fx.masks[i]), width: fx.width, height: fx.height }));
      m.auPro(imgs, { limits: [0.3, 0.05] }).then((r) => console.log(JSON.stringify([r.aupro, r.pixel.auroc, r.pixel.ap])));`;
    const run = (threads: string): string => {
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, IMIAD_THREADS: threads }, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      return r.stdout;
    };
    expect(run('1')).toBe(run('3'));
  });

  test('exact errors', async () => {
    const ok = { anomalyMap: new Float32Array(4), mask: new Uint8Array(4), width: 2, height: 2 };
    await expect(auPro([ok])).rejects.toThrow('Expected at least one anomalous ground-truth region for AU-PRO but the masks are all empty');
    expect(() => new PixelAccumulator().addImages([{ ...ok, anomalyMap: new Float32Array(3) }])).toThrow(
      'Expected length of images[0].anomalyMap to be 4 but received 3 of type number',
    );
    expect(() => new PixelAccumulator().addImages([{ ...ok, anomalyMap: Float32Array.from([0, Infinity, 0, 0]) }])).toThrow(
      'Expected finite numbers in images[0].anomalyMap but received Infinity of type number at index 1',
    );
    await expect(auPro([ok], { limits: [0] })).rejects.toThrow('Expected number in (0, 1] for limits[0] but received 0 of type number');
    await expect(new PixelAccumulator().compute()).rejects.toThrow('Expected at least one image before computing metrics');
  });

  test('an aborted signal rejects with AbortError', async () => {
    const acc = new PixelAccumulator();
    await acc.addImages(mvtecImages());
    const controller = new AbortController();
    controller.abort();
    await expect(acc.compute({ signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('AU-sPRO (MVTec LOCO AD)', () => {
  test('saturation areas: relative int(t * area), absolute min(t, area)', () => {
    expect(saturationArea({ defect_name: 'a', pixel_value: 255, saturation_threshold: 0.5, relative_saturation: true }, 5)).toBe(2);
    expect(saturationArea({ defect_name: 'a', pixel_value: 255, saturation_threshold: 1.0, relative_saturation: true }, 7)).toBe(7);
    expect(saturationArea({ defect_name: 'b', pixel_value: 254, saturation_threshold: 6, relative_saturation: false }, 4)).toBe(4);
    expect(saturationArea({ defect_name: 'b', pixel_value: 254, saturation_threshold: 6, relative_saturation: false }, 40)).toBe(6);
  });

  test('a defect larger than its saturation area saturates early (vs. PRO)', async () => {
    // 3x2 image, channel = 4 pixels with saturation 2. Descending: .9(c) .8(c) .5(-) .3(c) .2(c) .1(-).
    const map = Float32Array.from([0.9, 0.8, 0.3, 0.2, 0.5, 0.1]);
    const channel = Uint8Array.from([1, 1, 1, 1, 0, 0]);
    const spro = await auSpro([{ anomalyMap: map, channels: [channel], saturationAreas: [2], width: 3, height: 2 }], { limits: [1, 0.3] });
    expect(spro).toEqual({ '1.0': 1, '0.3': 1 });
    const pro = await auPro([{ anomalyMap: map, mask: channel, width: 3, height: 2 }], { limits: [1] });
    expect(pro.aupro['1.0']).toBeCloseTo(0.75, 15);
  });

  test('matches the official sPRO / FPR / trapz at every threshold on the fixture', async () => {
    const { width, height, images } = fixture.loco;
    for (const kind of ['logical_anomalies', 'structural_anomalies'] as const) {
      const subset = images
        .filter((im) => im.kind === 'good' || im.kind === kind)
        .map((im) => ({ anomalyMap: Float32Array.from(im.map), channels: im.channels.map((c) => Uint8Array.from(c)), saturationAreas: im.saturation, width, height }));
      const r = await auSpro(subset);
      expect(Object.keys(r)).toEqual(['0.01', '0.05', '0.1', '0.3', '1.0']);
      Object.values(r).forEach((v, i) => expect(v).toBeCloseTo(OFFICIAL.loco[kind][i], 12));
    }
  });

  test('exact errors', () => {
    const img = { anomalyMap: new Float32Array(4), channels: [Uint8Array.from([1, 1, 0, 0])], saturationAreas: [3], width: 2, height: 2 };
    expect(() => new PixelAccumulator().addChannelImages([img])).toThrow(
      'Expected integer between 1 and 2 for images[0].saturationAreas[0] but received 3 of type number',
    );
    const acc = new PixelAccumulator();
    void acc.addChannelImages([{ ...img, saturationAreas: [2] }]);
    expect(() => acc.addImages([{ anomalyMap: new Float32Array(1), width: 1, height: 1 }])).toThrow(
      'Cannot mix binary masks and LOCO channels in one PixelAccumulator',
    );
  });
});

describe('forgetting measure', () => {
  test('FM_j^k = max_{l<k} T[l][j] - T[k][j], mean over j < k', () => {
    const r = forgettingMeasure([[0.9], [0.8, 0.95], [0.7, 0.9, 0.99]]);
    expect(r.perTask[0]).toBeCloseTo(0.2, 15);
    expect(r.perTask[1]).toBeCloseTo(0.05, 15);
    expect(r.mean).toBeCloseTo(0.125, 15);
    expect(forgettingMeasure([[0.5]]).mean).toBeNaN();
  });

  test('exact errors', () => {
    expect(() => forgettingMeasure([])).toThrow('Expected non-empty number[][] for results but received Array(0) of type object');
    expect(() => forgettingMeasure([[0.9], [0.8]])).toThrow('Expected results[1] to hold the metric of tasks 0..1 but received Array(1) of type object');
    expect(() => forgettingMeasure([[Number.NaN]])).toThrow('Expected finite number for results[0][0] but received NaN of type number');
  });
});
