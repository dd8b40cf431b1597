/** The benchmarks' shared helpers live in lib/bench/common.ts (shipped: `imiad bench` uses them too). */
export * from '../lib/bench/common';

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { compareSteps, formatSpread, intFlag, machineInfo, printTable, spreadOf, type StepPeerResult, watchLoad, writeJson } from '../lib/bench/common';

/** The flags every step-comparison bench takes (`--steps --size --batch --threads --repeats`). */
export interface StepBenchFlags {
  steps: number;
  size: number;
  batch: number;
  threads: number;
  repeats: number;
}

/**
 * A bench that trains imiad's model and its PyTorch peer for the same steps on the same batches (DRAEM, PRN): skips
 * without the training addon, reads the common flags (`size` a multiple of `sizeMultiple`, at least that), writes the
 * job into a temporary folder, times both sides interleaved (compareSteps), prints one table row and writes
 * bench/results/<name>.json with `extra` beside the flags.
 */
export async function stepBench<J>(
  args: string[],
  o: {
    name: string;
    sizeMultiple: number;
    title: (f: StepBenchFlags) => string;
    /** Writes the job into `dir`; the method's own flags are read here (throwing on bad values). */
    write: (dir: string, f: StepBenchFlags) => Promise<J>;
    ours: (job: J) => Promise<{ losses: number[]; stepSeconds: number[] }>;
    peer: ((job: J) => StepPeerResult) | null;
    extra: Record<string, unknown>;
  },
): Promise<void> {
  if (!trainingAvailable()) {
    process.stdout.write(`${o.name} bench skipped: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
    return;
  }
  const f: StepBenchFlags = {
    steps: intFlag(args, 'steps', 20),
    size: intFlag(args, 'size', 64, o.sizeMultiple),
    batch: intFlag(args, 'batch', 8),
    threads: intFlag(args, 'threads', 1),
    repeats: intFlag(args, 'repeats', 3),
  };
  if (f.size % o.sizeMultiple !== 0) throw new Error(`Expected --size to be a multiple of ${o.sizeMultiple} but received ${f.size}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `imiad-bench-${o.name}-`));
  const load = watchLoad(`${o.name} bench`);
  try {
    const job = await o.write(dir, f);
    const peer = o.peer;
    const { ours, peer: theirs, rel, ratio } = await compareSteps(() => o.ours(job), peer ? () => peer(job) : null, f.repeats);
    const report = load.finish();
    printTable(o.title(f), [
      {
        method: o.name,
        'imiad s/epoch': formatSpread(spreadOf(ours.ms.runs.map((v) => v / 1000))),
        'torch s/epoch': theirs ? formatSpread(spreadOf(theirs.ms.runs.map((v) => v / 1000))) : '-',
        'time ratio': ratio ? formatSpread(ratio) : '-',
        'max rel loss diff': rel === null ? '-' : rel.toExponential(2),
        target: '<= 0.9x, 1e-4',
        busy: report.busy,
      },
    ]);
    writeJson(o.name, { machine: machineInfo(f.threads), load: report, ...f, ...o.extra, imiad: ours, peer: theirs ?? null, maxRelativeLossDiff: rel, timeRatio: ratio });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
