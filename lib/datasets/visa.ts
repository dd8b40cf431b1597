/**
 * VisA, read in its raw published layout (no conversion step):
 *   <category>/Data/Images/Normal/<image>.JPG, <category>/Data/Images/Anomaly/<image>.JPG
 *   <category>/Data/Masks/Anomaly/<image>.png
 *   split_csv/1cls.csv with the header object,split,label,image,mask (paths relative to the root; label 'normal' or
 *   'anomaly'; split 'train' or 'test'; mask empty for normal images)
 *   <category>/image_anno.csv (image,label,mask): optional; when present, an anomaly's defect type is its label
 *   there (e.g. 'chunk of wax missing'), otherwise 'anomaly'.
 */
import * as path from 'path';

import { compareSamples, isFile, layoutError, natural, parseCsv, readText, requireDir, requireFile, selectCategories } from './files';
import type { Category, LoadOptions, Sample, Split } from './types';

export const VISA_SPLIT_CSV = path.join('split_csv', '1cls.csv');
const HEADER = ['object', 'split', 'label', 'image', 'mask'];

interface Row {
  object: string;
  split: Split;
  label: 'normal' | 'anomaly';
  image: string;
  mask: string;
}

function readSplitCsv(root: string): Row[] {
  requireDir(root, 'dataset root');
  const file = requireFile(path.join(root, VISA_SPLIT_CSV), 'VisA layout: split_csv/1cls.csv');
  const rows = parseCsv(readText(file));
  const header = (rows[0] ?? []).map((h) => h.trim());
  if (HEADER.some((h, i) => header[i] !== h)) {
    throw layoutError(`Malformed ${file}: expected the header ${HEADER.join(',')} but found ${header.join(',') || 'nothing'}`);
  }
  return rows.slice(1).map((r, i) => {
    const line = i + 2;
    if (r.length < 4) throw layoutError(`Malformed ${file} line ${line}: expected 5 fields but found ${r.length}`);
    const [object, split, label, image, mask = ''] = r.map((x) => x.trim());
    if (split !== 'train' && split !== 'test') throw layoutError(`Malformed ${file} line ${line}: split must be 'train' or 'test' but is '${split}'`);
    if (label !== 'normal' && label !== 'anomaly') throw layoutError(`Malformed ${file} line ${line}: label must be 'normal' or 'anomaly' but is '${label}'`);
    if (label === 'anomaly' && mask === '') throw layoutError(`Malformed ${file} line ${line}: the anomalous image ${image} has no mask`);
    return { object, split, label, image, mask };
  });
}

export function listVisaCategories(root: string): string[] {
  return [...new Set(readSplitCsv(root).map((r) => r.object))].sort(natural);
}

/** image path (relative to the root) -> defect label from <category>/image_anno.csv, when that file exists. */
function readAnnotations(root: string, category: string): Map<string, string> {
  const file = path.join(root, category, 'image_anno.csv');
  const out = new Map<string, string>();
  if (!isFile(file)) return out;
  const rows = parseCsv(readText(file));
  const header = (rows[0] ?? []).map((h) => h.trim());
  const imageCol = header.indexOf('image');
  const labelCol = header.indexOf('label');
  if (imageCol < 0 || labelCol < 0) throw layoutError(`Malformed ${file}: expected columns image and label`);
  for (const r of rows.slice(1)) if (r[imageCol]) out.set(r[imageCol].trim(), (r[labelCol] ?? '').trim());
  return out;
}

export function loadVisa(root: string, opts: LoadOptions = {}): Category[] {
  const rows = readSplitCsv(root);
  const available = [...new Set(rows.map((r) => r.object))].sort(natural);
  if (available.length === 0) throw layoutError(`No VisA categories in ${path.join(root, VISA_SPLIT_CSV)}`);
  const csv = path.join(root, VISA_SPLIT_CSV);
  return selectCategories(available, opts.categories, root, 'VisA').map((name) => {
    const annotations = readAnnotations(root, name);
    const samples: Sample[] = rows
      .filter((r) => r.object === name)
      .map((r) => {
        const file = path.join(root, r.image);
        if (!isFile(file)) throw layoutError(`Missing image ${file} (listed in ${csv})`);
        if (r.label === 'normal') return { path: file, maskPaths: [], label: 'normal', defectType: 'good', split: r.split } satisfies Sample;
        const mask = path.join(root, r.mask);
        if (!isFile(mask)) throw layoutError(`Missing ground-truth mask ${mask} for ${file} (listed in ${csv})`);
        const defect = annotations.get(r.image);
        return { path: file, maskPaths: [mask], label: 'anomaly', defectType: defect && defect !== 'normal' ? defect : 'anomaly', split: r.split } satisfies Sample;
      });
    samples.sort(compareSamples);
    return { name, root: path.join(root, name), samples };
  });
}
