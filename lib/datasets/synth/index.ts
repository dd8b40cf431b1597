/**
 * `imiad synth`: writes a small dataset in exactly one of the published layouts (file names, extensions, masks,
 * split CSV / Labels.txt / defects_config.json) from procedural scenes (lib/datasets/synth/render.ts).
 *
 * Per category: `train` normal training images; `test` test images, of which floor(test / 2) are normal and the
 * rest anomalous, the anomalies cycling through the category's defect types. Layout-specific additions:
 * LOCO writes max(1, floor(train / 4)) validation images and alternates logical / structural anomalies; DAGM puts
 * max(1, floor(train / 5)) defective images among the training images (as the real Train folders have); MTD writes
 * train + floor(test / 2) normal images to MT_Free, which its loader splits by the documented seeded rule.
 * The returned summary has the shape of `imiad datasets inspect --json`, so the two can be compared.
 */
import * as fs from 'fs';
import * as path from 'path';

import { imiadError, invalidRange, invalidType } from '../../../bindings/errors';
import * as is from '../../../bindings/is';
import { Random } from '../../prng';
import { byCodePoint, natural } from '../files';
import { emptyCategoryStats, type CategoryStats, type DatasetStats } from '../inspect';
import { MTD_DEFECT_FOLDERS, MTD_NORMAL_FOLDER } from '../mtd';
import { splitNormals } from '../split';
import type { LocoDefectConfig } from '../types';
import { writeMask, writePixels, type ImageFormat } from './encode';
import {
  categoryStyle,
  discMask,
  drawDefect,
  drawPart,
  renderScene,
  TEXTURE_KINDS,
  toBytes,
  type CategoryStyle,
  type DefectKind,
  type SceneKind,
} from './render';

export const SYNTH_LAYOUTS = ['mvtec', 'mpdd', 'loco', 'btad', 'mtd', 'visa', 'dagm'] as const;
export type SynthLayout = (typeof SYNTH_LAYOUTS)[number];

export interface SynthOptions {
  seed?: number;
  /** Number of categories (default 2; MTD always has its one product). */
  categories?: number;
  /** Image side in pixels (default 128); some layouts use non-square images of this height. */
  size?: number;
  /** Normal training images per category (default 10). */
  train?: number;
  /** Test images per category (default 8): floor(test / 2) normal, the rest anomalous. */
  test?: number;
  onProgress?: (done: number, total: number) => void;
}


const OBJECT_DEFECTS: DefectKind[] = ['hole', 'scratch', 'stain'];
const TEXTURE_DEFECTS: DefectKind[] = ['crack', 'hole', 'scratch', 'stain'];

const POOLS: Record<'mvtec' | 'mpdd' | 'visa', Array<[string, SceneKind]>> = {
  mvtec: [
    ['woven', 'woven'],
    ['disc', 'disc'],
    ['grid', 'grid'],
    ['screw', 'screw'],
    ['wood', 'wood'],
    ['bottle', 'bottle'],
    ['leather', 'leather'],
  ],
  mpdd: [
    ['bracket', 'disc'],
    ['metal_plate', 'leather'],
    ['connector', 'screw'],
    ['tubes', 'bottle'],
    ['grating', 'grid'],
  ],
  visa: [
    ['capsule', 'bottle'],
    ['pcb', 'grid'],
    ['candle', 'disc'],
    ['macaroni', 'screw'],
    ['fryum', 'wood'],
    ['cashew', 'leather'],
  ],
};

const DAGM_KINDS: SceneKind[] = ['leather', 'woven', 'grid', 'wood'];
const DAGM_DEFECTS: DefectKind[] = ['scratch', 'crack', 'hole', 'stain'];
const MTD_DEFECT_KIND: Record<string, DefectKind> = { MT_Blowhole: 'hole', MT_Break: 'crack', MT_Crack: 'crack', MT_Fray: 'scratch', MT_Uneven: 'stain' };

interface Resolved {
  seed: number;
  categories: number;
  size: number;
  train: number;
  test: number;
}

function resolve(layout: unknown, out: unknown, opts: SynthOptions): Resolved {
  if (typeof layout !== 'string' || !(SYNTH_LAYOUTS as readonly string[]).includes(layout)) {
    throw invalidType(`one of ${SYNTH_LAYOUTS.join(', ')}`, 'layout', layout);
  }
  if (typeof out !== 'string' || out === '') throw invalidType('folder path', 'out', out);
  const int = (v: unknown, name: string, min: number, max: number, fallback: number): number => {
    if (v === undefined) return fallback;
    if (!is.integer(v)) throw invalidType(`integer between ${min} and ${max}`, name, v);
    if (v < min || v > max) throw invalidRange(`integer between ${min} and ${max}`, name, v);
    return v;
  };
  const maxCategories: Record<SynthLayout, number> = { mvtec: 7, mpdd: 5, visa: 6, loco: 2, btad: 3, dagm: 10, mtd: 1 };
  return {
    seed: int(opts.seed, 'seed', 0, 0xffffffff, 0),
    categories: layout === 'mtd' ? 1 : int(opts.categories, 'categories', 1, maxCategories[layout as SynthLayout], 2),
    size: int(opts.size, 'size', 32, 4096, 128),
    train: int(opts.train, 'train', 1, 100000, 10),
    test: int(opts.test, 'test', 1, 100000, 8),
  };
}

class StatsBuilder {
  readonly stats: CategoryStats = emptyCategoryStats();
  private seen = false;

  add(split: 'train' | 'validation' | 'test', anomaly: boolean, width: number, height: number, defectType?: string): void {
    const key = `${split}_${anomaly ? 'anomaly' : 'normal'}` as keyof CategoryStats;
    (this.stats[key] as number) += 1;
    if (anomaly && defectType && !this.stats.defect_types.includes(defectType)) {
      this.stats.defect_types.push(defectType);
      this.stats.defect_types.sort(byCodePoint);
    }
    if (!this.seen) {
      this.stats.min_size = [width, height];
      this.stats.max_size = [width, height];
      this.seen = true;
    } else {
      this.stats.min_size = [Math.min(this.stats.min_size[0], width), Math.min(this.stats.min_size[1], height)];
      this.stats.max_size = [Math.max(this.stats.max_size[0], width), Math.max(this.stats.max_size[1], height)];
    }
  }
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0');

/** Renders one normal or anomalous image of a category. */
function renderImage(style: CategoryStyle, width: number, height: number, rng: Random, defects: DefectKind[]): { pixels: Uint8Array; masks: Uint8Array[] } {
  const scene = renderScene(style, width, height, rng);
  const masks = defects.map((kind) => drawDefect(scene.canvas, scene.region, kind, rng, style.grey));
  return { pixels: toBytes(scene.canvas, style.grey), masks };
}

interface Ctx {
  out: string;
  r: Resolved;
  root: Random;
  done: number;
  total: number;
  onProgress?: (done: number, total: number) => void;
}

function tick(ctx: Ctx): void {
  ctx.done++;
  ctx.onProgress?.(ctx.done, ctx.total);
}

function testCounts(test: number): { good: number; anomalous: number } {
  const good = Math.floor(test / 2);
  return { good, anomalous: test - good };
}

async function writeImage(ctx: Ctx, file: string, pixels: Uint8Array, w: number, h: number, grey: boolean, format: ImageFormat): Promise<void> {
  await writePixels(file, pixels, w, h, grey ? 1 : 3, format);
  tick(ctx);
}

// ------------------------------------------------------------------------------------------ MVTec AD / MPDD

async function synthMvtec(ctx: Ctx, pool: Array<[string, SceneKind]>): Promise<DatasetStats> {
  const result: DatasetStats = {};
  const { size, train, test } = ctx.r;
  for (const [name, kind] of pool.slice(0, ctx.r.categories)) {
    const rng = ctx.root.fork(name);
    const style = categoryStyle(kind, rng.fork('style'));
    const types = TEXTURE_KINDS.includes(kind) ? TEXTURE_DEFECTS : OBJECT_DEFECTS;
    const stats = new StatsBuilder();
    const cat = path.join(ctx.out, name);
    for (let i = 0; i < train; i++) {
      const img = renderImage(style, size, size, rng.fork('train', i), []);
      await writeImage(ctx, path.join(cat, 'train', 'good', `${pad(i, 3)}.png`), img.pixels, size, size, style.grey, 'png');
      stats.add('train', false, size, size);
    }
    const { good, anomalous } = testCounts(test);
    for (let i = 0; i < good; i++) {
      const img = renderImage(style, size, size, rng.fork('test', 'good', i), []);
      await writeImage(ctx, path.join(cat, 'test', 'good', `${pad(i, 3)}.png`), img.pixels, size, size, style.grey, 'png');
      stats.add('test', false, size, size);
    }
    const perType = new Map<string, number>();
    for (let j = 0; j < anomalous; j++) {
      const type = types[j % types.length];
      const k = perType.get(type) ?? 0;
      perType.set(type, k + 1);
      const img = renderImage(style, size, size, rng.fork('test', type, k), [type]);
      await writeImage(ctx, path.join(cat, 'test', type, `${pad(k, 3)}.png`), img.pixels, size, size, style.grey, 'png');
      await writeMask(path.join(cat, 'ground_truth', type, `${pad(k, 3)}_mask.png`), img.masks[0], size, size);
      stats.add('test', true, size, size, type);
    }
    result[name] = stats.stats;
  }
  return result;
}

// ------------------------------------------------------------------------------------------ MVTec LOCO AD

const LOCO_CATEGORIES = ['parts_tray', 'parts_box'];

function locoDefects(size: number, partRadius: number): LocoDefectConfig[] {
  const holeR = 0.055 * size;
  return [
    { defect_name: 'missing_part', pixel_value: 255, saturation_threshold: 1.0, relative_saturation: true },
    { defect_name: 'extra_part', pixel_value: 254, saturation_threshold: Math.round((Math.PI * partRadius * partRadius) / 2), relative_saturation: false },
    { defect_name: 'scratch', pixel_value: 253, saturation_threshold: 1.0, relative_saturation: true },
    { defect_name: 'stain', pixel_value: 252, saturation_threshold: 0.5, relative_saturation: true },
    { defect_name: 'hole', pixel_value: 251, saturation_threshold: Math.round((Math.PI * holeR * holeR) / 2), relative_saturation: false },
  ];
}

async function synthLoco(ctx: Ctx): Promise<DatasetStats> {
  const result: DatasetStats = {};
  const { size, train, test } = ctx.r;
  const h = size;
  const w = Math.round(size * 1.6);
  for (const [c, name] of LOCO_CATEGORIES.slice(0, ctx.r.categories).entries()) {
    const rng = ctx.root.fork(name);
    const style = categoryStyle('tray', rng.fork('style'));
    if (c === 1) style.partColours = style.partColours.slice(1).concat(style.partColours.slice(0, 1));
    const stats = new StatsBuilder();
    const cat = path.join(ctx.out, name);
    const partRadius = 0.12 * Math.min(w, h);
    const config = locoDefects(Math.min(w, h), partRadius);
    const value = (defect: string): number => (config.find((d) => d.defect_name === defect) as LocoDefectConfig).pixel_value;
    await fs.promises.mkdir(cat, { recursive: true });
    await fs.promises.writeFile(path.join(cat, 'defects_config.json'), `${JSON.stringify(config, null, 4)}\n`);
    const normal = async (split: 'train' | 'validation' | 'test', count: number): Promise<void> => {
      for (let i = 0; i < count; i++) {
        const scene = renderScene(style, w, h, rng.fork(split, i));
        await writeImage(ctx, path.join(cat, split, 'good', `${pad(i, 3)}.png`), toBytes(scene.canvas, false), w, h, false, 'png');
        stats.add(split, false, w, h);
      }
    };
    await normal('train', train);
    await normal('validation', Math.max(1, Math.floor(train / 4)));
    const { good, anomalous } = testCounts(test);
    await normal('test', good);
    let logical = 0;
    let structural = 0;
    for (let j = 0; j < anomalous; j++) {
      const isLogical = j % 2 === 0;
      const type = isLogical ? 'logical_anomalies' : 'structural_anomalies';
      const index = isLogical ? logical++ : structural++;
      const irng = rng.fork('test', type, index);
      const channels: Array<{ mask: Uint8Array; value: number }> = [];
      let pixels: Uint8Array;
      if (isLogical) {
        const variant = index % 3;
        const missing = variant === 1 ? [] : [irng.int(3)];
        const scene = renderScene(style, w, h, irng, { omitSlots: missing });
        for (const k of missing) channels.push({ mask: discMask(w, h, scene.slots[k]), value: value('missing_part') });
        if (variant !== 0) {
          const extra = { x: irng.uniform(0.25, 0.75) * w, y: 0.78 * h, radius: partRadius * 0.8 };
          const colour = style.partColours[irng.int(3)];
          channels.push({ mask: drawPart(scene.canvas, extra, colour, irng.nextUint32() | 0), value: value('extra_part') });
        }
        pixels = toBytes(scene.canvas, false);
      } else {
        const kinds: DefectKind[] = ['scratch', 'stain', 'hole'];
        const first = kinds[index % 3];
        const chosen = index % 2 === 1 ? [first, kinds[(index + 1) % 3]] : [first];
        const scene = renderScene(style, w, h, irng);
        for (const kind of chosen) channels.push({ mask: drawDefect(scene.canvas, scene.region, kind, irng, false), value: value(kind) });
        pixels = toBytes(scene.canvas, false);
      }
      await writeImage(ctx, path.join(cat, 'test', type, `${pad(index, 3)}.png`), pixels, w, h, false, 'png');
      for (const [k, ch] of channels.entries()) {
        await writeMask(path.join(cat, 'ground_truth', type, pad(index, 3), `${pad(k, 3)}.png`), ch.mask, w, h, 'png', ch.value);
      }
      stats.add('test', true, w, h, type);
    }
    result[name] = stats.stats;
  }
  return result;
}

// ------------------------------------------------------------------------------------------ BTAD

const BTAD_PRODUCTS: Array<{ name: string; kind: SceneKind; image: ImageFormat; mask: ImageFormat; aspect: number }> = [
  { name: '01', kind: 'leather', image: 'bmp', mask: 'png', aspect: 1 },
  { name: '02', kind: 'woven', image: 'png', mask: 'png', aspect: 1 },
  { name: '03', kind: 'disc', image: 'bmp', mask: 'bmp', aspect: 4 / 3 },
];

async function synthBtad(ctx: Ctx): Promise<DatasetStats> {
  const result: DatasetStats = {};
  const { size, train, test } = ctx.r;
  for (const p of BTAD_PRODUCTS.slice(0, ctx.r.categories)) {
    const rng = ctx.root.fork(p.name);
    const style = categoryStyle(p.kind, rng.fork('style'));
    const types = TEXTURE_KINDS.includes(p.kind) ? TEXTURE_DEFECTS : OBJECT_DEFECTS;
    const w = Math.round(size * p.aspect);
    const h = size;
    const stats = new StatsBuilder();
    const cat = path.join(ctx.out, p.name);
    for (let i = 0; i < train; i++) {
      const img = renderImage(style, w, h, rng.fork('train', i), []);
      await writeImage(ctx, path.join(cat, 'train', 'ok', `${pad(i, 4)}.${p.image}`), img.pixels, w, h, style.grey, p.image);
      stats.add('train', false, w, h);
    }
    const { good, anomalous } = testCounts(test);
    for (let i = 0; i < good; i++) {
      const img = renderImage(style, w, h, rng.fork('test', 'ok', i), []);
      await writeImage(ctx, path.join(cat, 'test', 'ok', `${pad(i, 4)}.${p.image}`), img.pixels, w, h, style.grey, p.image);
      stats.add('test', false, w, h);
    }
    for (let j = 0; j < anomalous; j++) {
      const img = renderImage(style, w, h, rng.fork('test', 'ko', j), [types[j % types.length]]);
      await writeImage(ctx, path.join(cat, 'test', 'ko', `${pad(j, 4)}.${p.image}`), img.pixels, w, h, style.grey, p.image);
      await writeMask(path.join(cat, 'ground_truth', 'ko', `${pad(j, 4)}.${p.mask}`), img.masks[0], w, h, p.mask);
      stats.add('test', true, w, h, 'ko');
    }
    result[p.name] = stats.stats;
  }
  return result;
}

// ------------------------------------------------------------------------------------------ MTD

async function synthMtd(ctx: Ctx): Promise<DatasetStats> {
  const { size, train, test } = ctx.r;
  const rng = ctx.root.fork('mtd');
  const style = categoryStyle('leather', rng.fork('style'), true);
  const stats = new StatsBuilder();
  const { good, anomalous } = testCounts(test);
  const free = train + good;
  const sizeOf = (r: Random): [number, number] => [Math.round(size * r.uniform(0.6, 1)), Math.round(size * r.uniform(0.5, 1))];
  // MTD's names look like exp1_num_4727; a running number keeps them unique across folders.
  let serial = 1000;
  const name = (r: Random): string => `exp${1 + r.int(6)}_num_${serial++}`;
  for (const folder of [...MTD_DEFECT_FOLDERS, MTD_NORMAL_FOLDER]) await fs.promises.mkdir(path.join(ctx.out, folder, 'Imgs'), { recursive: true });
  const counts = new Map<string, number>();
  const perFolder: Array<(typeof MTD_DEFECT_FOLDERS)[number]> = [];
  for (let j = 0; j < anomalous; j++) perFolder.push(MTD_DEFECT_FOLDERS[j % MTD_DEFECT_FOLDERS.length]);
  for (const folder of perFolder) {
    const k = counts.get(folder) ?? 0;
    counts.set(folder, k + 1);
    const irng = rng.fork(folder, k);
    const [w, h] = sizeOf(irng);
    const stem = name(irng);
    const img = renderImage(style, w, h, irng, [MTD_DEFECT_KIND[folder]]);
    await writeImage(ctx, path.join(ctx.out, folder, 'Imgs', `${stem}.jpg`), img.pixels, w, h, true, 'jpg');
    await writeMask(path.join(ctx.out, folder, 'Imgs', `${stem}.png`), img.masks[0], w, h);
    stats.add('test', true, w, h, folder.slice(3));
  }
  const testNormals = splitNormals(
    Array.from({ length: free }, (_, i) => String(i)),
    anomalous,
    0,
  ).test.length;
  for (let i = 0; i < free; i++) {
    const irng = rng.fork(MTD_NORMAL_FOLDER, i);
    const [w, h] = sizeOf(irng);
    const stem = name(irng);
    const img = renderImage(style, w, h, irng, []);
    await writeImage(ctx, path.join(ctx.out, MTD_NORMAL_FOLDER, 'Imgs', `${stem}.jpg`), img.pixels, w, h, true, 'jpg');
    await writeMask(path.join(ctx.out, MTD_NORMAL_FOLDER, 'Imgs', `${stem}.png`), new Uint8Array(w * h), w, h);
    // Which normals are test images is the loader's seeded choice; only the counts are fixed here.
    stats.add(i < testNormals ? 'test' : 'train', false, w, h);
  }
  return { mtd: stats.stats };
}

// ------------------------------------------------------------------------------------------ VisA

async function synthVisa(ctx: Ctx): Promise<DatasetStats> {
  const result: DatasetStats = {};
  const { size, train, test } = ctx.r;
  const h = size;
  const w = Math.round(size * 1.25);
  const csv: string[] = ['object,split,label,image,mask'];
  for (const [name, kind] of POOLS.visa.slice(0, ctx.r.categories)) {
    const rng = ctx.root.fork(name);
    const style = categoryStyle(kind, rng.fork('style'));
    const types = TEXTURE_KINDS.includes(kind) ? TEXTURE_DEFECTS : OBJECT_DEFECTS;
    const stats = new StatsBuilder();
    const anno: string[] = ['image,label,mask'];
    const { good, anomalous } = testCounts(test);
    const normals = train + good;
    // VisA's CSV, not the folder, decides which normal images are test images.
    const testSet = new Set(rng.fork('split').shuffle(Array.from({ length: normals }, (_, i) => i)).slice(0, good));
    for (let i = 0; i < normals; i++) {
      const rel = `${name}/Data/Images/Normal/${pad(i, 4)}.JPG`;
      const img = renderImage(style, w, h, rng.fork('normal', i), []);
      await writeImage(ctx, path.join(ctx.out, rel), img.pixels, w, h, style.grey, 'jpg');
      const split = testSet.has(i) ? 'test' : 'train';
      csv.push(`${name},${split},normal,${rel},`);
      anno.push(`${rel},normal,`);
      stats.add(split, false, w, h);
    }
    for (let j = 0; j < anomalous; j++) {
      const type = types[j % types.length];
      const rel = `${name}/Data/Images/Anomaly/${pad(j, 3)}.JPG`;
      const mask = `${name}/Data/Masks/Anomaly/${pad(j, 3)}.png`;
      const img = renderImage(style, w, h, rng.fork('anomaly', j), [type]);
      await writeImage(ctx, path.join(ctx.out, rel), img.pixels, w, h, style.grey, 'jpg');
      await writeMask(path.join(ctx.out, mask), img.masks[0], w, h);
      csv.push(`${name},test,anomaly,${rel},${mask}`);
      anno.push(`${rel},${type},${mask}`);
      stats.add('test', true, w, h, type);
    }
    await fs.promises.writeFile(path.join(ctx.out, name, 'image_anno.csv'), `${anno.join('\n')}\n`);
    result[name] = stats.stats;
  }
  await fs.promises.mkdir(path.join(ctx.out, 'split_csv'), { recursive: true });
  await fs.promises.writeFile(path.join(ctx.out, 'split_csv', '1cls.csv'), `${csv.join('\n')}\n`);
  return result;
}

// ------------------------------------------------------------------------------------------ DAGM 2007

async function synthDagm(ctx: Ctx): Promise<DatasetStats> {
  const result: DatasetStats = {};
  const { size, train, test } = ctx.r;
  for (let c = 1; c <= ctx.r.categories; c++) {
    const name = `Class${c}`;
    const rng = ctx.root.fork(name);
    const style = categoryStyle(DAGM_KINDS[(c - 1) % DAGM_KINDS.length], rng.fork('style'), true);
    const defect = DAGM_DEFECTS[(c - 1) % DAGM_DEFECTS.length];
    const stats = new StatsBuilder();
    const folders: Array<['Train' | 'Test', number, number]> = [
      ['Train', train, Math.max(1, Math.floor(train / 5))],
      ['Test', testCounts(test).good, testCounts(test).anomalous],
    ];
    for (const [folder, normals, defects] of folders) {
      const dir = path.join(ctx.out, name, folder);
      const split = folder === 'Train' ? 'train' : 'test';
      // Defective images are interleaved with the others, as in the real numbering.
      const defective = new Set(rng.fork(folder, 'order').shuffle(Array.from({ length: normals + defects }, (_, i) => i)).slice(0, defects));
      const lines: string[] = [String(c)];
      for (let i = 0; i < normals + defects; i++) {
        const id = i + 1;
        const file = `${pad(id, 4)}.PNG`;
        const bad = defective.has(i);
        const img = renderImage(style, size, size, rng.fork(folder, id), bad ? [defect] : []);
        await writeImage(ctx, path.join(dir, file), img.pixels, size, size, true, 'png');
        if (bad) {
          const label = `${pad(id, 4)}_label.PNG`;
          await writeMask(path.join(dir, 'Label', label), img.masks[0], size, size);
          lines.push(`${id}\t1\t${file}\t0\t${label}`);
        } else lines.push(`${id}\t0\t${file}\t0\t0`);
        stats.add(split, bad, size, size, 'defect');
      }
      await fs.promises.mkdir(path.join(dir, 'Label'), { recursive: true });
      await fs.promises.writeFile(path.join(dir, 'Label', 'Labels.txt'), `${lines.join('\n')}\n`);
    }
    result[name] = stats.stats;
  }
  return result;
}

function imageCount(layout: SynthLayout, r: Resolved): number {
  const per = layout === 'loco' ? r.train + Math.max(1, Math.floor(r.train / 4)) + r.test : layout === 'dagm' ? r.train + Math.max(1, Math.floor(r.train / 5)) + r.test : r.train + r.test;
  return per * r.categories;
}

/** Writes the dataset and returns what was written, in the shape of `imiad datasets inspect --json`. */
export async function synthesize(layout: SynthLayout, out: string, opts: SynthOptions = {}): Promise<DatasetStats> {
  const r = resolve(layout, out, opts);
  if (fs.existsSync(out)) {
    if (!fs.statSync(out).isDirectory()) throw imiadError('Error', 'ERR_IMIAD_ARGUMENT', `Expected a new or empty folder for out but ${out} is a file`);
    if (fs.readdirSync(out).length > 0) throw imiadError('Error', 'ERR_IMIAD_ARGUMENT', `Expected a new or empty folder for out but ${out} is not empty`);
  }
  await fs.promises.mkdir(out, { recursive: true });
  const ctx: Ctx = { out, r, root: new Random(r.seed).fork('synth', layout), done: 0, total: imageCount(layout, r), onProgress: opts.onProgress };
  let stats: DatasetStats;
  switch (layout) {
    case 'mvtec':
      stats = await synthMvtec(ctx, POOLS.mvtec);
      break;
    case 'mpdd':
      stats = await synthMvtec(ctx, POOLS.mpdd);
      break;
    case 'loco':
      stats = await synthLoco(ctx);
      break;
    case 'btad':
      stats = await synthBtad(ctx);
      break;
    case 'mtd':
      stats = await synthMtd(ctx);
      break;
    case 'visa':
      stats = await synthVisa(ctx);
      break;
    case 'dagm':
      stats = await synthDagm(ctx);
      break;
  }
  const ordered: DatasetStats = {};
  for (const k of Object.keys(stats).sort(natural)) ordered[k] = stats[k];
  return ordered;
}
