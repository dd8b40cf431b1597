/**
 * `imiad bench <knn|knn-queries|coreset|metrics|patchcore|train|all> [--sizes ...] [--repeats N] [--device auto|cpu|cuda]
 * [--peers auto|none] [--json [FILE]] [--out DIR]`: head-to-head kernel benchmarks with scaling curves, for the
 * package as installed (lib/bench/suite.ts). Each kernel is swept over sizes, imiad against the Python peers found
 * (faiss, torch, scikit-learn; skipped with a note saying how to install them), and prints its table with the fitted
 * growth exponents; DIR receives <kernel>.json, <kernel>.svg and <kernel>.png per kernel and index.html with every
 * table and curve in DIR.
 */
import * as path from 'path';

import type { Command } from 'commander';

import { resolveDevice } from '../../bindings/device';
import { invalidType } from '../../bindings/errors';
import type { Device } from '../../bindings/validate';
import { machineInfo } from '../bench/common';
import { formatResult, writeIndexHtml, writeKernelFiles, type KernelFiles } from '../bench/output';
import { BENCH_DEFAULTS, BENCH_KERNELS, benchKernel, type BenchKernel, type BenchResult } from '../bench/suite';
import { cpuAddon } from '../../bindings/load';
import { trainAddon } from '../../bindings/train/train';
import { version } from '../version';
import { action } from './action';
import { addComputeOptions, applyComputeOptions } from './compute-options';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';
import { info } from './progress';
import { positiveFlag } from './worker';

interface BenchFlags {
  sizes?: string;
  repeats: string;
  device?: string;
  peers: string;
  out: string;
  dims?: string;
  queries?: string;
  rows?: string;
  imageSize?: string;
  json?: JsonFlag;
  quiet?: boolean;
}

function sizeList(value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1 || !Number.isSafeInteger(Number(p)))) {
    throw invalidType('positive integers separated by commas', '--sizes', value);
  }
  return [...new Set(parts.map(Number))];
}

export function registerBench(program: Command): void {
  const kinds = [...BENCH_KERNELS, 'all'];
  const cmd = program
    .command('bench')
    .argument('<kernel>', kinds.join('|'))
    .description('Benchmark imiad\'s kernels head to head against faiss, torch and scikit-learn (when python3 has them), swept over sizes, with scaling curves')
    .option('--sizes <list>', `the sizes swept, comma-separated (defaults: ${BENCH_KERNELS.map((k) => `${k} ${BENCH_DEFAULTS[k].sizes.join(',')} ${BENCH_DEFAULTS[k].sweep}`).join('; ')})`)
    .option('--repeats <n>', 'interleaved rounds per size (medians and min-max are reported)', '3')
    .option('--peers <mode>', 'auto: run the Python peers found; none: imiad alone', 'auto')
    .option('--out <dir>', 'folder for <kernel>.json, <kernel>.svg, <kernel>.png and index.html', 'imiad-bench')
    .option('--dims <n>', 'knn and coreset: feature width (default 1024 and 128)')
    .option('--queries <n>', 'knn: queries per search (default 784)')
    .option('--rows <n>', 'knn-queries: bank rows (default 16384)')
    .option('--image-size <px>', 'metrics: side of each anomaly map (default 1024); patchcore and train: image side (default 256)');
  addComputeOptions(cmd);
  addJsonOption(cmd, 'every table, growth exponent, peer note and load');
  cmd.action(
    action(async (kernel: string, flags: BenchFlags) => {
      applyComputeOptions(flags);
      if (!kinds.includes(kernel)) throw invalidType(`one of ${kinds.join(', ')}`, '<kernel>', kernel);
      if (flags.peers !== 'auto' && flags.peers !== 'none') throw invalidType('auto or none', '--peers', flags.peers);
      const sizes = sizeList(flags.sizes);
      const opts = {
        sizes,
        repeats: positiveFlag(flags.repeats, '--repeats', true) as number,
        device: resolveDevice((flags.device ?? 'auto') as Device),
        peers: flags.peers as 'auto' | 'none',
        dims: positiveFlag(flags.dims, '--dims', true),
        queries: positiveFlag(flags.queries, '--queries', true),
        rows: positiveFlag(flags.rows, '--rows', true),
        imageSize: positiveFlag(flags.imageSize, '--image-size', true),
        log: info,
      };
      const kernels = kernel === 'all' ? [...BENCH_KERNELS] : [kernel as BenchKernel];
      // The training addon is not part of the package: `bench train` says how to build it; `bench all` goes without.
      const skipped: Array<{ kernel: BenchKernel; reason: string }> = [];
      if (kernels.includes('train')) {
        try {
          trainAddon();
        } catch (err) {
          if (kernel === 'train') throw err;
          skipped.push({ kernel: 'train', reason: (err as Error).message });
          kernels.splice(kernels.indexOf('train'), 1);
          info(`bench train: skipped: ${(err as Error).message}`);
        }
      }
      const out = path.resolve(flags.out);
      const toStdout = jsonToStdout(flags.json);
      const machine = machineInfo(cpuAddon<{ threadCount: () => number }>().threadCount());
      const results: Array<BenchResult & { files: KernelFiles }> = [];
      for (const k of kernels) {
        const r = await benchKernel(k, opts);
        const files = await writeKernelFiles(r, out, { tool: 'imiad bench', version, machine, measuredAt: new Date().toISOString() });
        if (files.pngError) info(`bench ${k}: no PNG curve (${files.pngError}); the SVG is written`);
        results.push({ ...r, files });
        if (!toStdout) process.stdout.write(`${formatResult(r)}written: ${[files.json, files.svg, files.png].filter(Boolean).join(', ')}\n`);
      }
      const page = writeIndexHtml(out);
      if (!toStdout) process.stdout.write(`page: ${page}\n`);
      const written = writeJsonOutput(flags.json, `${JSON.stringify({ tool: 'imiad bench', version, machine, page, kernels: results, skipped }, null, 2)}\n`);
      if (written) process.stdout.write(`JSON written to ${written}\n`);
    }),
  );
}
