/** `imiad datasets inspect --dataset NAME --root DIR [--json [FILE]]`: counts and sizes per category. */
import type { Command } from 'commander';

import { loadDataset, requireDatasetName, DATASET_NAMES, type FolderLayout } from '../datasets';
import { imiadError } from '../../bindings/errors';
import { formatStats, inspectDataset, validateCategory } from '../datasets/inspect';
import { action } from './action';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';
import { addComputeOptions, applyComputeOptions, type ComputeFlags } from './compute-options';
import { progress } from './progress';

interface InspectFlags extends ComputeFlags {
  dataset: string;
  root: string;
  json?: JsonFlag;
  categories?: string;
  seed?: string;
  splitFile?: string;
  normal?: string;
  anomaly?: string;
  masks?: string;
  testNormal?: string;
}

export function registerDatasets(program: Command): void {
  const datasets = program.command('datasets').description('Dataset layouts: inspect a dataset on disk');
  const inspect = datasets
    .command('inspect')
    .description('Per category: train/validation/test counts of normal and anomalous images, defect types, min and max image size')
    .requiredOption('--dataset <name>', `dataset layout: ${DATASET_NAMES.join(', ')}`)
    .requiredOption('--root <dir>', 'dataset root folder')
    .option('--categories <list>', 'comma-separated category names (default: all)')
    .option('--seed <n>', 'seed of the normal-image split for mtd and folder (default 0)')
    .option('--split-file <file>', 'mtd/folder: split manifest to reuse, or to write when absent')
    .option('--normal <dir>', 'folder layout: normal images')
    .option('--anomaly <dir>', 'folder layout: anomalous images (sub-folders = defect types)')
    .option('--masks <dir>', 'folder layout: masks, named like the anomalous images (optionally with _mask)')
    .option('--test-normal <dir>', 'folder layout: normal test images (default: a seeded split of --normal)');
  addJsonOption(inspect, 'the statistics');
  addComputeOptions(inspect).action(
      action(async (flags: InspectFlags) => {
        applyComputeOptions(flags);
        const name = requireDatasetName(flags.dataset);
        let folder: FolderLayout | undefined;
        if (name === 'folder') {
          if (!flags.normal || !flags.anomaly) throw Object.assign(new TypeError('The folder layout needs --normal DIR and --anomaly DIR'), { code: 'ERR_IMIAD_ARGUMENT' });
          folder = { normal: flags.normal, anomaly: flags.anomaly, masks: flags.masks, testNormal: flags.testNormal };
        }
        const seed = flags.seed === undefined ? undefined : Number(flags.seed);
        if (seed !== undefined && (!Number.isInteger(seed) || seed < 0)) {
          throw Object.assign(new TypeError(`Expected non-negative integer for --seed but received ${flags.seed} of type string`), { code: 'ERR_IMIAD_ARGUMENT' });
        }
        const categories = await loadDataset(name, flags.root, {
          categories: flags.categories ? flags.categories.split(',').map((c) => c.trim()).filter((c) => c !== '') : undefined,
          seed,
          splitFile: flags.splitFile,
          folder,
        });
        const total = categories.reduce((n, c) => n + c.samples.length, 0);
        const bar = progress('inspect', 2 * total);
        const stats = await inspectDataset(categories, () => bar.tick());
        // Everything imiad run would reject: undecodable images and masks, mask sizes, empty splits.
        const problems: string[] = [];
        for (const c of categories) problems.push(...(await validateCategory(c, () => bar.tick())));
        bar.done();
        if (!jsonToStdout(flags.json)) process.stdout.write(formatStats(stats));
        const written = writeJsonOutput(flags.json, `${JSON.stringify(stats, null, 2)}\n`);
        if (written) process.stdout.write(`JSON written to ${written}\n`);
        if (problems.length > 0) {
          throw imiadError('Error', 'ERR_IMIAD_LAYOUT', `${problems.length} problem${problems.length === 1 ? '' : 's'} that imiad run would reject:\n${problems.map((p) => `  ${p}`).join('\n')}`);
        }
      }),
  );
}
