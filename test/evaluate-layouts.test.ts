/**
 * `imiad evaluate` on every published layout: a tiny synthetic dataset per layout (imiad synth), maps derived from
 * the ground truth and written as TIFF at MAPS/<category>/test/<defect>/<stem>.tiff, scored through the command's
 * code path and compared with the per-category API on the same in-memory maps.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { runEvaluate } from '../lib/cli/evaluate';
import { loadDataset, type Sample } from '../lib/datasets';
import { SYNTH_LAYOUTS, synthesize } from '../lib/datasets/synth';
import { readImageSize } from '../lib/image/decode';
import { readMaskUnion } from '../lib/image/mask';
import { encodeTiff, evaluateCategory, evaluateLocoCategory, type Prediction } from '../lib/metrics';

let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-evaluate-layouts-'));
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A map that mostly follows the ground truth, with deterministic noise (so the metrics are neither 0 nor 1). */
async function predict(sample: Sample, index: number): Promise<Prediction> {
  const { width, height } = await readImageSize(sample.path);
  const mask = await readMaskUnion(sample.maskPaths, width, height);
  const map = new Float32Array(width * height);
  let s = (index + 1) * 2654435761;
  for (let p = 0; p < map.length; p++) {
    s = (s * 1103515245 + 12345) >>> 0;
    map[p] = (s / 4294967296) + 0.6 * mask.data[p];
  }
  return { anomalyMap: map, width, height };
}

describe.each(SYNTH_LAYOUTS.map((l) => [l]))('imiad evaluate on the %s layout', (layout) => {
  test('finds every map and gives the per-category API\'s numbers', async () => {
    const root = path.join(tmp, layout, 'data');
    const maps = path.join(tmp, layout, 'maps');
    await synthesize(layout, root, { categories: 1, size: 48, train: 2, test: 6, seed: 3 });
    const [category] = await loadDataset(layout, root);
    const test = category.samples.filter((s) => s.split === 'test');
    const predictions: Prediction[] = [];
    for (let i = 0; i < test.length; i++) {
      const p = await predict(test[i], i);
      predictions.push(p);
      const stem = path.basename(test[i].path, path.extname(test[i].path));
      const file = path.join(maps, category.name, 'test', test[i].defectType, `${stem}.tiff`);
      expect(fs.existsSync(file)).toBe(false); // one map per (defect, stem): the layout's stems are unique there
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, encodeTiff({ data: p.anomalyMap, width: p.width, height: p.height }));
    }
    const results = await runEvaluate({ dataset: layout, root, maps });
    expect(Object.keys(results)).toEqual([category.name]);
    if (layout === 'loco') {
      const direct = await evaluateLocoCategory(category, predictions);
      expect(results[category.name]).toEqual(direct);
      expect(direct.localization.mean['0.05']).toBeGreaterThan(0);
    } else {
      const direct = await evaluateCategory(category, predictions);
      const { details, ...metrics } = direct;
      expect(results[category.name]).toEqual(metrics);
      expect(metrics.pixel_auroc).toBeGreaterThan(0.5);
      expect(details.regions).toBeGreaterThan(0);
    }
  });
});
