/**
 * One exact k-NN case (a bank of `rows` rows, `queries` queries, k): imiad's KnnIndex.search against the plain
 * reference loop of the same addon (timed on the first few queries and scaled linearly) and, when python3-faiss is
 * found, faiss IndexFlatL2 (bench/peers/knn_faiss.py; on the GPU with --device cuda when faiss sees one), timed in
 * interleaved rounds (measureInterleaved). Every peer's indices are checked against imiad's. Used by
 * `npm run bench -- knn` (bench/knn.ts) and `imiad bench knn` (lib/bench/suite.ts).
 */
import * as fs from 'fs';
import * as path from 'path';

import type { KnnAddon } from '../../bindings/knn';
import { cpuAddon } from '../../bindings/load';
import { KnnIndex, type KnnResult } from '../../bindings/knn';
import { type Contender, type Measured, measureInterleaved, ratioSpread, runPeer, type Spread, spreadOf, timed } from './common';

/** What a faiss peer process reports. */
export interface FaissRun {
  faiss: string;
  threads: number;
  openblasCore: string;
  gpu: boolean;
  results: Array<{ rows: number; k: number; ms: number; cpuMs: number; addMs: number; indicesFile: string }>;
}

/** A faiss contender: its label, extra environment variables, and whether it searches on the GPU. */
export interface FaissPeer {
  label: string;
  env: Record<string, string>;
  gpu?: boolean;
}

/**
 * The CPU peers: faiss with OpenBLAS's own CPU detection, and with OPENBLAS_CORETYPE=SkylakeX (OpenBLAS 0.3.21 does
 * not recognise every AVX-512 CPU and falls back to SSE3 kernels).
 */
export const FAISS_CPU_PEERS: FaissPeer[] = [
  { label: 'faiss', env: {} },
  { label: 'faiss SkylakeX', env: { OPENBLAS_CORETYPE: 'SkylakeX' } },
];

export const FAISS_GPU_PEER: FaissPeer = { label: 'faiss GPU', env: {}, gpu: true };

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
export function compareIndices(ours: KnnResult, theirs: Int32Array, bank: Float32Array, queries: Float32Array, dims: number, k: number) {
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

export interface KnnTiming {
  cpuMs: number;
  indices: Int32Array | KnnResult;
}

export interface KnnCaseOptions {
  /** At least rows * dims floats: the case uses the first `rows` rows. */
  bank: Float32Array;
  queries: Float32Array;
  dims: number;
  rows: number;
  k: number;
  repeats: number;
  device: 'cpu' | 'cuda';
  /** The faiss peers to run (empty: none). */
  peers: FaissPeer[];
  /** The bank and queries as raw float32 files for the peers (written by writePeerInputs), and a scratch folder. */
  files?: { bank: string; queries: string; tmp: string };
  /** Queries of the plain reference loop (0: not run). */
  plainQueries: number;
  onRun?: (name: string, ms: number, cpuMs: number) => void;
}

export interface KnnPeerRecord {
  peer: string;
  ms: Spread;
  cpuMs: Spread;
  /** imiad / peer per round (< 1: imiad faster). */
  ratio: Spread;
  cpuRatio: Spread;
  differing: number;
  maxRelativeGap: number;
}

export interface KnnCaseResult {
  rows: number;
  queries: number;
  dims: number;
  k: number;
  device: 'cpu' | 'cuda';
  ours: Measured<KnnTiming>;
  cpuMs: Spread;
  /** The first search of a new index (packs or uploads the bank), on one query. */
  prepareMs: number;
  plain: { ms: number; queries: number; subsetMs: number; same: boolean } | null;
  peers: Array<KnnPeerRecord & { measured: Measured<KnnTiming> }>;
  peerInfo: Record<string, { faiss: string; threads: number; openblasCore: string; gpu: boolean }>;
}

/** The bank and queries as raw float32 files in dir, for the peers. */
export function writePeerInputs(bank: Float32Array, queries: Float32Array, dir: string): { bank: string; queries: string; tmp: string } {
  const files = { bank: path.join(dir, 'bank.f32'), queries: path.join(dir, 'queries.f32'), tmp: dir };
  fs.writeFileSync(files.bank, Buffer.from(bank.buffer, bank.byteOffset, bank.byteLength));
  fs.writeFileSync(files.queries, Buffer.from(queries.buffer, queries.byteOffset, queries.byteLength));
  return files;
}

export async function measureKnnCase(o: KnnCaseOptions): Promise<KnnCaseResult> {
  const { dims, rows, k } = o;
  const nq = o.queries.length / dims;
  const bankView = o.bank.subarray(0, rows * dims);
  const index = new KnnIndex(bankView, { dims, device: o.device });
  const t0 = process.hrtime.bigint();
  await index.search(o.queries.subarray(0, dims), 1);
  const prepareMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const peerInfo: KnnCaseResult['peerInfo'] = {};
  const contenders: Array<Contender<KnnTiming>> = [
    {
      name: 'imiad',
      warmup: 1,
      run: async () => {
        const c0 = process.cpuUsage();
        const r = await timed(() => index.search(o.queries, k));
        const c = process.cpuUsage(c0);
        return { ms: r.ms, result: { cpuMs: (c.user + c.system) / 1e3, indices: r.result } };
      },
    },
  ];
  if (o.files) {
    const files = o.files;
    for (const peer of o.peers) {
      contenders.push({
        name: peer.label,
        run: () => {
          // One process per round: it searches once untimed, then once timed, and writes its indices.
          const out = fs.mkdtempSync(path.join(files.tmp, 'out-'));
          try {
            const args = [files.bank, String(rows), String(dims), files.queries, String(nq), String(k), '1', out, peer.gpu ? 'gpu' : 'cpu'];
            const run = runPeer<FaissRun>('knn_faiss.py', args, peer.env);
            peerInfo[peer.label] = { faiss: run.faiss, threads: run.threads, openblasCore: run.openblasCore, gpu: run.gpu };
            const r = run.results[0];
            const buf = fs.readFileSync(r.indicesFile);
            return { ms: r.ms, result: { cpuMs: r.cpuMs, indices: new Int32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4) } };
          } finally {
            fs.rmSync(out, { recursive: true, force: true });
          }
        },
      });
    }
  }
  const [ours, ...peers] = await measureInterleaved(contenders, o.repeats, (name, r) => o.onRun?.(name, r.ms, r.result.cpuMs));
  const oursResult = ours.results[0].indices as KnnResult;
  const cpuOf = (m: Measured<KnnTiming>): Spread => spreadOf(m.results.map((r) => r.cpuMs));

  let plain: KnnCaseResult['plain'] = null;
  const plainQueries = Math.min(nq, o.plainQueries);
  if (plainQueries > 0) {
    const addon = cpuAddon<KnnAddon>();
    const p0 = process.hrtime.bigint();
    const r = await addon.knnSearchPlain(bankView, o.queries.subarray(0, plainQueries * dims), dims, k, undefined);
    const subsetMs = Number(process.hrtime.bigint() - p0) / 1e6;
    plain = { ms: (subsetMs * nq) / plainQueries, queries: plainQueries, subsetMs, same: r.indices.every((v, i) => v === oursResult.indices[i]) };
  }
  return {
    rows,
    queries: nq,
    dims,
    k,
    device: index.device,
    ours,
    cpuMs: cpuOf(ours),
    prepareMs,
    plain,
    peerInfo,
    peers: peers.map((peer) => ({
      peer: peer.name,
      ms: peer.ms,
      cpuMs: cpuOf(peer),
      ratio: ratioSpread(ours, peer),
      cpuRatio: spreadOf(ours.results.map((r, i) => r.cpuMs / peer.results[i].cpuMs)),
      ...compareIndices(oursResult, peer.results[0].indices as Int32Array, bankView, o.queries, dims, k),
      measured: peer,
    })),
  };
}
