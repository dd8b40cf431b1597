/**
 * Minimal readers of the MVTec AD and MVTec LOCO AD test layouts, the way the official evaluation scripts walk them,
 * for `imiad evaluate` until the dataset loaders (lib/datasets) take over. Only the test split is read.
 *
 * MVTec AD (and MPDD): <root>/<category>/test/<defect>/<stem>.png with masks at
 * <root>/<category>/ground_truth/<defect>/<stem>_mask.png; defect folders whose name without '_' is not
 * alphabetic are skipped, as in the official parse_dataset_files.
 * MVTec LOCO AD: <root>/<category>/test/{good,logical_anomalies,structural_anomalies}/<stem>.png with one folder of
 * channel PNGs per anomalous image at <root>/<category>/ground_truth/<type>/<stem>/*.png, and
 * <root>/<category>/defects_config.json.
 */
import * as fs from 'fs';
import * as path from 'path';

import { imiadError } from '../../bindings/errors';
import type { Category, Sample } from '../datasets/types';
import { readDefectsConfig } from './spro';

function listDir(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir)
      .filter((f) => !f.startsWith('.'))
      .sort();
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Cannot read folder ${dir}: ${(err as Error).message}`);
  }
}

const isDir = (p: string): boolean => fs.existsSync(p) && fs.statSync(p).isDirectory();
const isImage = (f: string): boolean => /\.(png|jpe?g|bmp|tiff?)$/i.test(f);

/** Category folders under a dataset root: those holding a test/ folder. */
export function listCategories(root: string): string[] {
  if (!isDir(root)) throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Dataset root ${root} is not a folder`);
  return listDir(root).filter((c) => isDir(path.join(root, c, 'test')));
}

function categoryRoot(root: string, name: string): string {
  const dir = path.join(root, name);
  if (!isDir(path.join(dir, 'test'))) throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Expected a test folder at ${path.join(dir, 'test')}`);
  return dir;
}

/** The test samples of an MVTec AD-layout category. */
export function readMvtecTestCategory(root: string, name: string): Category {
  const dir = categoryRoot(root, name);
  const samples: Sample[] = [];
  for (const defect of listDir(path.join(dir, 'test'))) {
    if (!/^[A-Za-z]+$/.test(defect.replace(/_/g, '')) || !isDir(path.join(dir, 'test', defect))) continue;
    for (const file of listDir(path.join(dir, 'test', defect)).filter((f) => path.extname(f) === '.png')) {
      const stem = path.basename(file, '.png');
      const normal = defect === 'good';
      const mask = path.join(dir, 'ground_truth', defect, `${stem}_mask.png`);
      if (!normal && !fs.existsSync(mask)) {
        throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Missing ground-truth mask ${mask} for test image ${path.join(dir, 'test', defect, file)}`);
      }
      samples.push({ path: path.join(dir, 'test', defect, file), maskPaths: normal ? [] : [mask], label: normal ? 'normal' : 'anomaly', defectType: defect, split: 'test' });
    }
  }
  return { name, root: dir, samples };
}

/** The test samples of an MVTec LOCO AD category, with its defects_config.json. */
export function readLocoTestCategory(root: string, name: string): Category {
  const dir = categoryRoot(root, name);
  const configFile = path.join(dir, 'defects_config.json');
  if (!fs.existsSync(configFile)) throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Missing ${configFile}`);
  const defectsConfig = readDefectsConfig(configFile);
  const samples: Sample[] = [];
  for (const type of listDir(path.join(dir, 'test'))) {
    if (!isDir(path.join(dir, 'test', type))) continue;
    for (const file of listDir(path.join(dir, 'test', type)).filter(isImage)) {
      const stem = path.basename(file, path.extname(file));
      const normal = type === 'good';
      let maskPaths: string[] = [];
      if (!normal) {
        const gtDir = path.join(dir, 'ground_truth', type, stem);
        maskPaths = isDir(gtDir) ? listDir(gtDir).filter((f) => f.endsWith('.png')).map((f) => path.join(gtDir, f)) : [];
        if (maskPaths.length === 0) throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `Missing ground-truth channel PNGs in ${gtDir} for test image ${path.join(dir, 'test', type, file)}`);
      }
      samples.push({ path: path.join(dir, 'test', type, file), maskPaths, label: normal ? 'normal' : 'anomaly', defectType: type, split: 'test' });
    }
  }
  return { name, root: dir, samples, defectsConfig };
}
