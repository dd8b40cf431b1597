/**
 * DAGM 2007:
 *   Class1..Class10/{Train,Test}/<nnnn>.PNG
 *   Class<k>/{Train,Test}/Label/Labels.txt: a first line with the class number, then one tab-separated line per
 *   image: id, defect flag (0/1), image file name, 0, label image name (or 0)
 *   Class<k>/{Train,Test}/Label/<nnnn>_label.PNG: the defect mask
 * Train holds normal and defective images (split 'train', label by the flag); Test likewise (split 'test').
 * DAGM names one defect per class and no type, so anomalies have defect type 'defect'.
 */
import * as path from 'path';

import { compareSamples, isDirectory, isFile, layoutError, listDirs, natural, readText, requireDir, requireFile, selectCategories } from './files';
import type { Category, LoadOptions, Sample } from './types';

export function listDagmCategories(root: string): string[] {
  requireDir(root, 'dataset root');
  return listDirs(root)
    .filter((d) => /^Class\d+$/i.test(d) && (isDirectory(path.join(root, d, 'Train')) || isDirectory(path.join(root, d, 'Test'))))
    .sort(natural);
}

export interface DagmLabel {
  id: number;
  defective: boolean;
  image: string;
  /** Label image name, or '' when the image is defect-free. */
  label: string;
}

export function parseDagmLabels(file: string): DagmLabel[] {
  const lines = readText(file).split(/\r?\n/);
  const out: DagmLabel[] = [];
  lines.forEach((raw, i) => {
    const fields = raw.trim().split(/\s+/).filter((f) => f !== '');
    if (fields.length === 0) return;
    // The first line holds only the class number.
    if (i === 0 && fields.length === 1 && /^\d+$/.test(fields[0])) return;
    if (fields.length < 3 || !/^\d+$/.test(fields[0]) || (fields[1] !== '0' && fields[1] !== '1')) {
      throw layoutError(`Malformed ${file} line ${i + 1}: expected 'id flag image 0 label' but found '${raw.trim()}'`);
    }
    const defective = fields[1] === '1';
    const label = fields[4] && fields[4] !== '0' ? fields[4] : '';
    if (defective && label === '') throw layoutError(`Malformed ${file} line ${i + 1}: defective image ${fields[2]} has no label image`);
    out.push({ id: Number(fields[0]), defective, image: fields[2], label });
  });
  return out;
}

function loadDagmFolder(dir: string, split: 'train' | 'test', samples: Sample[]): void {
  const labelsFile = requireFile(path.join(dir, 'Label', 'Labels.txt'), 'DAGM layout: Class<k>/{Train,Test}/Label/Labels.txt');
  for (const entry of parseDagmLabels(labelsFile)) {
    const file = path.join(dir, entry.image);
    if (!isFile(file)) throw layoutError(`Missing image ${file} (listed in ${labelsFile})`);
    if (!entry.defective) {
      samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split });
      continue;
    }
    const mask = path.join(dir, 'Label', entry.label);
    if (!isFile(mask)) throw layoutError(`Missing ground-truth mask ${mask} for ${file} (listed in ${labelsFile})`);
    samples.push({ path: file, maskPaths: [mask], label: 'anomaly', defectType: 'defect', split });
  }
}

export function loadDagmCategory(root: string, name: string): Category {
  const catRoot = path.join(root, name);
  const samples: Sample[] = [];
  loadDagmFolder(requireDir(path.join(catRoot, 'Train'), 'DAGM layout: Class<k>/Train'), 'train', samples);
  loadDagmFolder(requireDir(path.join(catRoot, 'Test'), 'DAGM layout: Class<k>/Test'), 'test', samples);
  samples.sort(compareSamples);
  return { name, root: catRoot, samples };
}

export function loadDagm(root: string, opts: LoadOptions = {}): Category[] {
  const available = listDagmCategories(root);
  if (available.length === 0) throw layoutError(`No DAGM classes in ${root} (expected Class1/Train/Label/Labels.txt, ...)`);
  return selectCategories(available, opts.categories, root, 'DAGM').map((name) => loadDagmCategory(root, name));
}
