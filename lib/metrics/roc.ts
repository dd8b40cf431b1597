/**
 * Classification metrics over scores: AUROC (ties merged, trapezoid: scikit-learn's roc_auc_score), AP
 * (sum (R_n - R_{n-1}) P_n: scikit-learn's average_precision_score) and F1-max, computed natively.
 */
import { binaryClassificationMetrics, type BinaryClassificationMetrics, type KernelOptions } from '../../bindings/metrics';

export type { BinaryClassificationMetrics };
export { binaryClassificationMetrics };

type Scores = Float64Array | Float32Array | number[];
type Labels = Uint8Array | number[] | boolean[];

/** Area under the ROC curve (labels: 1/true = anomalous). */
export async function rocAuc(scores: Scores, labels: Labels, opts?: KernelOptions): Promise<number> {
  return (await binaryClassificationMetrics(scores, labels, opts)).auroc;
}

/** Average precision as scikit-learn defines it. */
export async function averagePrecision(scores: Scores, labels: Labels, opts?: KernelOptions): Promise<number> {
  return (await binaryClassificationMetrics(scores, labels, opts)).ap;
}

/** The maximum F1 score over all thresholds. */
export async function f1Max(scores: Scores, labels: Labels, opts?: KernelOptions): Promise<number> {
  return (await binaryClassificationMetrics(scores, labels, opts)).f1Max;
}
