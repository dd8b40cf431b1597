/**
 * AU-sPRO of MVTec LOCO AD, following the official mvtec_loco_ad_evaluation: one channel per ground-truth PNG (each
 * PNG holds exactly one positive pixel value, which selects its entry of defects_config.json), saturation areas
 * `int(t * area)` (relative) or `min(t, area)` (absolute), `score > t`, FPR over the pixels outside the union of the
 * channels, sPRO = mean over channels of min(TP / saturation, 1). The curve is swept exactly over every distinct score.
 */
import { imiadError } from '../../bindings/errors';
import { type ChannelAnomalyMap, type KernelOptions, PixelAccumulator, requireLimits } from '../../bindings/metrics';
import { saturationArea } from '../datasets/loco';
import type { LocoDefectConfig } from '../datasets/types';
import { decodeRaw } from '../image/mask';
import { byLimit } from './pro';

export type { ChannelAnomalyMap };

/** The integration limits of the official LOCO evaluation (MAX_FPRS). */
export const LOCO_LIMITS: readonly number[] = [0.01, 0.05, 0.1, 0.3, 1.0];

/**
 * Checks a category's parsed defects_config.json the way the official DefectConfig asserts it: pixel values in
 * 1..255, relative thresholds in (0, 1], absolute thresholds integers.
 */
export function checkDefectsConfig(config: LocoDefectConfig[], where: string): void {
  config.forEach((entry, i) => {
    const bad = (what: string): Error => imiadError('Error', 'ERR_IMIAD_LAYOUT', `Invalid entry ${i} of defects_config.json in ${where}: ${what}`);
    const t = entry.saturation_threshold;
    if (entry.relative_saturation && !(t > 0 && t <= 1)) throw bad('a relative saturation_threshold must lie in (0, 1]');
    if (!entry.relative_saturation && !Number.isInteger(t)) throw bad('an absolute saturation_threshold must be an integer');
    if (!Number.isInteger(entry.pixel_value) || entry.pixel_value < 1 || entry.pixel_value > 255) throw bad('pixel_value must be an integer in 1..255');
  });
}

/** One ground-truth channel read for sPRO, with the official checks. */
export interface SproChannel {
  /** 1 where the defect is, 0 elsewhere. */
  mask: Uint8Array;
  width: number;
  height: number;
  pixelValue: number;
  config: LocoDefectConfig;
  defectArea: number;
  saturationArea: number;
}

/**
 * Reads one ground-truth channel PNG with the official checks (GroundTruthChannel.create_from_integer_array): exactly
 * one positive value besides 0, listed in defects_config.json, whose entry gives the saturation area; an empty channel
 * or a saturation area of 0 (where sPRO would be 0/0) is an error naming the file.
 */
export async function readSproChannel(file: string, defectsConfig: LocoDefectConfig[]): Promise<SproChannel> {
  const raw = await decodeRaw(file);
  const n = raw.width * raw.height;
  const mask = new Uint8Array(n);
  let value = 0;
  let area = 0;
  for (let i = 0, p = 0; i < n; i++, p += raw.channels) {
    const v = raw.data[p];
    if (v === 0) continue;
    if (value === 0) value = v;
    else if (v !== value) {
      throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Expected one defect value in ground-truth channel ${file} but found ${value} and ${v}`);
    }
    mask[i] = 1;
    area++;
  }
  if (value === 0) throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Expected a defect in ground-truth channel ${file} but it is empty`);
  const config = defectsConfig.find((c) => c.pixel_value === value);
  if (!config) throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Ground-truth channel ${file} has pixel value ${value}, which defects_config.json does not list`);
  const sat = saturationArea(config, area);
  if (sat < 1) {
    throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Ground-truth channel ${file} has a saturation area of 0 (defect area ${area}, ${config.defect_name}): sPRO is undefined`);
  }
  return { mask, width: raw.width, height: raw.height, pixelValue: value, config, defectArea: area, saturationArea: sat };
}

/** AU-sPRO per limit (keyed "0.01" ... "1.0") over images with LOCO channels; good images have no channels. */
export async function auSpro(
  images: ChannelAnomalyMap[],
  opts: KernelOptions & { limits?: number[] } = {},
): Promise<Record<string, number>> {
  const limits = requireLimits(opts.limits ?? [...LOCO_LIMITS]);
  const acc = new PixelAccumulator();
  await acc.addChannelImages(images, { signal: opts.signal });
  const r = await acc.compute({ limits, signal: opts.signal, onProgress: opts.onProgress });
  if (r.units === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected at least one ground-truth channel for AU-sPRO but received none');
  if (r.negatives === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected at least one defect-free pixel for AU-sPRO but received none');
  return byLimit(limits, r.areaUnderPro);
}
