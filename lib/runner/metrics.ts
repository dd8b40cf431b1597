/**
 * From lib/metrics' evaluation results (the JSON shapes of `imiad evaluate`, after the official scripts) to the flat
 * metric names the store and the reports use (METRIC_NAMES). Typed structurally so that the runner does not depend
 * on the evaluation engine's module.
 */
import type { Metrics } from './types';

/** The AU-PRO limit the paper reports (MVTec AD protocol) and the AU-sPRO limit of its LOCO tables. */
export const PRO_LIMIT = '0.3';
export const SPRO_LIMIT = '0.05';

export interface CategoryEvaluationLike {
  image_auroc: number;
  image_ap: number;
  pixel_auroc: number;
  pixel_ap: number;
  aupro: Record<string, number>;
  f1_max: number;
  details?: { pixel_f1_max?: number };
}

export interface LocoEvaluationLike {
  localization: { logical_anomalies: Record<string, number>; structural_anomalies: Record<string, number>; mean: Record<string, number> };
  classification: { logical_anomalies: number; structural_anomalies: number; mean: number };
}

const finite = (v: number | undefined): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * The areas at FPR limits other than the reported one, named `<metric>@<limit>` (e.g. `pixelPRO@0.05`, `sPRO@0.3`):
 * the same flat number-or-null shape as every other metric.
 */
function otherLimits(name: string, byLimit: Record<string, number>, reported: string): Metrics {
  const out: Metrics = {};
  for (const [limit, v] of Object.entries(byLimit)) if (limit !== reported) out[`${name}@${limit}`] = finite(v);
  return out;
}

/** An MVTec-like category's evaluation as stored metrics. */
export function metricsFromEvaluation(e: CategoryEvaluationLike): Metrics {
  return {
    imageAUROC: finite(e.image_auroc),
    imageAP: finite(e.image_ap),
    imageF1Max: finite(e.f1_max),
    pixelAUROC: finite(e.pixel_auroc),
    pixelAP: finite(e.pixel_ap),
    pixelPRO: finite(e.aupro[PRO_LIMIT]),
    pixelF1Max: finite(e.details?.pixel_f1_max),
    ...otherLimits('pixelPRO', e.aupro, PRO_LIMIT),
  };
}

/**
 * An MVTec LOCO AD category: the logical / structural split of the official script, plus (optionally) the
 * evaluation over all test images with the union of the channels as mask, for the image and pixel AUROC / AP of
 * Table VI. Its PRO is dropped: LOCO reports sPRO.
 */
export function metricsFromLocoEvaluation(loco: LocoEvaluationLike, overall?: CategoryEvaluationLike): Metrics {
  const base = overall ? metricsFromEvaluation(overall) : {};
  return {
    ...base,
    pixelPRO: null,
    imageAUROCLogical: finite(loco.classification.logical_anomalies),
    imageAUROCStructural: finite(loco.classification.structural_anomalies),
    sPROLogical: finite(loco.localization.logical_anomalies[SPRO_LIMIT]),
    sPROStructural: finite(loco.localization.structural_anomalies[SPRO_LIMIT]),
    sPRO: finite(loco.localization.mean[SPRO_LIMIT]),
    ...otherLimits('sPROLogical', loco.localization.logical_anomalies, SPRO_LIMIT),
    ...otherLimits('sPROStructural', loco.localization.structural_anomalies, SPRO_LIMIT),
    ...otherLimits('sPRO', loco.localization.mean, SPRO_LIMIT),
  };
}
