/** Evaluation metrics: classification curves, AU-PRO, AU-sPRO, forgetting, and per-category evaluation. */
export { binaryClassificationMetrics, rocAuc, averagePrecision, f1Max, type BinaryClassificationMetrics } from './roc';
export { auPro, byLimit, limitKey, labelComponents, trapezoid, PixelAccumulator, type AuProResult, type ComponentLabels, type MaskedAnomalyMap, type PixelCurveMetrics } from './pro';
export { auSpro, checkDefectsConfig, LOCO_LIMITS, type ChannelAnomalyMap } from './spro';
export { forgettingMeasure, forgettingMeasureWithGaps, type ForgettingMeasure, type PartialForgettingMeasure } from './forgetting';
export {
  evaluateCategory,
  evaluateLocoCategory,
  type CategoryEvaluation,
  type CategoryMetrics,
  type EvaluateOptions,
  type LocoCategoryMetrics,
  type Prediction,
  type PredictionSource,
} from './evaluate';
export { decodeNpy, decodeTiff, encodeNpy, encodeTiff, findMapFile, readAnomalyMap, MAP_EXTENSIONS, type AnomalyMap } from './maps';
