/** The setting flags shared by `imiad splits` and `imiad run`: --setting and its options, --seed. */
import type { Command } from 'commander';

import { imiadError, invalidType } from '../../bindings/errors';
import { requireSettingName, settingSpec, SETTING_NAMES, AUGMENT_KINDS, type SettingSpec } from '../settings';

export interface SettingFlags {
  setting?: string;
  anomalies?: string;
  shots?: string;
  augment?: string;
  augmentCount?: string;
  noise?: string;
  order?: string;
  joint?: boolean;
  seed?: string;
}

export function addSettingOptions(cmd: Command): Command {
  return cmd
    .option('--setting <name>', `${SETTING_NAMES.join('|')} (default vanilla)`)
    .option('--anomalies <n>', 'supervised: labelled anomalies moved from test into training (default 10)')
    .option('--shots <k>', 'fewshot: normal training images (the paper: 1, 2, 4, 8)')
    .option('--augment <kind>', `fewshot: augmented copies of each shot, ${AUGMENT_KINDS.join('|')}`)
    .option('--augment-count <n>', 'fewshot: augmented copies per shot (default 4 with --augment)')
    .option('--noise <r>', 'noisy: ratio n/(m+n) of anomalies labelled normal in training (the paper: 0.05, 0.1, 0.15, 0.2)')
    .option('--order <a,b,...>', 'continual: task order (default: the dataset order)')
    .option('--joint', 'continual: retrain on the union of the tasks so far after each task (joint training, an upper bound; default: learn the tasks in turn)')
    .option('--seed <n>', 'seed of every random choice (default 0)');
}

function numberFlag(value: string | undefined, name: string, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw invalidType(integer ? 'an integer' : 'a number', `--${name}`, value);
  }
  return n;
}

/** Which setting each setting option belongs to (the flag as typed, the SettingFlags field, the setting). */
const SETTING_FLAGS: readonly { flag: string; field: keyof SettingFlags; setting: string }[] = [
  { flag: '--anomalies', field: 'anomalies', setting: 'supervised' },
  { flag: '--shots', field: 'shots', setting: 'fewshot' },
  { flag: '--augment', field: 'augment', setting: 'fewshot' },
  { flag: '--augment-count', field: 'augmentCount', setting: 'fewshot' },
  { flag: '--noise', field: 'noise', setting: 'noisy' },
  { flag: '--order', field: 'order', setting: 'continual' },
];

/**
 * The setting and seed the flags ask for. An option of another setting than the chosen one is an error naming it
 * (nothing is silently ignored), as is --augment-count without --augment.
 */
export function settingFromFlags(flags: SettingFlags): { spec: SettingSpec; seed: number } {
  const chosen = requireSettingName(flags.setting ?? 'vanilla');
  for (const { flag, field, setting } of SETTING_FLAGS) {
    if (flags[field] !== undefined && chosen !== setting) {
      throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', `${flag} applies to --setting ${setting}, not ${chosen}`);
    }
  }
  if (flags.augmentCount !== undefined && flags.augment === undefined) {
    throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', '--augment-count applies with --augment (the number of augmented copies per shot)');
  }
  if (flags.joint && flags.setting !== 'continual') throw invalidType('--setting continual with --joint', '--setting', flags.setting ?? 'vanilla');
  const spec = settingSpec(flags.setting ?? 'vanilla', {
    anomalies: numberFlag(flags.anomalies, 'anomalies', true),
    shots: numberFlag(flags.shots, 'shots', true),
    augment: flags.augment ?? null,
    augmentCount: numberFlag(flags.augmentCount, 'augment-count', true),
    noise: numberFlag(flags.noise, 'noise', false),
    order: flags.order ? flags.order.split(',').map((s) => s.trim()).filter(Boolean) : null,
    joint: flags.joint === true,
  });
  const seed = numberFlag(flags.seed, 'seed', true) ?? 0;
  return { spec, seed };
}
