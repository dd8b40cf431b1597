/** imiad synth: every layout round-trips through its loader and inspect; same seed, same bytes. */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { loadDataset } from '../lib/datasets';
import { inspectDataset } from '../lib/datasets/inspect';
import { synthesize, SYNTH_LAYOUTS } from '../lib/datasets/synth';
import { readMask, readMaskWithValue } from '../lib/image/mask';
import { prepareImage } from '../lib/image/pipeline';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-synth-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(dir);
  return out;
}

function treeHash(dir: string): string {
  const h = createHash('sha256');
  for (const f of listFiles(dir)) {
    h.update(path.relative(dir, f));
    h.update(fs.readFileSync(f));
  }
  return h.digest('hex');
}

const small = { size: 48, train: 4, test: 8 };

/**
 * Patch features of a simple detector: the normalised image at 48 px, averaged over 4 x 4 cells, each 3 x 3
 * neighbourhood of cells a 27-dimensional patch.
 */
async function patchFeatures(file: string): Promise<Float32Array[]> {
  const S = 48;
  const pool = 4;
  const g = S / pool;
  const t = (await prepareImage(file, { imageSize: S, cropSize: S })).tensor;
  const cells = new Float32Array(3 * g * g);
  for (let c = 0; c < 3; c++) for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) cells[c * g * g + Math.floor(y / pool) * g + Math.floor(x / pool)] += t[c * S * S + y * S + x] / (pool * pool);
  const out: Float32Array[] = [];
  for (let y = 1; y < g - 1; y++)
    for (let x = 1; x < g - 1; x++) {
      const f = new Float32Array(27);
      let k = 0;
      for (let c = 0; c < 3; c++) for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) f[k++] = cells[c * g * g + (y + dy) * g + x + dx];
      out.push(f);
    }
  return out;
}

/** Image AUROC of a nearest-neighbour patch detector (score: the largest patch distance to the training patches). */
async function simpleDetectorAuroc(train: string[], normal: string[], anomalous: string[]): Promise<number> {
  const bank = (await Promise.all(train.map(patchFeatures))).flat();
  const score = async (file: string): Promise<number> => {
    let worst = 0;
    for (const f of await patchFeatures(file)) {
      let best = Infinity;
      for (const b of bank) {
        let d = 0;
        for (let k = 0; k < 27; k++) d += (f[k] - b[k]) ** 2;
        best = Math.min(best, d);
      }
      worst = Math.max(worst, best);
    }
    return worst;
  };
  const neg = await Promise.all(normal.map(score));
  const pos = await Promise.all(anomalous.map(score));
  let wins = 0;
  for (const p of pos) for (const n of neg) wins += p > n ? 1 : p === n ? 0.5 : 0;
  return wins / (pos.length * neg.length);
}

describe.each(SYNTH_LAYOUTS.map((l) => [l]))('%s', (layout) => {
  const root = path.join(tmp, layout);
  let written: Awaited<ReturnType<typeof synthesize>>;

  beforeAll(async () => {
    written = await synthesize(layout, root, { ...small, seed: 7 });
  });

  it('loads back and inspects to exactly what was written', async () => {
    const categories = await loadDataset(layout, root);
    const stats = await inspectDataset(categories);
    expect(stats).toEqual(written);
    const expectedCategories = layout === 'mtd' ? 1 : 2;
    expect(Object.keys(stats)).toHaveLength(expectedCategories);
    for (const s of Object.values(stats)) {
      expect(s.test_anomaly).toBeGreaterThan(0);
      expect(s.test_normal + s.test_anomaly).toBe(small.test);
    }
  });

  it('gives every anomaly a non-empty mask of its image size, and normal images none', async () => {
    const categories = await loadDataset(layout, root);
    for (const c of categories) {
      for (const s of c.samples) {
        if (s.label === 'normal') {
          expect(s.maskPaths).toEqual([]);
          continue;
        }
        expect(s.maskPaths.length).toBeGreaterThan(0);
        for (const m of s.maskPaths) {
          const mask = await readMask(m);
          expect(mask.data.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
        }
      }
    }
  });

  it('has defects that a simple patch detector separates (image AUROC >= 0.9; LOCO: structural ones)', async () => {
    for (const c of await loadDataset(layout, root)) {
      const train = c.samples.filter((x) => x.split === 'train' && x.label === 'normal').map((x) => x.path);
      const normal = c.samples.filter((x) => x.split === 'test' && x.label === 'normal').map((x) => x.path);
      const anomalous = c.samples.filter((x) => x.label === 'anomaly' && x.split === 'test' && x.defectType !== 'logical_anomalies').map((x) => x.path);
      expect(await simpleDetectorAuroc(train, normal, anomalous)).toBeGreaterThanOrEqual(0.9);
    }
  });

  it('writes the same bytes for the same seed', async () => {
    const again = path.join(tmp, `${layout}-again`);
    await synthesize(layout, again, { ...small, seed: 7 });
    expect(treeHash(again)).toBe(treeHash(root));
  });
});

describe('layout details', () => {
  it('writes different bytes for another seed', async () => {
    const other = path.join(tmp, 'mvtec-other');
    await synthesize('mvtec', other, { ...small, seed: 8 });
    expect(treeHash(other)).not.toBe(treeHash(path.join(tmp, 'mvtec')));
  });

  it('LOCO masks carry the pixel values of defects_config.json', async () => {
    const [cat] = await loadDataset('loco', path.join(tmp, 'loco'), { categories: ['parts_tray'] });
    expect(cat.defectsConfig?.map((d) => d.defect_name)).toEqual(['missing_part', 'extra_part', 'scratch', 'stain', 'hole']);
    const values = new Set(cat.defectsConfig?.map((d) => d.pixel_value));
    const anomalies = cat.samples.filter((s) => s.label === 'anomaly');
    expect(anomalies.some((s) => s.maskPaths.length === 2)).toBe(true);
    for (const s of anomalies) for (const m of s.maskPaths) expect(values.has((await readMaskWithValue(m)).value)).toBe(true);
  });

  it('BTAD keeps the formats of the real products (01 BMP/PNG, 02 PNG/PNG)', async () => {
    const root = path.join(tmp, 'btad');
    expect(fs.readdirSync(path.join(root, '01', 'train', 'ok'))[0]).toBe('0000.bmp');
    expect(fs.readdirSync(path.join(root, '01', 'ground_truth', 'ko'))[0]).toBe('0000.png');
    expect(fs.readFileSync(path.join(root, '01', 'train', 'ok', '0000.bmp')).subarray(0, 2).toString()).toBe('BM');
    expect(fs.readdirSync(path.join(root, '02', 'train', 'ok'))[0]).toBe('0000.png');
  });

  it('DAGM writes Labels.txt with the class number first and label images for defective ones', () => {
    const text = fs.readFileSync(path.join(tmp, 'dagm', 'Class2', 'Train', 'Label', 'Labels.txt'), 'utf8').trim().split('\n');
    expect(text[0]).toBe('2');
    const defective = text.slice(1).filter((l) => l.split('\t')[1] === '1');
    expect(defective.length).toBe(Math.max(1, Math.floor(small.train / 5)));
    for (const l of defective) expect(l).toMatch(/^\d+\t1\t(\d{4})\.PNG\t0\t\1_label\.PNG$/);
  });

  it('VisA writes split_csv/1cls.csv with the published header', () => {
    const lines = fs.readFileSync(path.join(tmp, 'visa', 'split_csv', '1cls.csv'), 'utf8').trim().split('\n');
    expect(lines[0]).toBe('object,split,label,image,mask');
    expect(lines[1]).toMatch(/^capsule,(train|test),normal,capsule\/Data\/Images\/Normal\/\d{4}\.JPG,$/);
  });

  it('refuses a non-empty output folder and a bad layout', async () => {
    await expect(synthesize('mvtec', path.join(tmp, 'mvtec'))).rejects.toThrow(`Expected a new or empty folder for out but ${path.join(tmp, 'mvtec')} is not empty`);
    await expect(synthesize('coco' as never, path.join(tmp, 'x'))).rejects.toThrow(
      'Expected one of mvtec, mpdd, loco, btad, mtd, visa, dagm for layout but received coco of type string',
    );
    await expect(synthesize('btad', path.join(tmp, 'y'), { categories: 4 })).rejects.toThrow('Expected integer between 1 and 3 for categories but received 4 of type number');
  });
});
