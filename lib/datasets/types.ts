/** The dataset model every loader returns and every later stage consumes. */

export type DatasetName = 'mvtec' | 'mpdd' | 'loco' | 'btad' | 'mtd' | 'visa' | 'dagm' | 'folder';

export const DATASET_NAMES: readonly DatasetName[] = ['mvtec', 'mpdd', 'loco', 'btad', 'mtd', 'visa', 'dagm', 'folder'];

export type Label = 'normal' | 'anomaly';
export type Split = 'train' | 'validation' | 'test';

export interface Sample {
  /** Absolute path of the image file. */
  path: string;
  /**
   * Ground-truth mask files (absolute paths). One for pixel-level datasets; several for MVTec LOCO AD (one PNG per
   * defect: a channel each); empty for normal images and for anomalies without a mask.
   */
  maskPaths: string[];
  label: Label;
  /** 'good' for normal images; the defect folder/type name otherwise (LOCO: 'logical_anomalies' | 'structural_anomalies'). */
  defectType: string;
  split: Split;
}

/** One saturation rule of an MVTec LOCO AD category's defects_config.json. */
export interface LocoDefectConfig {
  defect_name: string;
  pixel_value: number;
  saturation_threshold: number;
  relative_saturation: boolean;
}

export interface Category {
  /** Category name (MVTec: 'bottle'; BTAD: '01'; DAGM: 'Class1'; ...). */
  name: string;
  /** The category's folder on disk. */
  root: string;
  /** All samples of the category, in a stable sorted order (split, then defect type, then file name). */
  samples: Sample[];
  /** MVTec LOCO AD only: the parsed defects_config.json. */
  defectsConfig?: LocoDefectConfig[];
}
