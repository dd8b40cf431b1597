/** The dataset loaders, one per published layout, behind one entry point. */
import { loadBtad, listBtadCategories } from './btad';
import { loadDagm, listDagmCategories } from './dagm';
import { layoutError } from './files';
import { folderCategoryName, loadFolder } from './folder';
import { loadLoco, listLocoCategories } from './loco';
import { loadMtd, listMtdCategories } from './mtd';
import { loadMvtec, listMvtecCategories } from './mvtec';
import { DATASET_NAMES, type Category, type DatasetName, type LoadOptions } from './types';
import { loadVisa, listVisaCategories } from './visa';

export * from './types';
export { readLocoChannel, saturationArea, parseDefectsConfig, type LocoChannel } from './loco';
export { parseDagmLabels, type DagmLabel } from './dagm';
export { splitNormals, NORMAL_SPLIT_RULE, type SplitManifest } from './split';
export { IMAGE_EXTENSIONS } from './files';

export const DATASET_TITLES: Record<DatasetName, string> = {
  mvtec: 'MVTec AD',
  mpdd: 'MPDD',
  loco: 'MVTec LOCO AD',
  btad: 'BTAD',
  mtd: 'Magnetic Tile Defects (MTD)',
  visa: 'VisA',
  dagm: 'DAGM 2007',
  folder: 'folder layout',
};

export function requireDatasetName(name: unknown): DatasetName {
  if (typeof name !== 'string' || !(DATASET_NAMES as readonly string[]).includes(name)) {
    throw layoutError(`Unknown dataset '${String(name)}' (one of ${DATASET_NAMES.join(', ')})`);
  }
  return name as DatasetName;
}

/**
 * Loads the categories of a dataset in its published layout. Samples of each category come in a stable order
 * (split, normal before anomalous, defect type, path). Missing or malformed folders and files throw
 * ERR_IMIAD_LAYOUT naming the path; unreadable ones ERR_IMIAD_FILE.
 */
export async function loadDataset(name: DatasetName, root: string, opts: LoadOptions = {}): Promise<Category[]> {
  switch (requireDatasetName(name)) {
    case 'mvtec':
      return loadMvtec(root, opts, 'MVTec AD');
    case 'mpdd':
      return loadMvtec(root, opts, 'MPDD');
    case 'loco':
      return loadLoco(root, opts);
    case 'btad':
      return loadBtad(root, opts);
    case 'mtd':
      return loadMtd(root, opts);
    case 'visa':
      return loadVisa(root, opts);
    case 'dagm':
      return loadDagm(root, opts);
    case 'folder':
      return loadFolder(root, opts);
  }
}

/** Category names of a dataset, in natural order, without reading every file. */
export async function listCategories(name: DatasetName, root: string, opts: LoadOptions = {}): Promise<string[]> {
  switch (requireDatasetName(name)) {
    case 'mvtec':
    case 'mpdd':
      return listMvtecCategories(root);
    case 'loco':
      return listLocoCategories(root);
    case 'btad':
      return listBtadCategories(root);
    case 'mtd':
      return listMtdCategories(root);
    case 'visa':
      return listVisaCategories(root);
    case 'dagm':
      return listDagmCategories(root);
    case 'folder':
      if (!opts.folder) throw layoutError('The folder layout needs the folders of normal and anomalous images (--normal DIR --anomaly DIR)');
      return [folderCategoryName(root, opts.folder)];
  }
}
