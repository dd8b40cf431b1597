/**
 * One greedy coreset case: imiad's fast kernel (its default thread count and, on the CPU, one thread), the plain loop
 * of the same addon (same distance: the selections must be identical), and the torch peers of
 * bench/peers/coreset_torch.py ("strong": row norms once, minimum in place; "reference": patchcore-inspection's
 * sampler step as written there), timed in interleaved rounds. Exact cases (no projection) also check imiad's
 * selection against a float64 torch loop. The data generators (patch-like, Gaussian, uniform) live here too. Used by
 * `npm run bench -- coreset` (bench/coreset.ts) and `imiad bench coreset` (lib/bench/suite.ts).
 */
import * as fs from 'fs';

import { defaultStartIndex, greedyCoreset, greedyCoresetPlain } from '../../bindings/coreset';
import { type Contender, type Measured, measureInterleaved, randomFloats, runPeer, timed, xorshift32 } from './common';

export const CORESET_DATA = ['patch', 'gaussian', 'uniform'] as const;
export type CoresetData = (typeof CORESET_DATA)[number];

/** Patch-like features: 32 clusters in a random 16-dim subspace of R^dims, plus noise. Deterministic per seed. */
export function patchLike(rows: number, dims: number, seed: number): Float32Array {
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

/** i.i.d. standard normal floats (Box-Muller over xorshift32). Deterministic per seed. */
export function gaussian(n: number, seed: number): Float32Array {
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

export function coresetData(kind: string, rows: number, dims: number, seed: number): Float32Array {
  if (kind === 'patch') return patchLike(rows, dims, seed);
  if (kind === 'gaussian') return gaussian(rows * dims, seed);
  if (kind === 'uniform') return randomFloats(rows * dims, seed);
  throw new Error(`--data: expected patch, gaussian or uniform but received ${kind}`);
}

/** Index of the first selection that differs, or -1 when identical. */
export function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** fn run with IMIAD_THREADS=1 (the kernels read it on every call). */
export async function withOneThread<T>(fn: () => Promise<T>): Promise<T> {
  const saved = process.env.IMIAD_THREADS;
  process.env.IMIAD_THREADS = '1';
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.IMIAD_THREADS;
    else process.env.IMIAD_THREADS = saved;
  }
}

/** What one coreset_torch.py process reports. */
export interface CoresetPeerRun {
  ms: number;
  projectMs: number;
  selectMs: number;
  threads: number;
  torch: string;
  selected: number[];
}

export type CoresetPeerForm = 'strong' | 'reference';
const PEER_DISTANCE: Record<CoresetPeerForm | 'float64', string> = { strong: 'expansion', reference: 'reference', float64: 'difference' };

export interface CoresetCaseOptions {
  x: Float32Array;
  rows: number;
  dims: number;
  count: number;
  /** 0: exact; > 0: a seeded random projection to this many dims first (as PatchCore runs it). */
  projectionDims: number;
  seed: number;
  repeats: number;
  device: 'cpu' | 'cuda';
  /** Also time imiad with one thread (CPU only). */
  oneThread: boolean;
  /** Also run the plain loop once, outside the rounds, and check the selection is the same. */
  plain: boolean;
  /** Exact cases with peers: also run the float64 torch loop once to check imiad selects exactly the greedy rows. */
  checkFloat64: boolean;
  /** The torch peers to run, the raw float32 file of x they read, their thread count and device. */
  peers: CoresetPeerForm[];
  peerFile?: string;
  peerThreads: number;
  peerDevice: 'cpu' | 'cuda';
  onRun?: (name: string, ms: number) => void;
}

export interface CoresetCaseResult {
  startIndex: number;
  imiad: Measured<ArrayLike<number>>;
  imiadOneThread: Measured<ArrayLike<number>> | null;
  peers: Partial<Record<CoresetPeerForm, Measured<ArrayLike<number>>>>;
  selection: ArrayLike<number>;
  plainMs: number | null;
  samePlain: boolean | null;
  /** Exact cases with peers: where each torch form's selection (and the float64 loop's) first differs from imiad's (-1: never). */
  firstDifference: Record<string, number>;
}

export async function measureCoresetCase(o: CoresetCaseOptions): Promise<CoresetCaseResult> {
  const startIndex = defaultStartIndex(o.seed, o.rows);
  const opts = { dims: o.dims, count: o.count, projectionDims: o.projectionDims, seed: o.seed, startIndex, device: o.device };
  if (o.peers.length > 0 && o.peerFile) fs.writeFileSync(o.peerFile, new Uint8Array(o.x.buffer, o.x.byteOffset, o.x.byteLength));
  const peer = (form: CoresetPeerForm | 'float64'): CoresetPeerRun =>
    runPeer<CoresetPeerRun>('coreset_torch.py', [
      '--file', o.peerFile as string, '--rows', String(o.rows), '--dims', String(o.dims), '--count', String(o.count),
      '--start', String(startIndex), '--proj', String(o.projectionDims), '--seed', String(o.seed),
      '--threads', String(o.peerThreads), '--distance', PEER_DISTANCE[form], '--repeats', '1', '--device', o.peerDevice,
    ]);
  const contenders: Array<Contender<ArrayLike<number>>> = [{ name: 'imiad', run: () => timed(() => greedyCoreset(o.x, opts)), warmup: 1 }];
  if (o.oneThread) contenders.push({ name: 'imiad 1T', run: () => timed(() => withOneThread(() => greedyCoreset(o.x, opts))), warmup: 1 });
  const peerForms = o.peerFile ? o.peers : [];
  for (const form of peerForms) {
    contenders.push({
      name: `torch ${form}`,
      run: () => {
        const r = peer(form);
        return { ms: r.ms, result: r.selected };
      },
    });
  }
  const measured = await measureInterleaved(contenders, o.repeats, (name, r) => o.onRun?.(name, r.ms));
  const fast = measured[0];
  const fast1 = o.oneThread ? measured[1] : null;
  const peers: CoresetCaseResult['peers'] = {};
  peerForms.forEach((form, i) => (peers[form] = measured[(o.oneThread ? 2 : 1) + i]));
  const selection = fast.results[0];
  for (const m of [fast, fast1]) {
    if (m && !m.results.every((r) => firstDifference(r, selection) < 0)) throw new Error(`${m.name}: the selection changed between runs or with the thread count`);
  }
  let plainMs: number | null = null;
  let samePlain: boolean | null = null;
  if (o.plain) {
    const r = await timed(() => greedyCoresetPlain(o.x, { ...opts, device: 'cpu' }));
    plainMs = r.ms;
    samePlain = firstDifference(selection, r.result) < 0;
  }
  const firstDiff: Record<string, number> = {};
  if (peerForms.length > 0 && o.projectionDims === 0) {
    if (o.checkFloat64) firstDiff.float64 = firstDifference(selection, peer('float64').selected);
    for (const form of peerForms) firstDiff[form] = firstDifference(selection, peers[form]!.results[0]);
  }
  return { startIndex, imiad: fast, imiadOneThread: fast1, peers, selection, plainMs, samePlain, firstDifference: firstDiff };
}
