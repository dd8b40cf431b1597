/**
 * `imiad predict --load MODEL --input DIR|FILES [--out DIR] [--threshold T] [--json [FILE]]`: scores new images with
 * a detector saved by `imiad run --save`. One row per image: path, score, decision (anomaly when score >= the
 * threshold: the checkpoint's, or --threshold). With --out: OUT/predictions.csv, and per image OUT/maps/<rel>.tiff
 * (float32, as `imiad run --maps` writes) and OUT/overlays/<rel>.png (the map's jet colours over the image), <rel>
 * being the image's path inside its --input folder without the extension (a file given directly: its name).
 * stdout gets the CSV rows, or the JSON with --json and no FILE (--json FILE writes it there).
 * Images are scored in batches (--batch-size, default 16): memory holds one batch of maps, whatever the folder size.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Command } from 'commander';

import { imiadError, invalidType } from '../../bindings/errors';
import { byCodePoint, isDirectory, isFile, isImageFile, listDirs, listImages } from '../datasets/files';
import { encodeTiff } from '../metrics/maps';
import { type ImagePrediction, loadDetector, type LoadedDetector } from '../methods/load';
import { overlayPng } from '../runner/heatmaps';
import { action, interruptible } from './action';
import { addComputeOptions, applyComputeOptions, type ComputeFlags } from './compute-options';
import { info, progress } from './progress';

export interface PredictCommandOptions extends ComputeFlags {
  load: string;
  input: string[];
  out?: string;
  threshold?: string;
  json?: string | boolean;
  batchSize?: string;
}

export interface PredictInput {
  /** The image file as the rows show it (the --input folder joined with the path inside it, or the file as given). */
  file: string;
  /** Where its outputs go under --out, without extension. */
  rel: string;
}

function imagesUnder(dir: string, prefix = ''): string[] {
  const own = listImages(dir).map((f) => prefix + path.basename(f));
  const nested = listDirs(dir).flatMap((d) => imagesUnder(path.join(dir, d), `${prefix}${d}/`));
  return [...own, ...nested].sort(byCodePoint);
}

/** The images --input names: folders searched recursively (hidden entries skipped), files taken as given. */
export function predictInputs(inputs: string[]): PredictInput[] {
  if (inputs.length === 0) throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected at least one folder or image for --input but received none');
  const found: PredictInput[] = [];
  for (const input of inputs) {
    if (isDirectory(input)) {
      const inside = imagesUnder(input);
      if (inside.length === 0) throw imiadError('Error', 'ERR_IMIAD_EMPTY', `Expected images (png, jpg, jpeg, bmp, tif, tiff) in --input folder ${input} but found none`);
      for (const rel of inside) found.push({ file: path.join(input, rel), rel: rel.replace(/\.[^./]+$/, '') });
    } else if (isFile(input)) {
      if (!isImageFile(input)) throw imiadError('Error', 'ERR_IMIAD_FILE', `Expected an image file (png, jpg, jpeg, bmp, tif, tiff) for --input but received ${input}`);
      found.push({ file: input, rel: path.basename(input).replace(/\.[^.]+$/, '') });
    } else {
      throw imiadError('Error', 'ERR_IMIAD_FILE', `--input ${input} does not exist`);
    }
  }
  const seen = new Map<string, string>();
  for (const f of found) {
    const other = seen.get(f.rel);
    if (other !== undefined) throw imiadError('Error', 'ERR_IMIAD_ARGUMENT', `${other} and ${f.file} would write the same outputs (${f.rel}.*): give them from different folders`);
    seen.set(f.rel, f.file);
  }
  return found;
}

function csvField(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

async function writeAtomic(file: string, bytes: Buffer | string): Promise<void> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  await fs.promises.writeFile(tmp, bytes);
  await fs.promises.rename(tmp, file);
}

export interface PredictSummary {
  checkpoint: string;
  method: string;
  threshold: number;
  threshold_source: string;
  images: number;
  anomalies: number;
  predictions: { path: string; score: number; decision: string }[];
}

/** Scores every input image in batches; writes maps and overlays under `out` as it goes. */
export async function runPredict(opts: PredictCommandOptions, signal?: AbortSignal): Promise<PredictSummary> {
  const batchSize = opts.batchSize === undefined ? 16 : Number(opts.batchSize);
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 4096) throw invalidType('integer between 1 and 4096', '--batch-size', opts.batchSize);
  let threshold: number | undefined;
  if (opts.threshold !== undefined) {
    threshold = Number(opts.threshold);
    if (opts.threshold.trim() === '' || !Number.isFinite(threshold)) throw invalidType('finite number', '--threshold', opts.threshold);
  }
  const inputs = predictInputs(opts.input);
  const detector: LoadedDetector = await loadDetector(opts.load, threshold === undefined ? {} : { threshold });
  try {
    if (!detector.threshold) {
      throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', `Checkpoint ${opts.load} holds no decision threshold (saved by an older imiad): pass --threshold T`);
    }
    const t = detector.threshold.threshold;
    const bar = progress('predict', inputs.length);
    const rows: PredictSummary['predictions'] = [];
    for (let start = 0; start < inputs.length; start += batchSize) {
      const batch = inputs.slice(start, start + batchSize);
      const predictions: ImagePrediction[] = await detector.predict(batch.map((b) => b.file), { signal });
      for (let i = 0; i < batch.length; i++) {
        const p = predictions[i];
        rows.push({ path: batch[i].file, score: p.score, decision: p.decision });
        if (opts.out && p.map) {
          await writeAtomic(path.join(opts.out, 'maps', `${batch[i].rel}.tiff`), encodeTiff(p.map));
          // Colours span [0, threshold]: red is at or above the decision threshold, the same scale on every image.
          await writeAtomic(path.join(opts.out, 'overlays', `${batch[i].rel}.png`), await overlayPng(batch[i].file, p.map, 0, t));
        }
      }
      bar.update(Math.min(inputs.length, start + batch.length));
    }
    bar.done();
    return {
      checkpoint: opts.load,
      method: detector.method,
      threshold: t,
      threshold_source: detector.threshold.source,
      images: rows.length,
      anomalies: rows.filter((r) => r.decision === 'anomaly').length,
      predictions: rows,
    };
  } finally {
    await detector.dispose();
  }
}

export function predictionsCsv(summary: PredictSummary): string {
  return `path,score,decision\n${summary.predictions.map((r) => `${csvField(r.path)},${r.score},${r.decision}`).join('\n')}\n`;
}

export function registerPredict(program: Command): void {
  const cmd = program
    .command('predict')
    .description('Score new images with a detector saved by imiad run --save: score and decision per image, maps and overlays')
    .requiredOption('--load <file>', 'the checkpoint written by imiad run --save')
    .requiredOption('--input <paths...>', 'image folders (searched recursively) and/or image files')
    .option('--out <dir>', 'write predictions.csv, maps/<image>.tiff and overlays/<image>.png here')
    .option('--threshold <t>', "decision threshold (default: the checkpoint's, chosen when it was saved)")
    .option('--json [file]', 'the predictions as JSON: to FILE, or to stdout without one')
    .option('--batch-size <n>', 'images scored together (memory holds one batch of maps; default 16)')
    .addHelpText('after', '\nExample:\n  imiad run --dataset mvtec --root data --categories woven --method patchcore --save woven.imiad\n  imiad predict --load woven.imiad --input new-images/ --out predictions/\n');
  addComputeOptions(cmd);
  cmd.action(
    action(async (opts: PredictCommandOptions) => {
      applyComputeOptions(opts);
      const summary = await interruptible((signal) => runPredict(opts, signal));
      if (!summary) return;
      const json = `${JSON.stringify(summary, null, 2)}\n`;
      if (opts.out) {
        await writeAtomic(path.join(opts.out, 'predictions.csv'), predictionsCsv(summary));
        info(`Predictions, maps and overlays written to ${opts.out}`);
      }
      if (typeof opts.json === 'string') {
        await writeAtomic(opts.json, json);
        info(`JSON written to ${opts.json}`);
      }
      // stdout: the JSON with --json and no FILE, else the CSV rows.
      process.stdout.write(opts.json === true ? json : predictionsCsv(summary));
      info(`${summary.anomalies} of ${summary.images} images at or above the threshold ${summary.threshold} (${summary.threshold_source})`);
    }),
  );
}
