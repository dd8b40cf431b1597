/**
 * `npm run bench -- coreset [--data patch,uniform] [--cases 40k,156k,exact] [--no-plain] [--no-peer] [--seed N]
 *  [--peer-threads N] [--repeats N]`
 *
 * Greedy coreset, 10 % of the rows: 40,000 and 156,800 rows x 1024 dims projected to 128, and exact mode on
 * 20,000 x 128. Each case is timed for the fast kernel, the plain loop (same addon, same distance: the selections
 * must be identical) and, when Debian's python3-torch is present, a torch PatchCore-style greedy loop
 * (bench/peers/coreset_torch.py) on the same data, passed through a temporary raw float32 file. In exact mode the
 * peer's selection is compared with ours; in projected mode the peer projects with its own random matrix, so only
 * its speed compares. The peer runs with --peer-threads torch threads (default 1: on this shared 2-core machine torch's
 * OpenMP loop was slower with 2 threads, 43 vs 7 ms per step, 8 with OMP_WAIT_POLICY=PASSIVE, which is set here), and
 * the fast kernel is also timed with one thread (IMIAD_THREADS=1) for a like-for-like column. Times are medians of
 * --repeats runs (default 5 in exact mode, 3 at 40,000 rows, 1 at 156,800 rows): the fast kernel after one untimed
 * warm-up run, the torch loop over its repeats in one process; the plain loop runs once. This 2-core virtual
 * machine's timings of one run wander by +-20 % (and a single run right after another process can be far off).
 *
 * Two kinds of data, because the triangle inequality prunes according to the data's structure:
 *  - patch: "patch-like" features, 32 clusters in a random 16-dim subspace plus small noise (x = A z + e): like CNN
 *    patch features of normal images, low intrinsic dimension.
 *  - uniform: i.i.d. uniform floats, the worst case: in 128 dims all distances are nearly equal, nothing can be
 *    skipped, and the fast kernel can only match the plain loop.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { defaultStartIndex, greedyCoreset, greedyCoresetPlain } from '../bindings/coreset';
import { cpuAddon } from '../bindings/load';
import { flag, intFlag, machineInfo, peerAvailable, printTable, randomFloats, runPeer, timedMedian, writeJson, type Row } from './common';

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

/** Index of the first selection that differs, or -1 when identical. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function same(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  return firstDifference(a, b) < 0;
}

export async function main(args: string[]): Promise<void> {
  const kinds = (flag(args, 'data', 'patch,uniform') ?? '').split(',').filter(Boolean);
  const wanted = (flag(args, 'cases', CASES.map((c) => c.name).join(',')) ?? '').split(',');
  const seed = intFlag(args, 'seed', 1, 0);
  const withPlain = !args.includes('--no-plain');
  const threads = cpuAddon<{ threadCount: () => number }>().threadCount();
  const withPeer = !args.includes('--no-peer') && peerAvailable(['torch', 'numpy']);
  const peerThreads = intFlag(args, 'peer-threads', 1, 0);
  process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
  if (!withPeer) process.stdout.write('torch peer not run (Debian python3-torch missing or --no-peer)\n');

  const rows: Row[] = [];
  const results: unknown[] = [];
  for (const c of CASES.filter((k) => wanted.includes(k.name))) {
    for (const kind of kinds) {
      process.stdout.write(`${c.name} ${kind}: generating ${c.rows} x ${c.dims} ...\n`);
      const x = kind === 'patch' ? patchLike(c.rows, c.dims, seed) : randomFloats(c.rows * c.dims, seed);
      const startIndex = defaultStartIndex(seed, c.rows);
      const opts = { dims: c.dims, count: c.count, projectionDims: c.projectionDims, seed, startIndex };
      const repeats = intFlag(args, 'repeats', c.name === 'exact' ? 5 : c.name === '40k' ? 3 : 1);
      const warmup = repeats > 1 ? 1 : 0;
      const [fast, fastMs] = await timedMedian(() => greedyCoreset(x, opts), repeats, warmup);
      process.stdout.write(`  fast ${fastMs.toFixed(0)} ms\n`);
      // The kernels read IMIAD_THREADS on every call.
      const savedThreads = process.env.IMIAD_THREADS;
      process.env.IMIAD_THREADS = '1';
      const [fast1, fast1Ms] = await timedMedian(() => greedyCoreset(x, opts), repeats, warmup);
      if (savedThreads === undefined) delete process.env.IMIAD_THREADS;
      else process.env.IMIAD_THREADS = savedThreads;
      if (!same(fast, fast1)) throw new Error('the selection changed with the thread count');
      process.stdout.write(`  fast, 1 thread ${fast1Ms.toFixed(0)} ms\n`);
      let plainMs: number | null = null;
      let samePlain: boolean | null = null;
      if (withPlain) {
        const [plain, ms] = await timedMedian(() => greedyCoresetPlain(x, opts), 1, 0);
        plainMs = ms;
        samePlain = same(fast, plain);
        process.stdout.write(`  plain ${ms.toFixed(0)} ms, same: ${samePlain}\n`);
      }
      const peers: Record<
        string,
        { ms: number; projectMs: number; same: boolean | null; firstDifference: number | null; torch: string; threads: number }
      > = {};
      if (withPeer) {
        const file = path.join(os.tmpdir(), `imiad-coreset-${process.pid}.f32`);
        fs.writeFileSync(file, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
        try {
          const forms = c.projectionDims === 0 ? ['expansion', 'difference'] : ['expansion'];
          for (const form of forms) {
            const r = runPeer<PeerResult>('coreset_torch.py', [
              '--file', file, '--rows', String(c.rows), '--dims', String(c.dims), '--count', String(c.count),
              '--start', String(startIndex), '--proj', String(c.projectionDims), '--seed', String(seed),
              '--threads', String(peerThreads), '--distance', form, '--repeats', String(form === 'expansion' ? repeats : 1),
            ]);
            peers[form] = {
              ms: r.ms,
              projectMs: r.projectMs,
              same: c.projectionDims === 0 ? same(fast, r.selected) : null,
              firstDifference: c.projectionDims === 0 ? firstDifference(fast, r.selected) : null,
              torch: r.torch,
              threads: r.threads,
            };
            process.stdout.write(
              `  torch (${form}, ${r.threads} thread(s)) ${r.ms.toFixed(0)} ms, same: ${peers[form].same}` +
                (peers[form].firstDifference !== null && peers[form].firstDifference! >= 0
                  ? ` (first difference at selection ${peers[form].firstDifference})`
                  : '') +
                '\n',
            );
          }
        } finally {
          fs.rmSync(file, { force: true });
        }
      }
      const torch = peers.expansion;
      const torchDiff = peers.difference;
      rows.push({
        case: `${c.rows}x${c.dims}${c.projectionDims ? `->${c.projectionDims}` : ''}`,
        data: kind,
        count: c.count,
        'fast ms': Math.round(fastMs),
        'fast 1T ms': Math.round(fast1Ms),
        'plain ms': plainMs === null ? null : Math.round(plainMs),
        'x plain': plainMs === null ? null : Number((plainMs / fastMs).toFixed(2)),
        'same as plain': samePlain,
        'torch ms': torch ? Math.round(torch.ms) : null,
        'x torch': torch ? Number((torch.ms / fastMs).toFixed(2)) : null,
        'x torch 1T': torch ? Number((torch.ms / fast1Ms).toFixed(2)) : null,
        'same as torch': torch ? torch.same : null,
        'torch f64 ms': torchDiff ? Math.round(torchDiff.ms) : null,
        'same as torch f64': torchDiff ? torchDiff.same : null,
      });
      results.push({ ...c, data: kind, seed, startIndex, fastMs, fastOneThreadMs: fast1Ms, plainMs, samePlain, peers });
      // Written after every case, so that a long run stopped early keeps what it measured.
      writeJson('coreset', { machine: machineInfo(threads), peerThreads, results });
    }
  }
  printTable(`Greedy coreset (10 %), ${threads} thread(s); torch peer ${peerThreads} thread(s)`, rows);
}
