/**
 * MVTec AD and MPDD (same layout):
 *   <category>/train/good/<image>
 *   <category>/test/good/<image>, <category>/test/<defect>/<image>
 *   <category>/ground_truth/<defect>/<stem>_mask.png
 * A category is a folder of the root that holds `train` or `test`; other folders and files (license.txt,
 * readme.txt) are ignored. Every anomalous test image must have its mask.
 */
import * as path from 'path';

import {
  compareSamples,
  imagesByStem,
  layoutError,
  listDirs,
  listImages,
  listTrainTestCategories,
  requireDir,
  selectCategories,
  stem,
} from './files';
import type { Category, LoadOptions, Sample } from './types';

export const listMvtecCategories = listTrainTestCategories;

export function loadMvtecCategory(root: string, name: string, layout = 'MVTec AD'): Category {
  const catRoot = path.join(root, name);
  const samples: Sample[] = [];
  const trainGood = requireDir(path.join(catRoot, 'train', 'good'), `${layout} layout: <category>/train/good`);
  for (const file of listImages(trainGood)) samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: 'train' });
  const testDir = requireDir(path.join(catRoot, 'test'), `${layout} layout: <category>/test/<defect>`);
  for (const defect of listDirs(testDir)) {
    const images = listImages(path.join(testDir, defect));
    if (defect === 'good') {
      for (const file of images) samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: 'test' });
      continue;
    }
    const gtDir = path.join(catRoot, 'ground_truth', defect);
    const masks = imagesByStem(gtDir);
    for (const file of images) {
      const expected = `${stem(file)}_mask`;
      const mask = masks.get(expected);
      if (mask === undefined) throw layoutError(`Missing ground-truth mask ${path.join(gtDir, `${expected}.png`)} for ${file}`);
      samples.push({ path: file, maskPaths: [mask], label: 'anomaly', defectType: defect, split: 'test' });
    }
  }
  samples.sort(compareSamples);
  return { name, root: catRoot, samples };
}

export function loadMvtec(root: string, opts: LoadOptions = {}, layout = 'MVTec AD'): Category[] {
  const available = listMvtecCategories(root);
  if (available.length === 0) throw layoutError(`No ${layout} categories in ${root} (expected <category>/train/good and <category>/test)`);
  return selectCategories(available, opts.categories, root, layout).map((name) => loadMvtecCategory(root, name, layout));
}
