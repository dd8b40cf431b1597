/**
 * A user's own data, one category:
 *   normal/      normal images (training, and test when no test-normal folder is given)
 *   anomaly/     anomalous test images, directly (defect type 'anomaly') or in one sub-folder per defect type
 *   masks/       optional; mirrors anomaly/: the mask of anomaly/<sub>/<stem>.<ext> is masks/<sub>/<stem>.<ext'> or
 *                masks/<sub>/<stem>_mask.<ext'> (any image extension, any case). With a masks folder every anomaly
 *                must have exactly one mask; without it, anomalies have no mask (image-level evaluation only).
 *   test-normal/ optional normal test images. Without it, the normal images are split by the seeded rule of
 *                lib/datasets/split.ts: test normals = min(anomalies, floor(normals / 2)).
 */
import * as path from 'path';

import { compareSamples, imagesByStem, isDirectory, layoutError, listDirs, listImages, requireDir, stem } from './files';
import { resolveNormalSplit, toRelative } from './split';
import type { Category, FolderLayout, LoadOptions, Sample } from './types';

function resolveFolder(root: string, dir: string): string {
  return path.resolve(root, dir);
}

export function folderCategoryName(root: string, layout: FolderLayout): string {
  return layout.name ?? (path.basename(path.resolve(root)) || 'folder');
}

export function loadFolder(root: string, opts: LoadOptions = {}): Category[] {
  const layout = opts.folder;
  if (!layout) throw layoutError('The folder layout needs the folders of normal and anomalous images (--normal DIR --anomaly DIR)');
  const name = folderCategoryName(root, layout);
  if (opts.categories && opts.categories.length > 0 && (opts.categories.length !== 1 || opts.categories[0] !== name)) {
    throw layoutError(`Category '${opts.categories.find((c) => c !== name) ?? opts.categories[0]}' not found (the folder layout holds one category, '${name}')`);
  }
  const normalDir = requireDir(resolveFolder(root, layout.normal), 'folder layout: --normal DIR');
  const anomalyDir = requireDir(resolveFolder(root, layout.anomaly), 'folder layout: --anomaly DIR');
  const maskDir = layout.masks === undefined ? undefined : requireDir(resolveFolder(root, layout.masks), 'folder layout: --masks DIR');
  const samples: Sample[] = [];

  const groups: Array<{ defectType: string; dir: string; sub: string }> = [{ defectType: 'anomaly', dir: anomalyDir, sub: '' }];
  for (const sub of listDirs(anomalyDir)) groups.push({ defectType: sub, dir: path.join(anomalyDir, sub), sub });
  for (const g of groups) {
    const masks = maskDir ? imagesByStem(path.join(maskDir, g.sub)) : undefined;
    for (const file of listImages(g.dir)) {
      if (!masks) {
        samples.push({ path: file, maskPaths: [], label: 'anomaly', defectType: g.defectType, split: 'test' });
        continue;
      }
      const s = stem(file);
      const plain = masks.get(s);
      const suffixed = masks.get(`${s}_mask`);
      if (plain !== undefined && suffixed !== undefined) throw layoutError(`Ambiguous masks ${plain} and ${suffixed} for ${file}`);
      const mask = plain ?? suffixed;
      if (mask === undefined) throw layoutError(`Missing mask for ${file}: expected ${path.join(maskDir as string, g.sub, `${s}.png`)} or ${path.join(maskDir as string, g.sub, `${s}_mask.png`)}`);
      samples.push({ path: file, maskPaths: [mask], label: 'anomaly', defectType: g.defectType, split: 'test' });
    }
  }

  const normals = listImages(normalDir);
  let splitManifest;
  if (layout.testNormal !== undefined) {
    const testDir = resolveFolder(root, layout.testNormal);
    if (!isDirectory(testDir)) requireDir(testDir, 'folder layout: --test-normal DIR');
    for (const file of normals) samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: 'train' });
    for (const file of listImages(testDir)) samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: 'test' });
  } else {
    const anomalies = samples.length;
    const { manifest, testSet } = resolveNormalSplit('folder', normalDir, normals, anomalies, opts.seed ?? 0, opts.splitFile);
    splitManifest = manifest;
    for (const file of normals) {
      samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: testSet.has(toRelative(normalDir, file)) ? 'test' : 'train' });
    }
  }
  if (normals.length === 0) throw layoutError(`Expected at least one normal image in ${normalDir} but found none`);
  samples.sort(compareSamples);
  return [{ name, root: path.resolve(root), samples, ...(splitManifest ? { splitManifest } : {}) }];
}
