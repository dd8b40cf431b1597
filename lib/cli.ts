#!/usr/bin/env node
/** The `imiad` command. Each subcommand lives in lib/cli/<command>.ts and registers itself here. */
import { Command, CommanderError } from 'commander';

import { registerDatasets } from './cli/datasets';
import { registerEvaluate } from './cli/evaluate';
import { registerSynth } from './cli/synth';
import { registerSplits } from './cli/splits';
import { registerGrid } from './cli/grid';
import { registerReport } from './cli/report';
import { registerRun } from './cli/run';
import { registerDemo } from './cli/demo';
import { registerPredict } from './cli/predict';
import { registerWorker } from './cli/worker';
import { registerBench } from './cli/bench';
import { createExecutor } from './runner/executor';
import { version } from './version';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('imiad')
    .description('Industrial image anomaly detection benchmark (IM-IAD) and toolkit')
    .version(version)
    .showHelpAfterError()
    .exitOverride();
  // Subcommands register here, one line each: register<Command>(program);
  registerSynth(program);
  registerDatasets(program);
  registerSplits(program);
  registerGrid(program, createExecutor());
  registerReport(program);
  registerEvaluate(program);
  registerRun(program);
  registerDemo(program);
  registerPredict(program);
  registerWorker(program);
  registerBench(program);
  return program;
}

export async function main(argv: string[] = process.argv): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed the message; help and version exit 0, usage errors exit 2.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    throw err;
  }
}

if (require.main === module) {
  void main();
}
