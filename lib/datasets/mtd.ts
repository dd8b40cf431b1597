/**
 * Magnetic Tile Defects (MTD):
 *   MT_Blowhole, MT_Break, MT_Crack, MT_Fray, MT_Uneven, MT_Free / Imgs / <stem>.jpg + <stem>.png (mask)
 * One product, loaded as the category 'mtd'; defect types are the folder names without 'MT_' (Blowhole, ...).
 * MT_Free holds the normal images (with all-zero masks, which are not used). There is no official split: all
 * defective images are test images, and the normal images are split by the seeded rule of lib/datasets/split.ts
 * (test normals = min(anomalies, floor(normals / 2))), recorded in Category.splitManifest and, with
 * opts.splitFile, in a JSON file that later runs reuse.
 */
import * as path from 'path';

import { byCodePoint, compareSamples, layoutError, listDirs, listImages, requireDir, selectCategories, stem } from './files';
import { resolveNormalSplit, toRelative } from './split';
import type { Category, LoadOptions, Sample } from './types';

export const MTD_CATEGORY = 'mtd';
export const MTD_DEFECT_FOLDERS = ['MT_Blowhole', 'MT_Break', 'MT_Crack', 'MT_Fray', 'MT_Uneven'] as const;
export const MTD_NORMAL_FOLDER = 'MT_Free';

export function listMtdCategories(root: string): string[] {
  requireDir(root, 'dataset root');
  requireDir(path.join(root, MTD_NORMAL_FOLDER, 'Imgs'), 'MTD layout: MT_Free/Imgs');
  return [MTD_CATEGORY];
}

/**
 * Splits an Imgs folder into images and masks: MTD pairs <stem>.jpg (image) with <stem>.png (mask). A lone
 * non-PNG file is an image; a lone PNG is a mask without its image and is ignored.
 */
function imgsOf(dir: string): { images: string[]; masks: Map<string, string> } {
  const files = listImages(dir);
  const images: string[] = [];
  const masks = new Map<string, string>();
  const byStem = new Map<string, string[]>();
  for (const f of files) {
    const s = stem(f);
    byStem.set(s, [...(byStem.get(s) ?? []), f]);
  }
  for (const [s, group] of byStem) {
    // The image is the JPEG; the mask is the PNG of the same stem.
    const jpg = group.filter((f) => /\.jpe?g$/i.test(f));
    const png = group.filter((f) => /\.png$/i.test(f));
    if (jpg.length === 1) {
      images.push(jpg[0]);
      if (png.length === 1) masks.set(s, png[0]);
    } else if (jpg.length === 0 && group.length === 1 && !/\.png$/i.test(group[0])) {
      images.push(group[0]);
    } else if (jpg.length > 1) {
      throw layoutError(`Ambiguous files ${jpg.join(' and ')}: two images with the stem '${s}'`);
    }
  }
  images.sort(byCodePoint);
  return { images, masks };
}

export function loadMtd(root: string, opts: LoadOptions = {}): Category[] {
  selectCategories(listMtdCategories(root), opts.categories, root, 'MTD');
  const samples: Sample[] = [];
  const present = new Set(listDirs(root));
  for (const folder of MTD_DEFECT_FOLDERS) {
    if (!present.has(folder)) continue;
    const dir = requireDir(path.join(root, folder, 'Imgs'), `MTD layout: ${folder}/Imgs`);
    const { images, masks } = imgsOf(dir);
    for (const file of images) {
      const mask = masks.get(stem(file));
      if (mask === undefined) throw layoutError(`Missing ground-truth mask ${path.join(dir, `${stem(file)}.png`)} for ${file}`);
      samples.push({ path: file, maskPaths: [mask], label: 'anomaly', defectType: folder.slice(3), split: 'test' });
    }
  }
  const freeDir = path.join(root, MTD_NORMAL_FOLDER, 'Imgs');
  const normals = imgsOf(freeDir).images;
  const anomalies = samples.length;
  const { manifest, testSet } = resolveNormalSplit('mtd', root, normals, anomalies, opts.seed ?? 0, opts.splitFile);
  for (const file of normals) {
    samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: testSet.has(toRelative(root, file)) ? 'test' : 'train' });
  }
  samples.sort(compareSamples);
  return [{ name: MTD_CATEGORY, root, samples, splitManifest: manifest }];
}
