/**
 * `npm run bench -- coreset [--data patch,gaussian,uniform] [--cases exact,40k,156k] [--repeats 3] [--no-plain]
 *  [--no-peer] [--seed N] [--peer-threads N]`
 *
 * Greedy coreset, 10 % of the rows: exact mode on 20,000 x 128, and 40,000 (or, with --cases 156k, 156,800) rows x
 * 1024 dims projected to 128 as PatchCore runs it. Default: --cases exact,40k --data patch,gaussian.
 *
 * Contenders, timed in --repeats interleaved rounds (bench/common.ts measureInterleaved: every round runs each once,
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

import { defaultStartIndex, greedyCoreset, greedyCoresetPlain } from '../bindings/coreset';
import { cpuAddon } from '../bindings/load';
import {
  type Contender, flag, formatSpread, intFlag, machineInfo, measureInterleaved, peerAvailable, printTable, randomFloats,
  ratioSpread, runPeer, timed, watchLoad, writeJson, xorshift32, type Row,
} from './common';

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

/** Patch-like features: 32 clusters in a random 16-dim subspace of R^dims, plus noise. Deterministic per seed. */
function patchLike(rows: number, dims: number, seed: number): Float32Array {
  const latent = 16;
  const clusters = 32;
  const mixing = randomFloats(dims * latent, seed);
  const centres = randomFloats(clusters * latent, seed + 1);
  const spread = randomFloats(rows * latent, seed + 2);
  const noise = randomFloats(rows * dims, seed + 3);
  const out = new Float32Array(rows * dims);
  const z = new Float64Array(latent);
  for (let i = 0; i < rows; i++) {
    const k = Math.floor((spread[i * latent] + 0.5) * clusters) % clusters;
    for (let q = 0; q < latent; q++) z[q] = centres[k * latent + q] * 6 + spread[i * latent + q];
    for (let d = 0; d < dims; d++) {
      let s = 0;
      for (let q = 0; q < latent; q++) s += mixing[d * latent + q] * z[q];
      out[i * dims + d] = s + noise[i * dims + d] * 0.1;
    }
  }
  return out;
}

interface PeerResult {
  ms: number;
  projectMs: number;
  selectMs: number;
  threads: number;
  torch: string;
  selected: number[];
}

/** i.i.d. standard normal floats (Box-Muller over xorshift32). Deterministic per seed. */
function gaussian(n: number, seed: number): Float32Array {
  const next = xorshift32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next()));
    const t = 2 * Math.PI * next();
    out[i] = r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

function makeData(kind: string, rows: number, dims: number, seed: number): Float32Array {
  if (kind === 'patch') return patchLike(rows, dims, seed);
  if (kind === 'gaussian') return gaussian(rows * dims, seed);
  if (kind === 'uniform') return randomFloats(rows * dims, seed);
  throw new Error(`--data: expected patch, gaussian or uniform but received ${kind}`);
}

/** Index of the first selection that differs, or -1 when identical. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function same(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  return firstDifference(a, b) < 0;
}

/** Runs greedyCoreset with IMIAD_THREADS=1 (the kernels read it on every call). */
async function oneThread(x: Float32Array, opts: Parameters<typeof greedyCoreset>[1]): Promise<Uint32Array> {
  const saved = process.env.IMIAD_THREADS;
  process.env.IMIAD_THREADS = '1';
  try {
    return await greedyCoreset(x, opts);
  } finally {
    if (saved === undefined) delete process.env.IMIAD_THREADS;
    else process.env.IMIAD_THREADS = saved;
  }
}

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
        const x = makeData(kind, c.rows, c.dims, seed);
        const startIndex = defaultStartIndex(seed, c.rows);
        const opts = { dims: c.dims, count: c.count, projectionDims: c.projectionDims, seed, startIndex };
        if (withPeer) fs.writeFileSync(file, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
        const peer = (form: string): PeerResult =>
          runPeer<PeerResult>('coreset_torch.py', [
            '--file', file, '--rows', String(c.rows), '--dims', String(c.dims), '--count', String(c.count),
            '--start', String(startIndex), '--proj', String(c.projectionDims), '--seed', String(seed),
            '--threads', String(peerThreads), '--distance', form, '--repeats', '1',
          ]);
        const torch = (name: string, form: string): Contender<ArrayLike<number>> => ({
          name,
          run: () => {
            const r = peer(form);
            return { ms: r.ms, result: r.selected };
          },
        });
        const contenders: Array<Contender<ArrayLike<number>>> = [
          { name: 'imiad', run: () => timed(() => greedyCoreset(x, opts)), warmup: 1 },
          { name: 'imiad 1T', run: () => timed(() => oneThread(x, opts)), warmup: 1 },
          ...(withPeer ? [torch('torch strong', 'expansion'), torch('torch reference', 'reference')] : []),
        ];
        const [fast, fast1, strong, reference] = await measureInterleaved(contenders, repeats, (name, r) =>
          process.stdout.write(`  ${name} ${r.ms.toFixed(0)} ms\n`),
        );
        const selection = fast.results[0];
        for (const m of [fast, fast1]) {
          if (!m.results.every((r) => same(r, selection))) throw new Error(`${m.name}: the selection changed between runs or with the thread count`);
        }
        let plainMs: number | null = null;
        let samePlain: boolean | null = null;
        if (withPlain) {
          const r = await timed(() => greedyCoresetPlain(x, opts));
          plainMs = r.ms;
          samePlain = same(selection, r.result);
          process.stdout.write(`  plain ${r.ms.toFixed(0)} ms, same: ${samePlain}\n`);
        }
        // Exact mode: where each torch form's selection, and the float64 greedy loop's, first differs from imiad's.
        const firstDiff: Record<string, number> = {};
        if (withPeer && c.projectionDims === 0) {
          firstDiff.float64 = firstDifference(selection, peer('difference').selected);
          firstDiff.strong = firstDifference(selection, strong.results[0]);
          firstDiff.reference = firstDifference(selection, reference.results[0]);
          for (const [k, v] of Object.entries(firstDiff)) {
            process.stdout.write(`  torch ${k}: ${v === -1 ? 'same selection' : `first difference at selection ${v}`}\n`);
          }
        }
        const strongRatio = strong ? ratioSpread(strong, fast) : null;
        const referenceRatio = reference ? ratioSpread(reference, fast) : null;
        rows.push({
          case: `${c.rows}x${c.dims}${c.projectionDims ? `->${c.projectionDims}` : ''}`,
          data: kind,
          'imiad ms': formatSpread(fast.ms),
          'imiad 1T ms': formatSpread(fast1.ms),
          'plain ms': plainMs === null ? null : Math.round(plainMs),
          'same as plain': samePlain,
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
          startIndex,
          imiad: fast.ms,
          imiadOneThread: fast1.ms,
          plainMs,
          samePlain,
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
