/** `imiad synth --layout L --out DIR [...]`: writes a procedural dataset in a published layout. */
import type { Command } from 'commander';

import { formatStats } from '../datasets/inspect';
import { synthesize, SYNTH_LAYOUTS, type SynthLayout } from '../datasets/synth';
import { action } from './action';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';
import { applyComputeOptions, DEVICE_HELP, QUIET_HELP } from './compute-options';
import { progress } from './progress';

interface SynthFlags {
  layout: string;
  out: string;
  seed?: string;
  categories?: string;
  size?: string;
  train?: string;
  test?: string;
  json?: JsonFlag;
}

function intFlag(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) {
    throw Object.assign(new TypeError(`Expected non-negative integer for --${name} but received ${value} of type string`), { code: 'ERR_IMIAD_ARGUMENT' });
  }
  return n;
}

export function registerSynth(program: Command): void {
  const cmd = program
    .command('synth')
    .description('Write a synthetic dataset (procedural textures and objects with scratches, holes, stains, cracks) in a published layout')
    .requiredOption('--layout <layout>', SYNTH_LAYOUTS.join('|'))
    .requiredOption('--out <dir>', 'output folder (new or empty)')
    .option('--seed <n>', 'seed (default 0): same seed, same bytes')
    .option('--categories <n>', 'number of categories (default 2; mtd has one)')
    .option('--size <px>', 'image height in pixels (default 128)')
    .option('--train <n>', 'normal training images per category (default 10)')
    .option('--test <n>', 'test images per category, half normal (default 8)')
    .option('--device <device>', DEVICE_HELP)
    .option('--quiet', QUIET_HELP);
  addJsonOption(cmd, 'what was written (the shape of datasets inspect --json)');
  cmd.action(
      action(async (flags: SynthFlags) => {
        applyComputeOptions(flags);
        if (!(SYNTH_LAYOUTS as readonly string[]).includes(flags.layout)) {
          throw Object.assign(new TypeError(`Expected one of ${SYNTH_LAYOUTS.join(', ')} for --layout but received ${flags.layout} of type string`), {
            code: 'ERR_IMIAD_ARGUMENT',
          });
        }
        let bar: ReturnType<typeof progress> | undefined;
        const stats = await synthesize(flags.layout as SynthLayout, flags.out, {
          seed: intFlag(flags.seed, 'seed'),
          categories: intFlag(flags.categories, 'categories'),
          size: intFlag(flags.size, 'size'),
          train: intFlag(flags.train, 'train'),
          test: intFlag(flags.test, 'test'),
          onProgress: (done, total) => {
            bar ??= progress('synth', total);
            bar.update(done, total);
          },
        });
        bar?.done();
        if (!jsonToStdout(flags.json)) process.stdout.write(`Wrote ${flags.layout} layout to ${flags.out}\n${formatStats(stats)}`);
        const written = writeJsonOutput(flags.json, `${JSON.stringify(stats, null, 2)}\n`);
        if (written) process.stdout.write(`JSON written to ${written}\n`);
      }),
  );
}
