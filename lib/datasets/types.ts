/** The dataset model every loader returns and every later stage consumes. */
import type { SplitManifest } from './split';

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
  /** MTD and folder layout (no official split): the seeded split that was applied (lib/datasets/split.ts). */
  splitManifest?: SplitManifest;
}

/** Options every loader accepts (lib/datasets/index.ts loadDataset). */
export interface LoadOptions {
  /** Only these categories, in this order (default: all, in natural order). */
  categories?: string[];
  /** Seed of the split for layouts without an official one (MTD, folder without testNormal). Default 0. */
  seed?: number;
  /**
   * MTD and folder: a JSON split manifest. When the file exists its split is used verbatim; otherwise the seeded
   * split is computed and written there.
   */
  splitFile?: string;
  /** Folder layout only. Relative paths resolve against the root given to loadDataset. */
  folder?: FolderLayout;
}

/** A user's own data: folders of normal images, anomalous images and their masks. */
export interface FolderLayout {
  normal: string;
  anomaly: string;
  masks?: string;
  /** Normal test images; when absent, normal images are split by the seeded rule of lib/datasets/split.ts. */
  testNormal?: string;
  /** Category name (default: the base name of the root). */
  name?: string;
}
