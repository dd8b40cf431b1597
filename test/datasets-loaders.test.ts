/** Dataset loaders on hand-made trees: missing masks, extra files, odd extensions, empty categories, bad metadata. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { listCategories, loadDataset, readLocoChannel } from '../lib/datasets';
import { parseCsv } from '../lib/datasets/files';
import { splitNormals } from '../lib/datasets/split';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-loaders-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let counter = 0;
function fresh(name: string): string {
  const dir = path.join(tmp, `${name}-${counter++}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

async function png(file: string, value = 128, width = 8, height = 8, format: 'png' | 'jpeg' = 'png'): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const img = sharp(Buffer.alloc(width * height, value), { raw: { width, height, channels: 1 } }).toColourspace('b-w');
  fs.writeFileSync(file, await (format === 'png' ? img.png() : img.jpeg()).toBuffer());
}

function touch(file: string, text = ''): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
}

async function mvtecTree(root: string): Promise<void> {
  await png(path.join(root, 'bottle', 'train', 'good', '000.png'));
  await png(path.join(root, 'bottle', 'train', 'good', '001.PNG'));
  await png(path.join(root, 'bottle', 'test', 'good', '000.png'));
  await png(path.join(root, 'bottle', 'test', 'crack', '000.png'));
  await png(path.join(root, 'bottle', 'test', 'broken', '001.JPG'), 100, 8, 8, 'jpeg');
  await png(path.join(root, 'bottle', 'ground_truth', 'crack', '000_mask.png'), 255);
  await png(path.join(root, 'bottle', 'ground_truth', 'broken', '001_mask.PNG'), 255);
}

describe('MVTec AD / MPDD', () => {
  it('lists samples in the stable order and ignores extra files', async () => {
    const root = fresh('mvtec');
    await mvtecTree(root);
    touch(path.join(root, 'license.txt'), 'CC BY-NC-SA');
    touch(path.join(root, 'bottle', 'train', 'good', 'notes.txt'));
    touch(path.join(root, 'bottle', 'train', 'good', '.DS_Store'));
    fs.mkdirSync(path.join(root, 'not_a_category'));
    expect(await listCategories('mvtec', root)).toEqual(['bottle']);
    const [cat] = await loadDataset('mpdd', root);
    expect(cat.name).toBe('bottle');
    expect(cat.samples.map((s) => [path.relative(root, s.path), s.split, s.label, s.defectType, s.maskPaths.map((m) => path.basename(m))])).toEqual([
      ['bottle/train/good/000.png', 'train', 'normal', 'good', []],
      ['bottle/train/good/001.PNG', 'train', 'normal', 'good', []],
      ['bottle/test/good/000.png', 'test', 'normal', 'good', []],
      ['bottle/test/broken/001.JPG', 'test', 'anomaly', 'broken', ['001_mask.PNG']],
      ['bottle/test/crack/000.png', 'test', 'anomaly', 'crack', ['000_mask.png']],
    ]);
  });

  it('names the missing mask', async () => {
    const root = fresh('mvtec');
    await mvtecTree(root);
    fs.rmSync(path.join(root, 'bottle', 'ground_truth', 'crack', '000_mask.png'));
    await expect(loadDataset('mvtec', root)).rejects.toThrow(
      `Missing ground-truth mask ${path.join(root, 'bottle', 'ground_truth', 'crack', '000_mask.png')} for ${path.join(root, 'bottle', 'test', 'crack', '000.png')}`,
    );
    await expect(loadDataset('mvtec', root)).rejects.toMatchObject({ code: 'ERR_IMIAD_LAYOUT' });
  });

  it('names a missing folder, an unknown category and an empty root', async () => {
    const root = fresh('mvtec');
    await png(path.join(root, 'cable', 'test', 'good', '000.png'));
    await expect(loadDataset('mvtec', root)).rejects.toThrow(`Missing folder ${path.join(root, 'cable', 'train', 'good')} (MVTec AD layout: <category>/train/good)`);
    await expect(loadDataset('mvtec', root, { categories: ['wood'] })).rejects.toThrow(`Category 'wood' not found in ${root} (MVTec AD categories there: cable)`);
    const empty = fresh('empty');
    await expect(loadDataset('mvtec', empty)).rejects.toThrow(`No MVTec AD categories in ${empty} (expected <category>/train/good and <category>/test)`);
    await expect(loadDataset('mvtec', path.join(empty, 'nope'))).rejects.toThrow(`Missing folder ${path.join(empty, 'nope')} (dataset root)`);
  });

  it('loads an empty category as a category without samples', async () => {
    const root = fresh('mvtec');
    fs.mkdirSync(path.join(root, 'zipper', 'train', 'good'), { recursive: true });
    fs.mkdirSync(path.join(root, 'zipper', 'test'), { recursive: true });
    const [cat] = await loadDataset('mvtec', root);
    expect(cat.samples).toEqual([]);
  });
});

describe('MVTec LOCO AD', () => {
  async function locoTree(root: string): Promise<string> {
    const cat = path.join(root, 'pushpins');
    await png(path.join(cat, 'train', 'good', '000.png'));
    await png(path.join(cat, 'validation', 'good', '000.png'));
    await png(path.join(cat, 'test', 'good', '000.png'));
    await png(path.join(cat, 'test', 'logical_anomalies', '000.png'));
    await png(path.join(cat, 'test', 'structural_anomalies', '000.png'));
    await png(path.join(cat, 'ground_truth', 'logical_anomalies', '000', '000.png'), 255);
    await png(path.join(cat, 'ground_truth', 'logical_anomalies', '000', '001.png'), 254);
    await png(path.join(cat, 'ground_truth', 'structural_anomalies', '000', '000.png'), 253);
    touch(
      path.join(cat, 'defects_config.json'),
      JSON.stringify([
        { defect_name: 'missing_pushpin', pixel_value: 255, saturation_threshold: 1.0, relative_saturation: true },
        { defect_name: 'additional_pushpin', pixel_value: 254, saturation_threshold: 40, relative_saturation: false },
        { defect_name: 'broken', pixel_value: 253, saturation_threshold: 0.5, relative_saturation: true },
      ]),
    );
    return cat;
  }

  it('groups one mask per defect under the image stem and links each to its saturation rule', async () => {
    const root = fresh('loco');
    await locoTree(root);
    const [cat] = await loadDataset('loco', root);
    expect(cat.samples.map((s) => [s.split, s.defectType, s.maskPaths.length])).toEqual([
      ['train', 'good', 0],
      ['validation', 'good', 0],
      ['test', 'good', 0],
      ['test', 'logical_anomalies', 2],
      ['test', 'structural_anomalies', 1],
    ]);
    const logical = cat.samples[3];
    const second = await readLocoChannel(logical.maskPaths[1], cat.defectsConfig ?? []);
    expect(second.pixelValue).toBe(254);
    expect(second.defect.defect_name).toBe('additional_pushpin');
    expect(second.saturationArea).toBe(40);
    const structural = await readLocoChannel(cat.samples[4].maskPaths[0], cat.defectsConfig ?? []);
    expect(structural.saturationArea).toBe(32); // int(0.5 * 64)
  });

  it('names a missing ground-truth folder and a malformed defects_config.json', async () => {
    const root = fresh('loco');
    const cat = await locoTree(root);
    fs.rmSync(path.join(cat, 'ground_truth', 'structural_anomalies', '000'), { recursive: true });
    await expect(loadDataset('loco', root)).rejects.toThrow(
      `Missing ground-truth folder ${path.join(cat, 'ground_truth', 'structural_anomalies', '000')} for ${path.join(cat, 'test', 'structural_anomalies', '000.png')}`,
    );
    touch(path.join(cat, 'defects_config.json'), '[{"defect_name": "x", "pixel_value": "255"}]');
    await expect(loadDataset('loco', root)).rejects.toThrow(
      `Malformed ${path.join(cat, 'defects_config.json')}: entry 0 needs defect_name (string), pixel_value (integer), saturation_threshold (number), relative_saturation (boolean)`,
    );
  });
});

describe('BTAD', () => {
  it('matches masks by stem whatever their extension', async () => {
    const root = fresh('btad');
    await png(path.join(root, '03', 'train', 'ok', '0000.png'));
    await png(path.join(root, '03', 'test', 'ok', '0000.png'));
    await png(path.join(root, '03', 'test', 'ko', '0000.png'));
    await png(path.join(root, '03', 'test', 'ko', '0001.png'));
    await png(path.join(root, '03', 'ground_truth', 'ko', '0000.png'), 255);
    // A BMP mask next to a PNG image, as in the real product 03.
    touch(path.join(root, '03', 'ground_truth', 'ko', '0001.BMP'), 'BM');
    touch(path.join(root, '01', 'readme.md'));
    const [cat] = await loadDataset('btad', root);
    expect(cat.name).toBe('03');
    expect(cat.samples.filter((s) => s.label === 'anomaly').map((s) => path.basename(s.maskPaths[0]))).toEqual(['0000.png', '0001.BMP']);
    fs.rmSync(path.join(root, '03', 'ground_truth', 'ko', '0000.png'));
    await expect(loadDataset('btad', root)).rejects.toThrow(
      `Missing ground-truth mask ${path.join(root, '03', 'ground_truth', 'ko', '0000.png')} (or .bmp) for ${path.join(root, '03', 'test', 'ko', '0000.png')}`,
    );
  });
});

describe('MTD', () => {
  async function mtdTree(root: string, normals: number, anomalies: number): Promise<void> {
    for (let i = 0; i < normals; i++) {
      await png(path.join(root, 'MT_Free', 'Imgs', `exp1_num_${100 + i}.jpg`), 90, 8, 8, 'jpeg');
      await png(path.join(root, 'MT_Free', 'Imgs', `exp1_num_${100 + i}.png`), 0);
    }
    for (let i = 0; i < anomalies; i++) {
      await png(path.join(root, 'MT_Crack', 'Imgs', `exp2_num_${200 + i}.jpg`), 90, 8, 8, 'jpeg');
      await png(path.join(root, 'MT_Crack', 'Imgs', `exp2_num_${200 + i}.png`), 255);
    }
  }

  it('splits the normal images by the documented seeded rule and records the split', async () => {
    const root = fresh('mtd');
    await mtdTree(root, 9, 3);
    const [cat] = await loadDataset('mtd', root, { seed: 3 });
    const testNormals = cat.samples.filter((s) => s.split === 'test' && s.label === 'normal').map((s) => path.relative(root, s.path));
    expect(testNormals).toHaveLength(3); // min(3 anomalies, floor(9 / 2))
    expect(testNormals).toEqual(splitNormals(cat.splitManifest?.train_normal.concat(cat.splitManifest.test_normal) ?? [], 3, 3).test);
    expect(cat.splitManifest?.test_normal).toEqual(testNormals);
    expect(cat.samples.filter((s) => s.label === 'anomaly').map((s) => s.defectType)).toEqual(['Crack', 'Crack', 'Crack']);
    const again = await loadDataset('mtd', root, { seed: 3 });
    expect(again[0].samples).toEqual(cat.samples);
    const other = await loadDataset('mtd', root, { seed: 4 });
    expect(other[0].splitManifest?.test_normal).not.toEqual(testNormals);
  });

  it('writes the split manifest once and reuses it', async () => {
    const root = fresh('mtd');
    await mtdTree(root, 6, 2);
    const file = path.join(fresh('manifest'), 'split.json');
    const [first] = await loadDataset('mtd', root, { seed: 1, splitFile: file });
    const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(manifest.test_normal).toEqual(first.splitManifest?.test_normal);
    expect(manifest.rule).toContain('min(anomalies, floor(normals / 2))');
    const [reused] = await loadDataset('mtd', root, { seed: 999, splitFile: file });
    expect(reused.samples).toEqual(first.samples);
    await png(path.join(root, 'MT_Free', 'Imgs', 'exp9_num_1.jpg'), 90, 8, 8, 'jpeg');
    await expect(loadDataset('mtd', root, { splitFile: file })).rejects.toThrow(
      `Normal image ${path.join(root, 'MT_Free', 'Imgs', 'exp9_num_1.jpg')} is not listed in the split manifest ${file}`,
    );
  });

  it('names a defect image without its mask', async () => {
    const root = fresh('mtd');
    await mtdTree(root, 2, 1);
    fs.rmSync(path.join(root, 'MT_Crack', 'Imgs', 'exp2_num_200.png'));
    await expect(loadDataset('mtd', root)).rejects.toThrow(
      `Missing ground-truth mask ${path.join(root, 'MT_Crack', 'Imgs', 'exp2_num_200.png')} for ${path.join(root, 'MT_Crack', 'Imgs', 'exp2_num_200.jpg')}`,
    );
  });
});

describe('VisA', () => {
  async function visaTree(root: string): Promise<void> {
    await png(path.join(root, 'candle', 'Data', 'Images', 'Normal', '0000.JPG'), 90, 8, 8, 'jpeg');
    await png(path.join(root, 'candle', 'Data', 'Images', 'Normal', '0001.JPG'), 90, 8, 8, 'jpeg');
    await png(path.join(root, 'candle', 'Data', 'Images', 'Anomaly', '000.JPG'), 90, 8, 8, 'jpeg');
    await png(path.join(root, 'candle', 'Data', 'Masks', 'Anomaly', '000.png'), 255);
    touch(
      path.join(root, 'split_csv', '1cls.csv'),
      'object,split,label,image,mask\r\ncandle,train,normal,candle/Data/Images/Normal/0001.JPG,\r\ncandle,test,normal,candle/Data/Images/Normal/0000.JPG,\r\ncandle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\r\n',
    );
    touch(path.join(root, 'candle', 'image_anno.csv'), 'image,label,mask\ncandle/Data/Images/Anomaly/000.JPG,"wax missing, damaged",candle/Data/Masks/Anomaly/000.png\n');
  }

  it('follows split_csv/1cls.csv and takes defect types from image_anno.csv', async () => {
    const root = fresh('visa');
    await visaTree(root);
    const [cat] = await loadDataset('visa', root);
    expect(cat.samples.map((s) => [path.basename(s.path), s.split, s.label, s.defectType])).toEqual([
      ['0001.JPG', 'train', 'normal', 'good'],
      ['0000.JPG', 'test', 'normal', 'good'],
      ['000.JPG', 'test', 'anomaly', 'wax missing, damaged'],
    ]);
  });

  it('names a malformed CSV and a missing image', async () => {
    const root = fresh('visa');
    await visaTree(root);
    const csv = path.join(root, 'split_csv', '1cls.csv');
    fs.rmSync(path.join(root, 'candle', 'Data', 'Images', 'Normal', '0001.JPG'));
    await expect(loadDataset('visa', root)).rejects.toThrow(`Missing image ${path.join(root, 'candle', 'Data', 'Images', 'Normal', '0001.JPG')} (listed in ${csv})`);
    touch(csv, 'object,label,image\ncandle,normal,x.JPG\n');
    await expect(loadDataset('visa', root)).rejects.toThrow(`Malformed ${csv}: expected the header object,split,label,image,mask but found object,label,image`);
  });

  it('parses quoted CSV fields', () => {
    expect(parseCsv('a,"b, c","d ""e"""\n\n1,2,3')).toEqual([
      ['a', 'b, c', 'd "e"'],
      ['1', '2', '3'],
    ]);
  });
});

describe('DAGM 2007', () => {
  async function dagmTree(root: string, labels: string): Promise<void> {
    for (const split of ['Train', 'Test']) {
      await png(path.join(root, 'Class10', split, '0001.PNG'));
      await png(path.join(root, 'Class10', split, '0002.PNG'));
      await png(path.join(root, 'Class10', split, 'Label', '0002_label.PNG'), 255);
      touch(path.join(root, 'Class10', split, 'Label', 'Labels.txt'), labels);
    }
    await png(path.join(root, 'Class2', 'Train', '0001.PNG'));
    await png(path.join(root, 'Class2', 'Test', '0001.PNG'));
    touch(path.join(root, 'Class2', 'Train', 'Label', 'Labels.txt'), '2\n1\t0\t0001.PNG\t0\t0\n');
    touch(path.join(root, 'Class2', 'Test', 'Label', 'Labels.txt'), '2\n1\t0\t0001.PNG\t0\t0\n');
  }

  it('reads Labels.txt (with a BOM and CRLF) and orders classes naturally', async () => {
    const root = fresh('dagm');
    await dagmTree(root, '\ufeff10\r\n1\t0\t0001.PNG\t0\t0\r\n2\t1\t0002.PNG\t0\t0002_label.PNG\r\n');
    expect(await listCategories('dagm', root)).toEqual(['Class2', 'Class10']);
    const cats = await loadDataset('dagm', root);
    expect(cats[1].samples.map((s) => [s.split, s.label, path.basename(s.path), s.maskPaths.map((m) => path.basename(m))])).toEqual([
      ['train', 'normal', '0001.PNG', []],
      ['train', 'anomaly', '0002.PNG', ['0002_label.PNG']],
      ['test', 'normal', '0001.PNG', []],
      ['test', 'anomaly', '0002.PNG', ['0002_label.PNG']],
    ]);
  });

  it('names a malformed line', async () => {
    const root = fresh('dagm');
    await dagmTree(root, '10\n1\t0\t0001.PNG\t0\t0\n2\tyes\t0002.PNG\n');
    await expect(loadDataset('dagm', root, { categories: ['Class10'] })).rejects.toThrow(
      `Malformed ${path.join(root, 'Class10', 'Train', 'Label', 'Labels.txt')} line 3: expected 'id flag image 0 label' but found '2\tyes\t0002.PNG'`,
    );
  });
});

describe('folder layout', () => {
  async function folderTree(root: string): Promise<void> {
    for (let i = 0; i < 6; i++) await png(path.join(root, 'ok', `n${i}.png`));
    await png(path.join(root, 'bad', 'a.png'));
    await png(path.join(root, 'bad', 'scratch', 'b.tif'));
    await png(path.join(root, 'gt', 'a_mask.png'), 255);
    await png(path.join(root, 'gt', 'scratch', 'b.PNG'), 255);
  }

  it('matches masks by stem or stem_mask, takes sub-folders as defect types and splits normals by seed', async () => {
    const root = fresh('folder');
    await folderTree(root);
    const [cat] = await loadDataset('folder', root, { folder: { normal: 'ok', anomaly: 'bad', masks: 'gt', name: 'parts' } });
    expect(cat.name).toBe('parts');
    const anomalies = cat.samples.filter((s) => s.label === 'anomaly');
    expect(anomalies.map((s) => [s.defectType, path.basename(s.path), path.basename(s.maskPaths[0])])).toEqual([
      ['anomaly', 'a.png', 'a_mask.png'],
      ['scratch', 'b.tif', 'b.PNG'],
    ]);
    expect(cat.samples.filter((s) => s.label === 'normal' && s.split === 'test')).toHaveLength(2);
    expect(cat.splitManifest?.test_normal).toEqual(splitNormals(['n0.png', 'n1.png', 'n2.png', 'n3.png', 'n4.png', 'n5.png'], 2, 0).test);
  });

  it('uses --test-normal when given and names a missing mask', async () => {
    const root = fresh('folder');
    await folderTree(root);
    await png(path.join(root, 'ok-test', 't0.png'));
    const [cat] = await loadDataset('folder', root, { folder: { normal: 'ok', anomaly: 'bad', testNormal: 'ok-test' } });
    expect(cat.samples.filter((s) => s.split === 'train')).toHaveLength(6);
    expect(cat.samples.filter((s) => s.split === 'test' && s.label === 'normal').map((s) => path.basename(s.path))).toEqual(['t0.png']);
    expect(cat.samples.filter((s) => s.label === 'anomaly').every((s) => s.maskPaths.length === 0)).toBe(true);
    fs.rmSync(path.join(root, 'gt', 'a_mask.png'));
    await expect(loadDataset('folder', root, { folder: { normal: 'ok', anomaly: 'bad', masks: 'gt' } })).rejects.toThrow(
      `Missing mask for ${path.join(root, 'bad', 'a.png')}: expected ${path.join(root, 'gt', 'a.png')} or ${path.join(root, 'gt', 'a_mask.png')}`,
    );
  });

  it('rejects ambiguous masks and an unknown dataset name', async () => {
    const root = fresh('folder');
    await folderTree(root);
    await png(path.join(root, 'gt', 'a.png'), 255);
    await expect(loadDataset('folder', root, { folder: { normal: 'ok', anomaly: 'bad', masks: 'gt' } })).rejects.toThrow(
      `Ambiguous masks ${path.join(root, 'gt', 'a.png')} and ${path.join(root, 'gt', 'a_mask.png')} for ${path.join(root, 'bad', 'a.png')}`,
    );
    await expect(loadDataset('coco' as never, root)).rejects.toThrow('Unknown dataset \'coco\' (one of mvtec, mpdd, loco, btad, mtd, visa, dagm, folder)');
  });
});
