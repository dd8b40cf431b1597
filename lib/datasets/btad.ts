/**
 * BTAD (beanTech Anomaly Detection):
 *   01|02|03/train/ok/<image>, <category>/test/ok/<image>, <category>/test/ko/<image>
 *   <category>/ground_truth/ko/<stem>.png|.bmp   (same stem as the image; the extension may differ)
 * Images and masks are BMP or PNG depending on the product; BMP goes through bmp-ts (lib/image/mask.ts).
 * Anomalous images have defect type 'ko' (BTAD names no defect types).
 */
import * as path from 'path';

import {
  compareSamples,
  imagesByStem,
  layoutError,
  listImages,
  listTrainTestCategories,
  requireDir,
  selectCategories,
  stem,
} from './files';
import type { Category, LoadOptions, Sample } from './types';

export const listBtadCategories = listTrainTestCategories;

export function loadBtadCategory(root: string, name: string): Category {
  const catRoot = path.join(root, name);
  const samples: Sample[] = [];
  const trainOk = requireDir(path.join(catRoot, 'train', 'ok'), 'BTAD layout: <category>/train/ok');
  for (const file of listImages(trainOk)) samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: 'train' });
  const testOk = requireDir(path.join(catRoot, 'test', 'ok'), 'BTAD layout: <category>/test/ok');
  for (const file of listImages(testOk)) samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: 'test' });
  const testKo = requireDir(path.join(catRoot, 'test', 'ko'), 'BTAD layout: <category>/test/ko');
  const gtDir = path.join(catRoot, 'ground_truth', 'ko');
  const masks = imagesByStem(gtDir);
  for (const file of listImages(testKo)) {
    const mask = masks.get(stem(file));
    if (mask === undefined) throw layoutError(`Missing ground-truth mask ${path.join(gtDir, `${stem(file)}.png`)} (or .bmp) for ${file}`);
    samples.push({ path: file, maskPaths: [mask], label: 'anomaly', defectType: 'ko', split: 'test' });
  }
  samples.sort(compareSamples);
  return { name, root: catRoot, samples };
}

export function loadBtad(root: string, opts: LoadOptions = {}): Category[] {
  const available = listBtadCategories(root);
  if (available.length === 0) throw layoutError(`No BTAD categories in ${root} (expected 01/train/ok, 01/test/ko, ...)`);
  return selectCategories(available, opts.categories, root, 'BTAD').map((name) => loadBtadCategory(root, name));
}
