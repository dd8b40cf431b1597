/**
 * `imiad datasets inspect`: per category the counts and image sizes that the paper's Table III reports.
 * min_size / max_size are the smallest and largest width and height over all images, taken separately per axis
 * (for images of varying aspect they need not belong to one image).
 */
import { decodeImage, readImageSize } from '../image/decode';
import { decodeRaw } from '../image/mask';
import { byCodePoint } from './files';
import type { Category } from './types';

export interface CategoryStats {
  train_normal: number;
  train_anomaly: number;
  validation_normal: number;
  test_normal: number;
  test_anomaly: number;
  defect_types: string[];
  min_size: [number, number];
  max_size: [number, number];
}

export type DatasetStats = Record<string, CategoryStats>;

/** Runs `fn` over `items` with at most `limit` promises in flight, keeping the input order of results. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Counts of nothing yet; `imiad synth` fills the same shape as it writes. */
export function emptyCategoryStats(): CategoryStats {
  return {
    train_normal: 0,
    train_anomaly: 0,
    validation_normal: 0,
    test_normal: 0,
    test_anomaly: 0,
    defect_types: [],
    min_size: [0, 0],
    max_size: [0, 0],
  };
}

export async function inspectCategory(category: Category, onImage?: () => void): Promise<CategoryStats> {
  const stats = emptyCategoryStats();
  const types = new Set<string>();
  for (const s of category.samples) {
    if (s.split === 'validation') {
      // Validation sets of the published layouts hold normal images only.
      if (s.label === 'normal') stats.validation_normal++;
    } else {
      stats[`${s.split}_${s.label}` as 'train_normal' | 'train_anomaly' | 'test_normal' | 'test_anomaly']++;
    }
    if (s.label === 'anomaly') types.add(s.defectType);
  }
  stats.defect_types = [...types].sort(byCodePoint);
  const sizes = await mapLimit(category.samples, 8, async (s) => {
    const size = await readImageSize(s.path);
    onImage?.();
    return size;
  });
  if (sizes.length > 0) {
    const min: [number, number] = [Infinity, Infinity];
    const max: [number, number] = [0, 0];
    for (const z of sizes) {
      min[0] = Math.min(min[0], z.width);
      min[1] = Math.min(min[1], z.height);
      max[0] = Math.max(max[0], z.width);
      max[1] = Math.max(max[1], z.height);
    }
    stats.min_size = min;
    stats.max_size = max;
  }
  return stats;
}

export async function inspectDataset(categories: Category[], onImage?: () => void): Promise<DatasetStats> {
  const out: DatasetStats = {};
  for (const c of categories) out[c.name] = await inspectCategory(c, onImage);
  return out;
}

/**
 * What `imiad run` would reject in a category, one line each: images that do not decode (truncated, corrupt, empty:
 * the same strict decoder run uses), masks that do not decode or whose size differs from their image's, and a
 * category without normal training images or without test images. Empty when the category is usable.
 */
export async function validateCategory(category: Category, onImage?: () => void): Promise<string[]> {
  const problems: string[] = [];
  if (!category.samples.some((s) => s.split === 'train' && s.label === 'normal')) {
    problems.push(`${category.root}: category ${category.name} has no normal training images`);
  }
  if (!category.samples.some((s) => s.split === 'test')) problems.push(`${category.root}: category ${category.name} has no test images`);
  const found = await mapLimit(category.samples, 8, async (s) => {
    const lines: string[] = [];
    let size: { width: number; height: number } | null = null;
    try {
      const image = await decodeImage(s.path);
      size = { width: image.width, height: image.height };
    } catch (err) {
      lines.push((err as Error).message);
    }
    for (const m of s.maskPaths) {
      try {
        const mask = await decodeRaw(m);
        if (size && (mask.width !== size.width || mask.height !== size.height)) {
          lines.push(`Mask ${m} is ${mask.width}x${mask.height} but its image ${s.path} is ${size.width}x${size.height}`);
        }
      } catch (err) {
        lines.push((err as Error).message);
      }
    }
    onImage?.();
    return lines;
  });
  for (const lines of found) problems.push(...lines);
  return problems;
}

/** The readable table of `imiad datasets inspect`. */
export function formatStats(stats: DatasetStats): string {
  const header = ['category', 'train normal', 'train anomaly', 'val normal', 'test normal', 'test anomaly', 'defect types', 'min size', 'max size'];
  const rows = Object.entries(stats).map(([name, s]) => [
    name,
    String(s.train_normal),
    String(s.train_anomaly),
    String(s.validation_normal),
    String(s.test_normal),
    String(s.test_anomaly),
    String(s.defect_types.length),
    `${s.min_size[0]}x${s.min_size[1]}`,
    `${s.max_size[0]}x${s.max_size[1]}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
  for (const [name, s] of Object.entries(stats)) if (s.defect_types.length > 0) out.push(`${name}: ${s.defect_types.join(', ')}`);
  return `${out.join('\n')}\n`;
}
