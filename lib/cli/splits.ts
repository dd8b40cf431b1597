/** `imiad splits --dataset NAME --root DIR --setting S [options] --json OUT`: writes a setting's split manifest. */
import * as fs from 'fs';
import * as path from 'path';

import type { Command } from 'commander';

import { imiadError } from '../../bindings/errors';
import { loadDataset, requireDatasetName } from '../datasets';
import { buildManifest, type CategoryManifest, type SettingManifest } from '../settings';
import { requireSeed } from '../settings/common';
import { action } from './action';
import { addSettingOptions, settingFromFlags, type SettingFlags } from './setting-options';

interface SplitsFlags extends SettingFlags {
  dataset: string;
  root: string;
  categories?: string;
  json: string;
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
  addSettingOptions(
    program
      .command('splits')
      .description("Write a setting's split manifest (the exact training and test files) without running anything")
      .requiredOption('--dataset <name>', 'mvtec|mpdd|loco|btad|mtd|visa|dagm')
      .requiredOption('--root <dir>', 'the dataset folder')
      .option('--categories <a,b,...>', 'only these categories, in this order'),
  )
    .requiredOption('--json <file>', "where to write the manifest ('-' for stdout)")
    .action(
      action(async (flags: SplitsFlags) => {
        const { spec, seed } = settingFromFlags(flags);
        requireSeed(seed);
        const categories = await loadDataset(requireDatasetName(flags.dataset), flags.root, {
          ...(flags.categories ? { categories: flags.categories.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
        });
        const manifest = buildManifest(spec, categories, seed);
        const text = `${JSON.stringify(manifest, null, 2)}\n`;
        if (flags.json === '-') {
          process.stdout.write(text);
          return;
        }
        try {
          fs.mkdirSync(path.dirname(path.resolve(flags.json)), { recursive: true });
          fs.writeFileSync(flags.json, text);
        } catch (err) {
          throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot write ${flags.json}: ${(err as Error).message}`);
        }
        const tasks: SettingManifest[] = Array.isArray(manifest) ? manifest : [manifest];
        const lines = tasks.flatMap((m, i) => Object.entries(m).map(([name, c]) => (Array.isArray(manifest) ? `task ${i + 1} ` : '') + describe(name, c)));
        process.stdout.write(`${lines.join('\n')}\nManifest written to ${flags.json}\n`);
      }),
    );
}
