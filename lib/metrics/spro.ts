/**
 * AU-sPRO of MVTec LOCO AD, following the official mvtec_loco_ad_evaluation: one channel per ground-truth PNG (each
 * PNG holds exactly one positive pixel value, which selects its entry of defects_config.json), saturation areas
 * `int(t * area)` (relative) or `min(t, area)` (absolute), `score > t`, FPR over the pixels outside the union of the
 * channels, sPRO = mean over channels of min(TP / saturation, 1). The curve is swept exactly over every distinct score.
 */
import { imiadError } from '../../bindings/errors';
import { type ChannelAnomalyMap, type KernelOptions, PixelAccumulator, requireLimits } from '../../bindings/metrics';
import type { LocoDefectConfig } from '../datasets/types';
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
