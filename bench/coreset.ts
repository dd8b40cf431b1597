/**
 * `npm run bench -- coreset [--data patch,gaussian,uniform] [--cases exact,40k,156k] [--repeats 3] [--no-plain]
 *  [--no-peer] [--seed N] [--peer-threads N]`
 *
 * Greedy coreset, 10 % of the rows: exact mode on 20,000 x 128, and 40,000 (or, with --cases 156k, 156,800) rows x
 * 1024 dims projected to 128 as PatchCore runs it. Default: --cases exact,40k --data patch,gaussian.
 *
 * Contenders, timed in --repeats interleaved rounds (lib/bench/coreset.ts measureCoresetCase, the case `imiad bench
 * coreset` runs too; measureInterleaved: every round runs each once,
 * medians and min-max of the rounds, ratios taken per round):
 *  - imiad's fast kernel with its default thread count, and with one thread (IMIAD_THREADS=1), one warm-up run each;
 *  - two torch peers (bench/peers/coreset_torch.py, Debian's python3-torch, one process per run, the data passed
 *    through a raw float32 file), both with --peer-threads torch threads (default 1, OMP_WAIT_POLICY=PASSIVE: on
 *    this shared 2-core machine torch's OpenMP loop was slower with 2 threads):
 *    "strong": the greedy loop with the row norms computed once and the minimum updated in place;
 *    "reference": the step of patchcore-inspection's sampler as written there (row norms recomputed every step, the
 *    running minimum concatenated with the new column and reduced by torch.min).
 * The plain loop of the same addon (same distance: the selections must be identical) runs once, outside the rounds,
 * and in exact mode a float64 torch loop (--distance difference) runs once to check that imiad selects exactly the
 * greedy rows. In projected mode the peers project with their own random matrix, so only their speed compares.
 *
 * Three kinds of data, because the triangle inequality prunes according to the data's structure:
 *  - patch: "patch-like" features, 32 clusters in a random 16-dim subspace plus small noise (x = A z + e): like CNN
 *    patch features of normal images, low intrinsic dimension.
 *  - gaussian: i.i.d. standard normal floats, no structure.
 *  - uniform: i.i.d. uniform floats, the worst case: in 128 dims all distances are nearly equal, nothing can be
 *    skipped, and the fast kernel can only match the plain loop.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { cpuAddon } from '../bindings/load';
import { coresetData, measureCoresetCase } from '../lib/bench/coreset';
import { flag, formatSpread, intFlag, machineInfo, peerAvailable, printTable, ratioSpread, type Row, watchLoad, writeJson } from './common';

interface Case {
  name: string;
  rows: number;
  dims: number;
  projectionDims: number;
  count: number;
}

const CASES: Case[] = [
  { name: '40k', rows: 40000, dims: 1024, projectionDims: 128, count: 4000 },
  { name: '156k', rows: 156800, dims: 1024, projectionDims: 128, count: 15680 },
  { name: 'exact', rows: 20000, dims: 128, projectionDims: 0, count: 2000 },
];

export async function main(args: string[]): Promise<void> {
  const kinds = (flag(args, 'data', 'patch,gaussian') ?? '').split(',').filter(Boolean);
  const wanted = (flag(args, 'cases', 'exact,40k') ?? '').split(',');
  const seed = intFlag(args, 'seed', 1, 0);
  const repeats = intFlag(args, 'repeats', 3);
  const withPlain = !args.includes('--no-plain');
  const threads = cpuAddon<{ threadCount: () => number }>().threadCount();
  const withPeer = !args.includes('--no-peer') && peerAvailable(['torch', 'numpy']);
  const peerThreads = intFlag(args, 'peer-threads', 1, 0);
  process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
  const load = watchLoad('coreset');
  if (!withPeer) process.stdout.write('torch peers not run (Debian python3-torch missing or --no-peer)\n');

  const rows: Row[] = [];
  const results: unknown[] = [];
  const file = path.join(os.tmpdir(), `imiad-coreset-${process.pid}.f32`);
  try {
    for (const c of CASES.filter((k) => wanted.includes(k.name))) {
      for (const kind of kinds) {
        process.stdout.write(`${c.name} ${kind}: generating ${c.rows} x ${c.dims} ...\n`);
        const x = coresetData(kind, c.rows, c.dims, seed);
        const r = await measureCoresetCase({
          x, rows: c.rows, dims: c.dims, count: c.count, projectionDims: c.projectionDims, seed, repeats, device: 'cpu', oneThread: true,
          plain: withPlain, checkFloat64: true, peers: withPeer ? ['strong', 'reference'] : [], peerFile: file, peerThreads, peerDevice: 'cpu',
          onRun: (name, ms) => process.stdout.write(`  ${name} ${ms.toFixed(0)} ms\n`),
        });
        const fast = r.imiad;
        const fast1 = r.imiadOneThread!;
        const { strong, reference } = r.peers;
        if (r.samePlain !== null) process.stdout.write(`  plain ${r.plainMs!.toFixed(0)} ms, same: ${r.samePlain}\n`);
        const firstDiff = r.firstDifference;
        for (const [k, v] of Object.entries(firstDiff)) {
          process.stdout.write(`  torch ${k}: ${v === -1 ? 'same selection' : `first difference at selection ${v}`}\n`);
        }
        const strongRatio = strong ? ratioSpread(strong, fast) : null;
        const referenceRatio = reference ? ratioSpread(reference, fast) : null;
        rows.push({
          case: `${c.rows}x${c.dims}${c.projectionDims ? `->${c.projectionDims}` : ''}`,
          data: kind,
          'imiad ms': formatSpread(fast.ms),
          'imiad 1T ms': formatSpread(fast1.ms),
          'plain ms': r.plainMs === null ? null : Math.round(r.plainMs),
          'same as plain': r.samePlain,
          'strong ms': strong ? formatSpread(strong.ms) : null,
          'x strong': strongRatio ? formatSpread(strongRatio) : null,
          'x strong 1T': strong ? formatSpread(ratioSpread(strong, fast1)) : null,
          'reference ms': reference ? formatSpread(reference.ms) : null,
          'x reference': referenceRatio ? formatSpread(referenceRatio) : null,
          'x reference 1T': reference ? formatSpread(ratioSpread(reference, fast1)) : null,
          'same as f64': firstDiff.float64 === undefined ? null : firstDiff.float64 === -1 ? 'yes' : `from ${firstDiff.float64}`,
        });
        results.push({
          ...c,
          data: kind,
          seed,
          startIndex: r.startIndex,
          imiad: fast.ms,
          imiadOneThread: fast1.ms,
          plainMs: r.plainMs,
          samePlain: r.samePlain,
          strong: strong ? { ms: strong.ms, ratio: strongRatio, ratioOneThread: ratioSpread(strong, fast1), targetMet: strongRatio!.median >= 5 } : null,
          reference: reference
            ? { ms: reference.ms, ratio: referenceRatio, ratioOneThread: ratioSpread(reference, fast1), targetMet: referenceRatio!.median >= 10 }
            : null,
          firstDifference: firstDiff,
        });
        // Written after every case, so that a long run stopped early keeps what it measured.
        writeJson('coreset', { machine: machineInfo(threads), peerThreads, repeats, results });
      }
    }
  } finally {
    fs.rmSync(file, { force: true });
  }
  printTable(
    `Greedy coreset (10 %), imiad ${threads} thread(s) and 1 (1T), torch peers ${peerThreads} thread(s): median (min-max) of ${repeats} interleaved rounds; targets x strong >= 5, x reference >= 10`,
    rows,
  );
  writeJson('coreset', { machine: machineInfo(threads), peerThreads, repeats, load: load.finish(), results });
}
