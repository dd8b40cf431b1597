/**
 * `npm run bench -- knn [--device cpu|cuda] [--rows 16384,65536] [--queries 784] [--dims 1024] [--k 1,9]
 *  [--plain-queries 16] [--repeats 3]`
 *
 * Exact k-NN (KnnIndex.search) against the plain reference loop (knnSearchPlain, timed on the first
 * --plain-queries queries and scaled linearly to all of them) and, when Debian's python3-faiss is installed,
 * faiss IndexFlatL2 in the same run, twice: with OpenBLAS's own CPU detection, and with OPENBLAS_CORETYPE=SkylakeX
 * (OpenBLAS 0.3.21 does not recognise every AVX-512 CPU and falls back to SSE3 kernels). imiad and the peers are
 * timed in --repeats interleaved rounds (lib/bench/knn.ts measureKnnCase, the case `imiad bench knn` runs too; a peer runs as one process per round,
 * one untimed search and one timed), and both wall and CPU time (all threads) are reported, since on a shared
 * machine CPU time is the steadier of the two. Every peer's indices are checked against imiad's. Prints a table and writes
 * bench/results/knn.json.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { cpuAddon } from '../bindings/load';
import { FAISS_CPU_PEERS, measureKnnCase, writePeerInputs } from '../lib/bench/knn';
import { flag, formatSpread, intFlag, machineInfo, peerAvailable, printTable, randomFloats, type Row, watchLoad, writeJson } from './common';

const list = (s: string): number[] => s.split(',').map((v) => Number(v));

export async function main(args: string[]): Promise<void> {
  const device = flag(args, 'device', 'cpu') as string;
  // --device cuda: the GPU benchmark at the CUDA issue's shapes (bench/knn_cuda.ts; exits 0 without a GPU).
  if (device === 'cuda') return (await import('./knn_cuda')).main(args.filter((a, i) => a !== '--device' && args[i - 1] !== '--device'));
  if (device !== 'cpu') throw new Error(`--device ${device}: expected --device cpu or --device cuda`);
  const rowsList = list(flag(args, 'rows', '16384,65536') as string);
  const nq = intFlag(args, 'queries', 784);
  const dims = intFlag(args, 'dims', 1024);
  const ks = list(flag(args, 'k', '1,9') as string);
  const plainQueries = Math.min(nq, intFlag(args, 'plain-queries', 16, 0));
  const repeats = intFlag(args, 'repeats', 3);
  const maxRows = Math.max(...rowsList);
  const addon = cpuAddon<{ knnKernel: string; threadCount: () => number }>();

  const bank = randomFloats(maxRows * dims, 1);
  const queries = randomFloats(nq * dims, 2);

  const withFaiss = peerAvailable(['faiss', 'numpy']);
  if (!withFaiss) process.stdout.write('python3-faiss not found at /usr/bin/python3: the faiss columns are left empty\n');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-knn-'));

  const rows: Row[] = [];
  const records: unknown[] = [];
  const peerInfo: Record<string, unknown> = {};
  const load = watchLoad('knn');
  try {
    const files = withFaiss ? writePeerInputs(bank, queries, tmp) : undefined;
    for (const bankRows of rowsList) {
      for (const k of ks) {
        process.stdout.write(`${nq} x ${bankRows} x ${dims}, k = ${k}:\n`);
        const r = await measureKnnCase({
          bank, queries, dims, rows: bankRows, k, repeats, device: 'cpu', peers: withFaiss ? FAISS_CPU_PEERS : [], files, plainQueries,
          onRun: (name, ms, cpuMs) => process.stdout.write(`  ${name} ${ms.toFixed(1)} ms (cpu ${cpuMs.toFixed(1)} ms)\n`),
        });
        Object.assign(peerInfo, r.peerInfo);
        const row: Row = {
          'bank rows': bankRows,
          k,
          'imiad ms': formatSpread(r.ours.ms),
          'imiad cpu ms': formatSpread(r.cpuMs),
          [`plain ms (${plainQueries} q scaled)`]: r.plain?.ms ?? null,
          'vs plain': r.plain ? r.plain.ms / r.ours.ms.median : null,
          'plain same': r.plain?.same ?? null,
        };
        for (const peer of r.peers) {
          row[`${peer.peer} ms`] = formatSpread(peer.ms);
          row[`imiad/${peer.peer}`] = formatSpread(peer.ratio);
          row[`imiad/${peer.peer} (cpu)`] = formatSpread(peer.cpuRatio);
          row[`${peer.peer} same`] = peer.differing === 0 ? 'yes' : `${peer.differing} q differ (gap ${peer.maxRelativeGap.toExponential(1)})`;
        }
        rows.push(row);
        records.push({
          rows: bankRows, queries: nq, dims, k, ms: r.ours.ms, cpuMs: r.cpuMs, prepareMs: r.prepareMs, plainMs: r.plain?.ms ?? null, plainQueries,
          plainSubsetMs: r.plain?.subsetMs ?? null, plainSame: r.plain?.same ?? null, peers: r.peers.map(({ measured: _, ...p }) => p),
        });
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  printTable(
    `Exact k-NN, ${nq} queries x ${dims} dims (${addon.knnKernel} kernel, ${addon.threadCount()} threads; median (min-max) of ${repeats} interleaved rounds; imiad/peer < 1: imiad faster; cpu = all threads)`,
    rows,
  );
  writeJson('knn', { machine: machineInfo(addon.threadCount()), device, kernel: addon.knnKernel, repeats, peers: peerInfo, load: load.finish(), results: records });
}
