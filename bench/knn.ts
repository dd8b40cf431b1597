/**
 * `npm run bench -- knn [--device cpu|cuda] [--rows 16384,65536] [--queries 784] [--dims 1024] [--k 1,9]
 *  [--plain-queries 16] [--repeats 3]`
 *
 * Exact k-NN (KnnIndex.search) against the plain reference loop (knnSearchPlain, timed on the first
 * --plain-queries queries and scaled linearly to all of them) and, when Debian's python3-faiss is installed,
 * faiss IndexFlatL2 in the same run, twice: with OpenBLAS's own CPU detection, and with OPENBLAS_CORETYPE=SkylakeX
 * (OpenBLAS 0.3.21 does not recognise every AVX-512 CPU and falls back to SSE3 kernels). imiad and the peers are
 * timed in --repeats interleaved rounds (bench/common.ts measureInterleaved; a peer runs as one process per round,
 * one untimed search and one timed), and both wall and CPU time (all threads) are reported, since on a shared
 * machine CPU time is the steadier of the two. Every peer's indices are checked against imiad's. Prints a table and writes
 * bench/results/knn.json.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { KnnAddon } from '../bindings/knn';
import { cpuAddon } from '../bindings/load';
import { KnnIndex, type KnnResult } from '../lib/index';
import {
  type Contender, flag, formatSpread, intFlag, machineInfo, type Measured, measureInterleaved, peerAvailable, PEER_PYTHON,
  printTable, randomFloats, ratioSpread, type Row, type Spread, spreadOf, timed, watchLoad, writeJson,
} from './common';

interface FaissRun {
  faiss: string;
  threads: number;
  openblasCore: string;
  results: Array<{ rows: number; k: number; ms: number; cpuMs: number; addMs: number; indicesFile: string }>;
}

const PEERS: Array<[string, Record<string, string>]> = [
  ['faiss', {}],
  ['faiss SkylakeX', { OPENBLAS_CORETYPE: 'SkylakeX' }],
];

const list = (s: string): number[] => s.split(',').map((v) => Number(v));

/** faiss IndexFlatL2 through bench/peers/knn_faiss.py, with extra environment variables. */
function runFaiss(env: Record<string, string>, args: string[]): FaissRun {
  const script = path.join(__dirname, '..', '..', 'bench', 'peers', 'knn_faiss.py');
  const r = spawnSync(PEER_PYTHON, [script, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`peer knn_faiss.py failed (exit ${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as FaissRun;
}

function exactDistance2(bank: Float32Array, queries: Float32Array, dims: number, q: number, row: number): number {
  let sum = 0;
  for (let d = 0; d < dims; d++) {
    const t = queries[q * dims + d] - bank[row * dims + d];
    sum += t * t;
  }
  return sum;
}

/**
 * How a peer's indices compare with imiad's: the number of queries whose lists differ, and over those the largest
 * relative difference between the exact distances at the same rank (a near-tie ordered differently by the peer's
 * rounded distances shows as a tiny gap; a wrong neighbour as a large one).
 */
function compareIndices(ours: KnnResult, theirs: Int32Array, bank: Float32Array, queries: Float32Array, dims: number, k: number) {
  const nq = ours.indices.length / k;
  let differing = 0;
  let maxRelativeGap = 0;
  for (let q = 0; q < nq; q++) {
    let same = true;
    for (let j = 0; j < k; j++) same &&= ours.indices[q * k + j] === theirs[q * k + j];
    if (same) continue;
    differing++;
    for (let j = 0; j < k; j++) {
      const a = exactDistance2(bank, queries, dims, q, ours.indices[q * k + j]);
      const b = exactDistance2(bank, queries, dims, q, theirs[q * k + j]);
      maxRelativeGap = Math.max(maxRelativeGap, Math.abs(b - a) / Math.max(a, Number.MIN_VALUE));
    }
  }
  return { differing, maxRelativeGap };
}

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
  const addon = cpuAddon<KnnAddon & { threadCount: () => number }>();

  const bank = randomFloats(maxRows * dims, 1);
  const queries = randomFloats(nq * dims, 2);

  const withFaiss = peerAvailable(['faiss', 'numpy']);
  if (!withFaiss) process.stdout.write('python3-faiss not found at /usr/bin/python3: the faiss columns are left empty\n');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-knn-'));
  const bankFile = path.join(tmp, 'bank.f32');
  const queriesFile = path.join(tmp, 'queries.f32');

  const rows: Row[] = [];
  const records: unknown[] = [];
  const peerInfo: Record<string, { faiss: string; threads: number; openblasCore: string }> = {};
  const load = watchLoad('knn');
  try {
    if (withFaiss) {
      fs.writeFileSync(bankFile, Buffer.from(bank.buffer, bank.byteOffset, bank.byteLength));
      fs.writeFileSync(queriesFile, Buffer.from(queries.buffer, queries.byteOffset, queries.byteLength));
    }
    for (const bankRows of rowsList) {
      const bankView = bank.subarray(0, bankRows * dims);
      const index = new KnnIndex(bankView, { dims, device: 'cpu' });
      // The first search packs the bank (once per index); timed on one query.
      const t0 = process.hrtime.bigint();
      await index.search(queries.subarray(0, dims), 1);
      const prepareMs = Number(process.hrtime.bigint() - t0) / 1e6;
      for (const k of ks) {
        process.stdout.write(`${nq} x ${bankRows} x ${dims}, k = ${k}:\n`);
        type Timing = { cpuMs: number; indices?: Int32Array | KnnResult };
        const contenders: Array<Contender<Timing>> = [
          {
            name: 'imiad',
            warmup: 1,
            run: async () => {
              const c0 = process.cpuUsage();
              const r = await timed(() => index.search(queries, k));
              const c = process.cpuUsage(c0);
              return { ms: r.ms, result: { cpuMs: (c.user + c.system) / 1e3, indices: r.result } };
            },
          },
          ...(withFaiss ? PEERS : []).map(([label, env]): Contender<Timing> => ({
            name: label,
            run: () => {
              // One process per round: it searches once untimed, then once timed, and writes its indices.
              const out = fs.mkdtempSync(path.join(tmp, 'out-'));
              const run = runFaiss(env, [bankFile, String(bankRows), String(dims), queriesFile, String(nq), String(k), '1', out]);
              peerInfo[label] = { faiss: run.faiss, threads: run.threads, openblasCore: run.openblasCore };
              const r = run.results[0];
              const buf = fs.readFileSync(r.indicesFile);
              fs.rmSync(out, { recursive: true, force: true });
              return { ms: r.ms, result: { cpuMs: r.cpuMs, indices: new Int32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4) } };
            },
          })),
        ];
        const [ours, ...peers] = await measureInterleaved(contenders, repeats, (name, r) =>
          process.stdout.write(`  ${name} ${r.ms.toFixed(1)} ms (cpu ${r.result.cpuMs.toFixed(1)} ms)\n`),
        );
        const oursResult = ours.results[0].indices as KnnResult;
        const cpuOf = (m: Measured<Timing>): Spread => spreadOf(m.results.map((r) => r.cpuMs));

        const plainSubset = queries.subarray(0, plainQueries * dims);
        const p0 = process.hrtime.bigint();
        const plain = await addon.knnSearchPlain(bankView, plainSubset, dims, k, undefined);
        const plainSubsetMs = Number(process.hrtime.bigint() - p0) / 1e6;
        const plainMs = (plainSubsetMs * nq) / plainQueries;
        const plainSame = plain.indices.every((v, i) => v === oursResult.indices[i]);

        const row: Row = {
          'bank rows': bankRows,
          k,
          'imiad ms': formatSpread(ours.ms),
          'imiad cpu ms': formatSpread(cpuOf(ours)),
          [`plain ms (${plainQueries} q scaled)`]: plainMs,
          'vs plain': plainMs / ours.ms.median,
          'plain same': plainSame,
        };
        const peerRecords: unknown[] = [];
        for (const peer of peers) {
          const cmp = compareIndices(oursResult, peer.results[0].indices as Int32Array, bankView, queries, dims, k);
          const ratio = ratioSpread(ours, peer);
          const cpuRatio = spreadOf(ours.results.map((r, i) => r.cpuMs / peer.results[i].cpuMs));
          row[`${peer.name} ms`] = formatSpread(peer.ms);
          row[`imiad/${peer.name}`] = formatSpread(ratio);
          row[`imiad/${peer.name} (cpu)`] = formatSpread(cpuRatio);
          row[`${peer.name} same`] = cmp.differing === 0 ? 'yes' : `${cmp.differing} q differ (gap ${cmp.maxRelativeGap.toExponential(1)})`;
          peerRecords.push({ peer: peer.name, ms: peer.ms, cpuMs: cpuOf(peer), ratio, cpuRatio, ...cmp });
        }
        rows.push(row);
        records.push({ rows: bankRows, queries: nq, dims, k, ms: ours.ms, cpuMs: cpuOf(ours), prepareMs, plainMs, plainQueries, plainSubsetMs, plainSame, peers: peerRecords });
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
