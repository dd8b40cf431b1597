/**
 * The seeded train/test split of normal images for layouts without an official one (MTD, and the folder layout
 * without --test-normal). Rule: the test set gets as many normal images as there are anomalous images, but at most
 * half of the normal images (rounded down); which ones is decided by a Fisher-Yates shuffle of the code-point
 * sorted list of normal image paths (relative to the dataset root) with imiad's PRNG seeded by `seed` (default 0).
 * The rest are training images. The split is recorded in a JSON manifest so that it can be reused verbatim.
 */
import * as fs from 'fs';
import * as path from 'path';

import { Random } from '../prng';
import { byCodePoint, fileError, layoutError, readText } from './files';

export const NORMAL_SPLIT_RULE =
  'test normals = min(anomalies, floor(normals / 2)), drawn by a seeded Fisher-Yates shuffle of the sorted relative paths; the rest train';

export interface SplitManifest {
  layout: string;
  rule: string;
  seed: number;
  /** Paths relative to the dataset root, '/'-separated, sorted. */
  train_normal: string[];
  test_normal: string[];
}

export function splitNormals(relativePaths: string[], anomalyCount: number, seed: number): { train: string[]; test: string[] } {
  const sorted = relativePaths.slice().sort(byCodePoint);
  const testCount = Math.min(anomalyCount, Math.floor(sorted.length / 2));
  const order = new Random(seed).fork('normal-split').shuffle(sorted);
  const test = order.slice(0, testCount).sort(byCodePoint);
  const train = order.slice(testCount).sort(byCodePoint);
  return { train, test };
}

export function toRelative(root: string, file: string): string {
  return path.relative(root, file).split(path.sep).join('/');
}

/**
 * Applies a recorded split when `splitFile` exists (every normal image must be listed, every listed one must exist),
 * or computes the seeded split and, when `splitFile` is given, writes it there.
 */
export function resolveNormalSplit(
  layout: string,
  root: string,
  normals: string[],
  anomalyCount: number,
  seed: number,
  splitFile?: string,
): { manifest: SplitManifest; testSet: Set<string> } {
  const rel = normals.map((f) => toRelative(root, f));
  let manifest: SplitManifest;
  if (splitFile && fs.existsSync(splitFile)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readText(splitFile));
    } catch (err) {
      throw layoutError(`Malformed split manifest ${splitFile}: ${(err as Error).message}`);
    }
    const m = parsed as Partial<SplitManifest>;
    if (!m || !Array.isArray(m.train_normal) || !Array.isArray(m.test_normal)) {
      throw layoutError(`Malformed split manifest ${splitFile}: expected arrays train_normal and test_normal`);
    }
    const listed = new Set([...m.train_normal, ...m.test_normal]);
    for (const r of rel) if (!listed.has(r)) throw layoutError(`Normal image ${path.join(root, r)} is not listed in the split manifest ${splitFile}`);
    const present = new Set(rel);
    for (const r of listed) if (!present.has(r)) throw layoutError(`Split manifest ${splitFile} lists ${path.join(root, r)}, which is not a normal image of the dataset`);
    manifest = { layout, rule: m.rule ?? NORMAL_SPLIT_RULE, seed: m.seed ?? seed, train_normal: m.train_normal.slice(), test_normal: m.test_normal.slice() };
  } else {
    const { train, test } = splitNormals(rel, anomalyCount, seed);
    manifest = { layout, rule: NORMAL_SPLIT_RULE, seed, train_normal: train, test_normal: test };
    if (splitFile) {
      try {
        fs.mkdirSync(path.dirname(splitFile), { recursive: true });
        fs.writeFileSync(splitFile, `${JSON.stringify(manifest, null, 2)}\n`);
      } catch (err) {
        throw fileError(`Cannot write split manifest ${splitFile}: ${(err as Error).message}`);
      }
    }
  }
  return { manifest, testSet: new Set(manifest.test_normal) };
}
