/**
 * AU-PRO exactly as MVTec AD's official pro_curve_util.compute_pro + generic_util.trapezoid define it, together
 * with pixel AUROC / AP / F1-max from the same pass over the pixels.
 */
import { imiadError } from '../../bindings/errors';
import { type KernelOptions, type MaskedAnomalyMap, PixelAccumulator, type PixelCurveMetrics, requireLimits } from '../../bindings/metrics';

export { PixelAccumulator, type MaskedAnomalyMap, type PixelCurveMetrics };
export { labelComponents, type ComponentLabels, trapezoid } from '../../bindings/metrics';

/** The JSON key of an integration limit, as Python prints the float: 0.3 -> "0.3", 1 -> "1.0". */
export function limitKey(limit: number): string {
  return Number.isInteger(limit) ? limit.toFixed(1) : String(limit);
}

/** Maps per-limit values to an object keyed by limitKey. */
export function byLimit(limits: number[], values: number[]): Record<string, number> {
  const out: Record<string, number> = {};
  limits.forEach((l, i) => {
    out[limitKey(l)] = values[i];
  });
  return out;
}

export interface AuProResult {
  /** AU-PRO per limit, keyed by limitKey (e.g. "0.3"). */
  aupro: Record<string, number>;
  pixel: PixelCurveMetrics;
}

/**
 * AU-PRO over a set of anomaly maps and binary ground-truth masks (regions: 8-connected components), plus the pixel
 * AUROC / AP / F1-max. Images without a mask count as all normal.
 */
export async function auPro(images: MaskedAnomalyMap[], opts: KernelOptions & { limits?: number[] } = {}): Promise<AuProResult> {
  const limits = requireLimits(opts.limits ?? [0.3]);
  const acc = new PixelAccumulator();
  await acc.addImages(images, { signal: opts.signal });
  const pixel = await acc.compute({ limits, signal: opts.signal, onProgress: opts.onProgress });
  if (pixel.units === 0) {
    throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected at least one anomalous ground-truth region for AU-PRO but the masks are all empty');
  }
  if (pixel.negatives === 0) {
    throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected at least one normal pixel for AU-PRO but every pixel is anomalous');
  }
  return { aupro: byLimit(limits, pixel.areaUnderPro), pixel };
}
