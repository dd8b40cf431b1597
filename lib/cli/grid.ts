/**
 * `imiad grid CONFIG.json|yaml [--store FILE] [--concurrency N] [--dry-run] [--json [FILE]]`: runs every experiment
 * of the grid that the store does not hold yet, then prints the metrics table of the grid's experiments the store
 * holds (run now or before; --json: the results schema, docs/json-schema.md). The experiment executor (fit + predict
 * + evaluate) is passed in by lib/cli.ts; `--dry-run` needs none and lists what would run.
 */
import * as path from 'path';

import type { Command } from 'commander';

import { imiadError, invalidType } from '../../bindings/errors';
import { loadDataset } from '../datasets';
import { readGridConfig } from '../runner/config';
import { describeExperiment, expandGrid, runGrid } from '../runner/grid';
import { abortOnInterrupt } from '../runner/interrupt';
import { jsonText, resultFromRow, resultsDocument } from '../runner/schema';
import { ResultsStore } from '../runner/store';
import type { ExperimentExecutor } from '../runner/types';
import { action } from './action';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';
import { applyComputeOptions, DEVICE_HELP, QUIET_HELP } from './compute-options';
import { progress } from './progress';
import { formatResultsTable } from './results-table';

interface GridFlags {
  store?: string;
  concurrency?: string;
  dryRun?: boolean;
  json?: JsonFlag;
}

export function registerGrid(program: Command, executor?: ExperimentExecutor): void {
  const cmd = program
    .command('grid')
    .description('Run an experiment grid (datasets x categories x methods x settings x parameters x seeds) into the results store; resumes where it stopped')
    .argument('<config>', 'grid file, JSON or YAML')
    .option('--store <file>', 'results store (default: the file\'s "store", else ./imiad-results/results.db)')
    .option('--concurrency <n>', 'experiments at a time (default: the file\'s "concurrency", else 1)')
    .option('--dry-run', 'list the experiments and whether each is stored, run nothing')
    .option('--device <device>', DEVICE_HELP)
    .option('--quiet', QUIET_HELP);
  addJsonOption(cmd, 'the results (with --dry-run: the list)');
  cmd.addHelpText('after', '\nExample:\n  imiad grid grid.yaml --store results.db --json results.json\n');
  cmd.action(
      action(async (file: string, flags: GridFlags) => {
        applyComputeOptions(flags);
        const config = readGridConfig(file);
        if (flags.store) config.store = path.resolve(flags.store);
        if (flags.concurrency !== undefined) {
          const n = Number(flags.concurrency);
          if (!Number.isInteger(n) || n < 1) throw invalidType('a positive integer', '--concurrency', flags.concurrency);
          config.concurrency = n;
        }
        const store = new ResultsStore(config.store);
        try {
          const { experiments, invalid } = await expandGrid(config, (name, root, opts) => loadDataset(name, root, opts), (k) => store.heatmapDir(k));
          for (const bad of invalid) process.stderr.write(`imiad grid: skipping ${describeExperiment(bad.config)}: ${bad.reason}\n`);
          if (flags.dryRun) {
            const stored = store.keys();
            const list = experiments.map((e) => ({ key: e.key, experiment: describeExperiment(e.config), stored: stored.has(e.key) }));
            if (!jsonToStdout(flags.json)) process.stdout.write(`${list.map((l) => `${l.stored ? 'stored ' : 'to run  '} ${l.experiment}`).join('\n')}\n`);
            const written = writeJsonOutput(flags.json, jsonText({ experiments: list, invalid }));
            if (written) process.stdout.write(`JSON written to ${written}\n`);
            return;
          }
          if (!executor) {
            throw imiadError('Error', 'ERR_IMIAD_UNAVAILABLE', 'imiad grid: no experiment executor is registered in this build (registerGrid(program, executor) in lib/cli.ts); --dry-run works without one');
          }
          const interrupt = abortOnInterrupt(() => process.stderr.write('\nimiad grid: stopping after the running experiments (Ctrl-C again to quit at once)\n'));
          let bar: ReturnType<typeof progress> | undefined;
          const summary = await runGrid(experiments, store, executor, {
            concurrency: config.concurrency,
            signal: interrupt.signal,
            onUpdate: (s) => {
              bar ??= progress('grid', s.total);
              bar.update(s.done + s.failed, s.total, `(${s.running} running${s.failed ? `, ${s.failed} failed` : ''})`);
            },
            onFailed: (e, err) => process.stderr.write(`\nimiad grid: ${describeExperiment(e.config)} failed: ${err.message}\n`),
          });
          interrupt.dispose();
          bar?.done(`${summary.done} run, ${summary.skipped} already stored, ${summary.failed.length} failed${summary.aborted ? `, ${summary.notRun} not run (interrupted)` : ''}`);
          // The grid's experiments the store holds, run now or before: one table, one JSON schema.
          const wanted = new Set(experiments.map((e) => e.key));
          const results = store.rows().filter((r) => wanted.has(r.key)).map((r) => resultFromRow(r));
          if (!jsonToStdout(flags.json)) {
            if (results.length) process.stdout.write(`${formatResultsTable(results)}\n`);
            process.stdout.write(`${summary.done} experiments run, ${summary.skipped} already stored, ${summary.failed.length} failed${summary.aborted ? `, ${summary.notRun} not run (interrupted)` : ''}; store ${store.file}\n`);
          }
          const written = writeJsonOutput(flags.json, jsonText(resultsDocument('grid', results, { store: store.file, summary })));
          if (written) process.stdout.write(`JSON written to ${written}\n`);
          if (summary.failed.length || invalid.length) process.exitCode = 1;
          if (summary.aborted) process.exitCode = 130;
        } finally {
          store.close();
        }
      }),
  );
}
