/**
 * `imiad splits --dataset NAME --root DIR --setting S [options] [--json [FILE]]`: prints a summary of a setting's
 * splits; --json writes the split manifest to FILE, or alone to stdout without FILE (or with -).
 */
import type { Command } from 'commander';

import { loadDataset, requireDatasetName } from '../datasets';
import { buildManifest, type CategoryManifest, type SettingManifest } from '../settings';
import { requireSeed } from '../settings/common';
import { action } from './action';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';
import { addSettingOptions, settingFromFlags, type SettingFlags } from './setting-options';

interface SplitsFlags extends SettingFlags {
  dataset: string;
  root: string;
  categories?: string;
  json?: JsonFlag;
}

function describe(name: string, m: CategoryManifest): string {
  const trainAnomalies = m.train.filter((e) => e.label === 'anomaly').length;
  const noise = m.train.filter((e) => e.trueLabel === 'anomaly').length;
  const augmented = m.train.filter((e) => e.augment).length;
  const testAnomalies = m.test.filter((e) => e.label === 'anomaly').length;
  const parts = [`train ${m.train.length}`];
  if (trainAnomalies) parts.push(`${trainAnomalies} labelled anomalies`);
  if (noise) parts.push(`${noise} anomalies labelled normal (noise ${m.info.achievedNoise?.toFixed(4)})`);
  if (augmented) parts.push(`${augmented} augmented copies`);
  const line = `${name}: ${parts.join(', ')}; test ${m.test.length} (${testAnomalies} anomalous)`;
  return [line, ...(m.info.notes ?? []).map((n) => `  ${name}: ${n}`)].join('\n');
}

export function registerSplits(program: Command): void {
  const cmd = addSettingOptions(
    program
      .command('splits')
      .description("Write a setting's split manifest (the exact training and test files) without running anything")
      .requiredOption('--dataset <name>', 'mvtec|mpdd|loco|btad|mtd|visa|dagm')
      .requiredOption('--root <dir>', 'the dataset folder')
      .option('--categories <a,b,...>', 'only these categories, in this order'),
  );
  addJsonOption(cmd, 'the split manifest');
  cmd.addHelpText('after', '\nExample:\n  imiad splits --dataset mvtec --root ./mvtec --setting fewshot --shots 4 --seed 1 --json manifest.json\n');
  cmd.action(
      action(async (flags: SplitsFlags) => {
        const { spec, seed } = settingFromFlags(flags);
        requireSeed(seed);
        const categories = await loadDataset(requireDatasetName(flags.dataset), flags.root, {
          ...(flags.categories ? { categories: flags.categories.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
        });
        const manifest = buildManifest(spec, categories, seed);
        const written = writeJsonOutput(flags.json, `${JSON.stringify(manifest, null, 2)}\n`);
        if (jsonToStdout(flags.json)) return;
        const tasks: SettingManifest[] = Array.isArray(manifest) ? manifest : [manifest];
        const lines = tasks.flatMap((m, i) => Object.entries(m).map(([name, c]) => (Array.isArray(manifest) ? `task ${i + 1} ` : '') + describe(name, c)));
        process.stdout.write(`${lines.join('\n')}\n${written ? `Manifest written to ${written}\n` : ''}`);
      }),
  );
}
