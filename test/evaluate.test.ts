import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

import { packageRoot } from '../bindings/load';
import { runEvaluate } from '../lib/cli/evaluate';
import { loadDataset } from '../lib/datasets';
import { decodeNpy, decodeTiff, encodeNpy, encodeTiff, evaluateCategory, readAnomalyMap } from '../lib/metrics';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const fixture = require('./fixtures/metrics_reference.json') as {
  mvtec: { width: number; height: number; maps: number[][]; masks: number[][]; labels: number[] };
  loco: {
    width: number;
    height: number;
    defects_config: unknown[];
    images: { kind: string; map: number[]; channels: number[][]; saturation: number[] }[];
  };
};

// The official numbers for the fixture (see test/fixtures/metrics_reference.py and test/metrics.test.ts).
const MVTEC = { image_auroc: 0.5416666666666666, image_ap: 0.7222222222222222, pixel_auroc: 0.8101478723404255, pixel_ap: 0.1502840379310375, aupro: 0.5415797365365442, f1_max: 0.8 };
const LOCO = {
  logical_anomalies: [0.15416338041861094, 0.37816939076553735, 0.45276273727962707, 0.5736873059621567, 0.8061760330019612],
  structural_anomalies: [0.07493018247184914, 0.3927928141817031, 0.5352085029168362, 0.7723392671408545, 0.9218796635463302],
  classification: { logical_anomalies: 0.7222222222222222, structural_anomalies: 0.5555555555555556 },
};

const cli = path.join(packageRoot(), 'dist', 'lib', 'cli.js');
let tmp: string;

async function writeGrey(file: string, values: ArrayLike<number>, width: number, height: number): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(Buffer.from(Uint8Array.from(values)), { raw: { width, height, channels: 1 } }).png().toFile(file);
}

async function writeImage(file: string, width: number, height: number): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp({ create: { width, height, channels: 3, background: { r: 90, g: 120, b: 30 } } }).png().toFile(file);
}

function writeMap(file: string, data: Float32Array, width: number, height: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const map = { data, width, height };
  if (file.endsWith('.npy')) fs.writeFileSync(file, encodeNpy(map));
  else fs.writeFileSync(file, encodeTiff(map, !file.endsWith('.tif')));
}

/** MVTec AD layout of the fixture: 4 good images, 3 'crack' and 3 'broken_large'; maps as .tiff, .tif (big endian) and .npy. */
async function buildMvtec(root: string): Promise<void> {
  const { width, height, maps, masks } = fixture.mvtec;
  await writeImage(path.join(root, 'data', 'widget', 'train', 'good', '000.png'), width, height);
  for (let i = 0; i < maps.length; i++) {
    const defect = i < 4 ? 'good' : i < 7 ? 'crack' : 'broken_large';
    const stem = String(i).padStart(3, '0');
    await writeImage(path.join(root, 'data', 'widget', 'test', defect, `${stem}.png`), width, height);
    if (defect !== 'good') await writeGrey(path.join(root, 'data', 'widget', 'ground_truth', defect, `${stem}_mask.png`), masks[i].map((v) => v * 255), width, height);
    const ext = i === 5 ? '.tif' : i === 8 ? '.npy' : '.tiff';
    writeMap(path.join(root, 'maps', 'widget', 'test', defect, stem + ext), Float32Array.from(maps[i]), width, height);
  }
}

async function buildLoco(root: string): Promise<void> {
  const { width, height, images, defects_config } = fixture.loco;
  const cat = path.join(root, 'loco', 'box');
  fs.mkdirSync(cat, { recursive: true });
  fs.writeFileSync(path.join(cat, 'defects_config.json'), JSON.stringify(defects_config));
  await writeImage(path.join(cat, 'train', 'good', '000.png'), width, height);
  await writeImage(path.join(cat, 'validation', 'good', '000.png'), width, height);
  for (let i = 0; i < images.length; i++) {
    const im = images[i];
    const stem = String(i).padStart(3, '0');
    await writeImage(path.join(cat, 'test', im.kind, `${stem}.png`), width, height);
    for (let c = 0; c < im.channels.length; c++) {
      await writeGrey(path.join(cat, 'ground_truth', im.kind, stem, `${String(c).padStart(3, '0')}.png`), im.channels[c], width, height);
    }
    writeMap(path.join(root, 'loco-maps', 'box', 'test', im.kind, `${stem}.tiff`), Float32Array.from(im.map), width, height);
  }
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-evaluate-'));
  await buildMvtec(tmp);
  await buildLoco(tmp);
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('anomaly map files', () => {
  test('TIFF (both byte orders) and .npy round-trip float32 maps exactly', () => {
    const data = Float32Array.from([0.25, -1.5, 3.4028234663852886e38, 1e-30, 0, 7]);
    for (const little of [true, false]) {
      const back = decodeTiff(encodeTiff({ data, width: 3, height: 2 }, little), 'x.tiff');
      expect([back.width, back.height]).toEqual([3, 2]);
      expect(Array.from(back.data)).toEqual(Array.from(data));
    }
    const npy = decodeNpy(encodeNpy({ data, width: 2, height: 3 }), 'x.npy');
    expect([npy.width, npy.height]).toEqual([2, 3]);
    expect(Array.from(npy.data)).toEqual(Array.from(data));
  });

  test('16-bit and 8-bit grey PNG maps give their stored integers as scores', async () => {
    const values = Uint16Array.from({ length: 15 }, (_, i) => i * 4000 + 7);
    const file16 = path.join(tmp, 'map16.png');
    await sharp(values, { raw: { width: 5, height: 3, channels: 1 } }).toColourspace('grey16').png().toFile(file16);
    const m16 = await readAnomalyMap(file16);
    expect([m16.width, m16.height]).toEqual([5, 3]);
    expect(Array.from(m16.data)).toEqual(Array.from(values));
    const file8 = path.join(tmp, 'map8.png');
    await writeGrey(file8, [0, 17, 255, 128], 2, 2);
    expect(Array.from((await readAnomalyMap(file8)).data)).toEqual([0, 17, 255, 128]);
  });

  test('a file that is not a TIFF is an error naming it', () => {
    expect(() => decodeTiff(Buffer.from('hello world'), '/maps/a.tiff')).toThrow('Cannot read anomaly map /maps/a.tiff: not a TIFF file');
  });
});

describe('imiad evaluate', () => {
  test('MVTec AD layout: the official numbers', async () => {
    const r = await runEvaluate({ dataset: 'mvtec', root: path.join(tmp, 'data'), maps: path.join(tmp, 'maps') });
    expect(Object.keys(r)).toEqual(['widget']);
    const m = r.widget as { image_auroc: number; image_ap: number; pixel_auroc: number; pixel_ap: number; aupro: Record<string, number>; f1_max: number };
    expect(Object.keys(m)).toEqual(['image_auroc', 'image_ap', 'pixel_auroc', 'pixel_ap', 'aupro', 'f1_max']);
    expect(m.image_auroc).toBeCloseTo(MVTEC.image_auroc, 12);
    expect(m.image_ap).toBeCloseTo(MVTEC.image_ap, 12);
    expect(m.pixel_auroc).toBeCloseTo(MVTEC.pixel_auroc, 12);
    expect(m.pixel_ap).toBeCloseTo(MVTEC.pixel_ap, 12);
    expect(Object.keys(m.aupro)).toEqual(['0.3']);
    expect(m.aupro['0.3']).toBeCloseTo(MVTEC.aupro, 12);
    expect(m.f1_max).toBeCloseTo(MVTEC.f1_max, 12);
  });

  test('the per-category API gives the same numbers from in-memory maps', async () => {
    const [category] = await loadDataset('mvtec', path.join(tmp, 'data'), { categories: ['widget'] });
    const { width, height, maps } = fixture.mvtec;
    const byStem = (p: string): number => Number(path.basename(p, '.png'));
    const r = await evaluateCategory(category, (sample) => ({ anomalyMap: Float32Array.from(maps[byStem(sample.path)]), width, height }));
    expect(r.pixel_auroc).toBeCloseTo(MVTEC.pixel_auroc, 12);
    expect(r.aupro['0.3']).toBeCloseTo(MVTEC.aupro, 12);
    expect(r.details.regions).toBe(12);
  });

  test('MVTec LOCO AD layout: the official script\'s shape and numbers', async () => {
    const r = await runEvaluate({ dataset: 'loco', root: path.join(tmp, 'loco'), maps: path.join(tmp, 'loco-maps') });
    const box = r.box as { localization: Record<string, Record<string, number>>; classification: Record<string, number> };
    expect(Object.keys(box)).toEqual(['localization', 'classification']);
    expect(Object.keys(box.localization)).toEqual(['logical_anomalies', 'structural_anomalies', 'mean']);
    for (const kind of ['logical_anomalies', 'structural_anomalies'] as const) {
      expect(Object.keys(box.localization[kind])).toEqual(['0.01', '0.05', '0.1', '0.3', '1.0']);
      Object.values(box.localization[kind]).forEach((v, i) => expect(v).toBeCloseTo(LOCO[kind][i], 12));
      expect(box.classification[kind]).toBeCloseTo(LOCO.classification[kind], 12);
    }
    expect(box.localization.mean['0.05']).toBeCloseTo(0.5 * (LOCO.logical_anomalies[1] + LOCO.structural_anomalies[1]), 12);
    expect(box.classification.mean).toBeCloseTo(0.5 * (LOCO.classification.logical_anomalies + LOCO.classification.structural_anomalies), 12);
  });

  test('the command prints a table, writes the JSON and exits 0', () => {
    const out = path.join(tmp, 'out', 'metrics.json');
    const r = spawnSync(process.execPath, [cli, 'evaluate', '--dataset', 'mvtec', '--root', path.join(tmp, 'data'), '--maps', path.join(tmp, 'maps'), '--pro-limit', '0.05', '--json', out], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/category\s+image AUROC\s+image AP\s+pixel AUROC\s+pixel AP\s+AU-PRO@0\.05\s+F1-max/);
    expect(r.stdout).toMatch(/widget\s+0\.5417\s+0\.7222\s+0\.8101\s+0\.1503\s+0\.2396\s+0\.8000/);
    expect(r.stdout).toContain(`JSON written to ${out}`);
    // The results schema (docs/json-schema.md): AU-PRO@0.3 is pixelPRO as everywhere, the asked limit beside it.
    const json = JSON.parse(fs.readFileSync(out, 'utf8')) as { schema: string; command: string; results: { category: string; metrics: Record<string, number | null> }[] };
    expect([json.schema, json.command]).toEqual(['imiad-results/1', 'evaluate']);
    expect(json.results.map((x) => x.category)).toEqual(['widget']);
    const m = json.results[0].metrics;
    expect(m['pixelPRO@0.05']).toBeCloseTo(0.23960865697020264, 12);
    expect(m.pixelPRO).toBeCloseTo(MVTEC.aupro, 12);
    expect(m.imageAUROC).toBeCloseTo(MVTEC.image_auroc, 12);
    expect(m.imageF1Max).toBeCloseTo(MVTEC.f1_max, 12);
  });

  function runCli(args: string[]): { status: number | null; stderr: string } {
    const r = spawnSync(process.execPath, [cli, 'evaluate', ...args], { encoding: 'utf8' });
    return { status: r.status, stderr: r.stderr };
  }

  test('a missing map is an error naming the file, exit code 2', () => {
    const maps = path.join(tmp, 'maps-missing');
    fs.cpSync(path.join(tmp, 'maps'), maps, { recursive: true });
    fs.rmSync(path.join(maps, 'widget', 'test', 'crack', '006.tiff'));
    const r = runCli(['--dataset', 'mvtec', '--root', path.join(tmp, 'data'), '--maps', maps]);
    expect(r.status).toBe(2);
    const image = path.join(tmp, 'data', 'widget', 'test', 'crack', '006.png');
    expect(r.stderr).toBe(`imiad: Missing anomaly map for ${image}: expected ${path.join(maps, 'widget', 'test', 'crack', '006')}.tiff (or .tif, .npy, .png)\n`);
  });

  test('a map of the wrong size is an error naming both files, exit code 2', () => {
    const maps = path.join(tmp, 'maps-size');
    fs.cpSync(path.join(tmp, 'maps'), maps, { recursive: true });
    const bad = path.join(maps, 'widget', 'test', 'crack', '005.tif');
    writeMap(bad, new Float32Array(12), 4, 3);
    const r = runCli(['--dataset', 'mvtec', '--root', path.join(tmp, 'data'), '--maps', maps]);
    expect(r.status).toBe(2);
    const mask = path.join(tmp, 'data', 'widget', 'ground_truth', 'crack', '005_mask.png');
    expect(r.stderr).toBe(`imiad: Anomaly map ${bad} is 4x3 but mask ${mask} is 24x20\n`);
  });

  test('bad arguments exit with code 2 and one clear line', () => {
    const base = ['--root', path.join(tmp, 'data'), '--maps', path.join(tmp, 'maps')];
    expect(runCli(['--dataset', 'mvtec', ...base, '--pro-limit', '1.5'])).toEqual({ status: 2, stderr: 'imiad: Expected number in (0, 1] for --pro-limit but received 1.5 of type string\n' });
    expect(runCli(['--dataset', 'kitti', ...base])).toEqual({
      status: 2,
      stderr: 'imiad: Expected one of mvtec, loco, mpdd, btad, visa, mtd, dagm for --dataset but received kitti of type string\n',
    });
    expect(runCli(['--dataset', 'mvtec', ...base, '--categories', 'nope'])).toEqual({
      status: 2,
      stderr: `imiad: Category 'nope' not found in ${path.join(tmp, 'data')} (MVTec AD categories there: widget)\n`,
    });
    expect(runCli(['--dataset', 'mvtec', '--root', path.join(tmp, 'data')]).status).toBe(2);
  });
});
