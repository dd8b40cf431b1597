/**
 * File-system helpers shared by the dataset loaders: sorted listings, case-insensitive image extensions, a small
 * RFC 4180 CSV reader, the stable sample order, and the two error kinds a loader throws (ERR_IMIAD_LAYOUT for a
 * missing or malformed folder/file of the layout, ERR_IMIAD_FILE for a file that cannot be read), each naming the
 * path.
 */
import * as fs from 'fs';
import * as path from 'path';

import { imiadError, type ImiadError } from '../../bindings/errors';
import type { Sample, Split } from './types';

/** Image file extensions every loader accepts, compared case-insensitively. */
export const IMAGE_EXTENSIONS: readonly string[] = ['.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff'];

export function isImageFile(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

/** File name without its extension. */
export function stem(file: string): string {
  const base = path.basename(file);
  const ext = path.extname(base);
  return ext ? base.slice(0, -ext.length) : base;
}

export function layoutError(message: string): ImiadError {
  return imiadError('Error', 'ERR_IMIAD_LAYOUT', message);
}

export function fileError(message: string): ImiadError {
  return imiadError('Error', 'ERR_IMIAD_FILE', message);
}

/** Code-point order: the same on every machine and locale (localeCompare is not). */
export function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Natural order for category names: 'Class2' before 'Class10', '01' before '02'. */
export function natural(a: string, b: string): number {
  const ra = a.split(/(\d+)/);
  const rb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(ra.length, rb.length); i++) {
    if (ra[i] === rb[i]) continue;
    const na = /^\d+$/.test(ra[i]);
    const nb = /^\d+$/.test(rb[i]);
    if (na && nb) {
      const d = Number(ra[i]) - Number(rb[i]);
      if (d !== 0) return d;
    }
    return byCodePoint(ra[i], rb[i]);
  }
  return ra.length - rb.length || byCodePoint(a, b);
}

export function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Throws ERR_IMIAD_LAYOUT when `dir` is not a folder; `what` says what the layout expects there. */
export function requireDir(dir: string, what: string): string {
  if (!isDirectory(dir)) throw layoutError(`Missing folder ${dir} (${what})`);
  return dir;
}

export function requireFile(file: string, what: string): string {
  if (!isFile(file)) throw layoutError(`Missing file ${file} (${what})`);
  return file;
}

function readDir(dir: string): fs.Dirent[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    throw fileError(`Cannot read folder ${dir}: ${(err as Error).message}`);
  }
}

/** Sub-folder names, code-point sorted; hidden entries ('.DS_Store', '.git') skipped. */
export function listDirs(dir: string): string[] {
  return readDir(dir)
    .filter((e) => !e.name.startsWith('.') && (e.isDirectory() || (e.isSymbolicLink() && isDirectory(path.join(dir, e.name)))))
    .map((e) => e.name)
    .sort(byCodePoint);
}

/**
 * The categories of a root laid out as <category>/train and/or <category>/test (MVTec AD, MPDD, BTAD, MVTec LOCO AD),
 * in natural order; other folders and files are ignored.
 */
export function listTrainTestCategories(root: string): string[] {
  requireDir(root, 'dataset root');
  return listDirs(root)
    .filter((d) => isDirectory(path.join(root, d, 'train')) || isDirectory(path.join(root, d, 'test')))
    .sort(natural);
}

/** Absolute paths of the image files directly in `dir` (any case of the extension), code-point sorted. */
export function listImages(dir: string): string[] {
  return readDir(dir)
    .filter((e) => !e.name.startsWith('.') && isImageFile(e.name) && (e.isFile() || (e.isSymbolicLink() && isFile(path.join(dir, e.name)))))
    .map((e) => path.join(dir, e.name))
    .sort(byCodePoint);
}

/** Image files directly in `dir`, indexed by stem; two images with one stem are a layout error. */
export function imagesByStem(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!isDirectory(dir)) return out;
  for (const file of listImages(dir)) {
    const s = stem(file);
    const prior = out.get(s);
    if (prior !== undefined) throw layoutError(`Ambiguous files ${prior} and ${file}: two images with the stem '${s}'`);
    out.set(s, file);
  }
  return out;
}

export function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').replace(/^\ufeff/, '');
  } catch (err) {
    throw fileError(`Cannot read ${file}: ${(err as Error).message}`);
  }
}

/** Parses CSV text (quoted fields, doubled quotes, CRLF) into rows of fields. Blank lines are dropped. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let i = 0;
  const endRow = (): void => {
    row.push(field);
    if (!(row.length === 1 && row[0] === '')) rows.push(row);
    row = [];
    field = '';
  };
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else field += c;
      i++;
      continue;
    }
    if (c === '"' && field === '') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n') endRow();
    else if (c !== '\r') field += c;
    i++;
  }
  if (field !== '' || row.length > 0) endRow();
  return rows;
}

const SPLIT_ORDER: Record<Split, number> = { train: 0, validation: 1, test: 2 };

/** The stable sample order of every loader: split, then normal before anomalous, then defect type, then path. */
export function compareSamples(a: Sample, b: Sample): number {
  return (
    SPLIT_ORDER[a.split] - SPLIT_ORDER[b.split] ||
    (a.label === b.label ? 0 : a.label === 'normal' ? -1 : 1) ||
    byCodePoint(a.defectType, b.defectType) ||
    byCodePoint(a.path, b.path)
  );
}

/** Keeps the requested categories (in the requested order), or all; an unknown name is a layout error. */
export function selectCategories(available: string[], requested: string[] | undefined, root: string, layout: string): string[] {
  if (!requested || requested.length === 0) return available;
  for (const name of requested) {
    if (!available.includes(name)) {
      throw layoutError(`Category '${name}' not found in ${root} (${layout} categories there: ${available.join(', ') || 'none'})`);
    }
  }
  return requested.slice();
}
