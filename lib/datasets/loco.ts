/**
 * MVTec LOCO AD:
 *   <category>/train/good, <category>/validation/good
 *   <category>/test/{good,logical_anomalies,structural_anomalies}/<stem>.png
 *   <category>/ground_truth/{logical_anomalies,structural_anomalies}/<stem>/000.png, 001.png, ...
 *   <category>/defects_config.json: [{ defect_name, pixel_value, saturation_threshold, relative_saturation }]
 * Each ground-truth PNG is one defect ("channel"); its non-zero pixels carry the defect's pixel_value, which is how
 * the official evaluation links a channel to its saturation rule (readLocoChannel below).
 */
import * as path from 'path';

import { imiadError } from '../../bindings/errors';
import { decodeRaw, type BinaryMask } from '../image/mask';
import {
  compareSamples,
  isDirectory,
  layoutError,
  listDirs,
  listImages,
  listTrainTestCategories,
  readText,
  requireDir,
  requireFile,
  selectCategories,
  stem,
} from './files';
import type { Category, LoadOptions, LocoDefectConfig, Sample } from './types';

export const LOCO_ANOMALY_TYPES = ['logical_anomalies', 'structural_anomalies'] as const;

export const listLocoCategories = listTrainTestCategories;

export function parseDefectsConfig(file: string): LocoDefectConfig[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readText(file));
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_IMIAD_FILE') throw err;
    throw layoutError(`Malformed ${file}: ${(err as Error).message}`);
  }
  if (!Array.isArray(parsed)) throw layoutError(`Malformed ${file}: expected a JSON array of defect entries`);
  return parsed.map((entry: unknown, i: number) => {
    const e = entry as Record<string, unknown>;
    const ok =
      e !== null &&
      typeof e === 'object' &&
      typeof e.defect_name === 'string' &&
      Number.isInteger(e.pixel_value) &&
      typeof e.saturation_threshold === 'number' &&
      Number.isFinite(e.saturation_threshold) &&
      typeof e.relative_saturation === 'boolean';
    if (!ok) {
      throw layoutError(
        `Malformed ${file}: entry ${i} needs defect_name (string), pixel_value (integer), saturation_threshold (number), relative_saturation (boolean)`,
      );
    }
    return {
      defect_name: e.defect_name as string,
      pixel_value: e.pixel_value as number,
      saturation_threshold: e.saturation_threshold as number,
      relative_saturation: e.relative_saturation as boolean,
    };
  });
}

export function loadLocoCategory(root: string, name: string): Category {
  const catRoot = path.join(root, name);
  const samples: Sample[] = [];
  const defectsConfig = parseDefectsConfig(requireFile(path.join(catRoot, 'defects_config.json'), 'MVTec LOCO AD layout: <category>/defects_config.json'));
  for (const split of ['train', 'validation'] as const) {
    const dir = requireDir(path.join(catRoot, split, 'good'), `MVTec LOCO AD layout: <category>/${split}/good`);
    for (const file of listImages(dir)) samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split });
  }
  const testDir = requireDir(path.join(catRoot, 'test'), 'MVTec LOCO AD layout: <category>/test/<type>');
  for (const type of listDirs(testDir)) {
    const images = listImages(path.join(testDir, type));
    if (type === 'good') {
      for (const file of images) samples.push({ path: file, maskPaths: [], label: 'normal', defectType: 'good', split: 'test' });
      continue;
    }
    for (const file of images) {
      const channelDir = path.join(catRoot, 'ground_truth', type, stem(file));
      if (!isDirectory(channelDir)) throw layoutError(`Missing ground-truth folder ${channelDir} for ${file}`);
      const channels = listImages(channelDir);
      if (channels.length === 0) throw layoutError(`Expected at least one mask PNG in ${channelDir} for ${file} but found none`);
      samples.push({ path: file, maskPaths: channels, label: 'anomaly', defectType: type, split: 'test' });
    }
  }
  samples.sort(compareSamples);
  return { name, root: catRoot, samples, defectsConfig };
}

export function loadLoco(root: string, opts: LoadOptions = {}): Category[] {
  const available = listLocoCategories(root);
  if (available.length === 0) throw layoutError(`No MVTec LOCO AD categories in ${root} (expected <category>/train/good, <category>/defects_config.json)`);
  return selectCategories(available, opts.categories, root, 'MVTec LOCO AD').map((name) => loadLocoCategory(root, name));
}

/** One ground-truth channel of an MVTec LOCO AD image, with the defect its pixel value names. */
export interface LocoChannel {
  /** 1 where the defect is, 0 elsewhere. */
  mask: BinaryMask;
  pixelValue: number;
  defect: LocoDefectConfig;
  defectArea: number;
  /** Pixels of this channel that must be found for full credit (official: relative int(t * area), absolute min(t, area)). */
  saturationArea: number;
}

export function saturationArea(defect: LocoDefectConfig, area: number): number {
  return defect.relative_saturation ? Math.floor(defect.saturation_threshold * area) : Math.min(defect.saturation_threshold, area);
}

/**
 * Reads one ground-truth channel PNG with the official checks (GroundTruthChannel.create_from_integer_array): exactly
 * one positive value besides 0 (in the first colour channel), listed in defects_config.json, whose entry gives the
 * saturation area; an empty channel or a saturation area of 0 (where sPRO would be 0/0) is an error naming the file.
 * The loaders and the sPRO evaluation (lib/metrics) both read channels through this.
 */
export async function readLocoChannel(file: string, defectsConfig: LocoDefectConfig[]): Promise<LocoChannel> {
  const raw = await decodeRaw(file);
  const n = raw.width * raw.height;
  const data = new Uint8Array(n);
  let value = 0;
  let area = 0;
  for (let i = 0, p = 0; i < n; i++, p += raw.channels) {
    const v = raw.data[p];
    if (v === 0) continue;
    if (value === 0) value = v;
    else if (v !== value) {
      throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Expected one defect value in ground-truth channel ${file} but found ${value} and ${v}`);
    }
    data[i] = 1;
    area++;
  }
  if (value === 0) throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Expected a defect in ground-truth channel ${file} but it is empty`);
  const defect = defectsConfig.find((c) => c.pixel_value === value);
  if (!defect) throw layoutError(`Ground-truth channel ${file} has pixel value ${value}, which defects_config.json does not list`);
  const sat = saturationArea(defect, area);
  if (sat < 1) throw layoutError(`Ground-truth channel ${file} has a saturation area of 0 (defect area ${area}, ${defect.defect_name}): sPRO is undefined`);
  return { mask: { data, width: raw.width, height: raw.height }, pixelValue: value, defect, defectArea: area, saturationArea: sat };
}
