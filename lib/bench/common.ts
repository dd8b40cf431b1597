/**
 * Shared pieces of every benchmark (`npm run bench` in the repository and `imiad bench` in the package): machine
 * description, timing, a readable table, JSON output, and running an optional Python peer (Debian's /usr/bin/python3
 * with faiss, torch, scikit-learn; the scripts in bench/peers/, shipped with the package) in the same run so that
 * ratios compare like with like.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { packageRoot } from '../../bindings/load';
import type { TrainLayout } from '../../bindings/train/layout';
import { hostDescription, type HostDescription } from '../runner/machine';

export interface MachineInfo extends HostDescription {
  threads: number;
}

export function machineInfo(threads: number): MachineInfo {
  return { ...hostDescription(), threads };
}

/** The median (the upper one of an even count). */
export function median(values: number[]): number {
  const v = values.slice().sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
}

/** fn's last result and its median wall time in milliseconds over `repeats` runs after `warmup` runs. */
export async function timedMedian<T>(fn: () => Promise<T> | T, repeats = 3, warmup = 1): Promise<[T, number]> {
  let result = undefined as T;
  for (let i = 0; i < warmup; i++) result = await fn();
  const times: number[] = [];
  for (let i = 0; i < Math.max(1, repeats); i++) {
    const t0 = process.hrtime.bigint();
    result = await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return [result, median(times)];
}

/** Median wall time in milliseconds of `repeats` runs of fn after `warmup` runs. */
export async function timeMs(fn: () => Promise<unknown> | unknown, repeats = 3, warmup = 1): Promise<number> {
  return (await timedMedian(fn, repeats, warmup))[1];
}

// ---- Interleaved repeats ----
//
// On a shared machine the load changes within seconds, so imiad and its peer are not timed one after the other
// (all of imiad's runs, then all of the peer's) but in rounds: round r runs every contender once, in turn, the order
// reversed every other round so that no contender always follows the same neighbour. A ratio is then taken per round
// (both sides of it saw about the same machine) and reported as the median with its min-max spread.

/** One timed run: its wall time in milliseconds (as the contender measured it) and what it returned. */
export interface Run<T = unknown> {
  ms: number;
  result: T;
}

/** A contender of an interleaved measurement: a name and one run (in-process: wrap with timed(); a peer: its own time). */
export interface Contender<T = unknown> {
  name: string;
  run: () => Promise<Run<T>> | Run<T>;
  /** Untimed runs before the first round (default 0). */
  warmup?: number;
}

/** Median and min-max of repeated figures, with every figure in round order. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

export interface Measured<T = unknown> {
  name: string;
  ms: Spread;
  /** Results in round order. */
  results: T[];
}

export function spreadOf(values: number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), runs: values };
}

/** The wall time of one in-process call, as a Run. */
export async function timed<T>(fn: () => Promise<T> | T): Promise<Run<T>> {
  const t0 = process.hrtime.bigint();
  const result = await fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, result };
}

/**
 * Runs the contenders in `repeats` interleaved rounds (see above) and returns each one's times and results, in the
 * order given. `onRun` sees every timed run as it ends (for progress lines).
 */
export async function measureInterleaved<T>(
  contenders: Array<Contender<T>>,
  repeats: number,
  onRun?: (name: string, run: Run<T>, round: number) => void,
): Promise<Array<Measured<T>>> {
  const times = contenders.map(() => [] as number[]);
  const results = contenders.map(() => [] as T[]);
  for (const c of contenders) for (let i = 0; i < (c.warmup ?? 0); i++) await c.run();
  for (let round = 0; round < Math.max(1, repeats); round++) {
    const order = contenders.map((_, i) => i);
    if (round % 2 === 1) order.reverse();
    for (const i of order) {
      const r = await contenders[i].run();
      times[i].push(r.ms);
      results[i].push(r.result);
      onRun?.(contenders[i].name, r, round);
    }
  }
  return contenders.map((c, i) => ({ name: c.name, ms: spreadOf(times[i]), results: results[i] }));
}

/** slow / fast per round (how many times faster `fast` was), as a Spread; rounds missing on either side are skipped. */
export function ratioSpread(slow: Measured<unknown>, fast: Measured<unknown>): Spread {
  const n = Math.min(slow.ms.runs.length, fast.ms.runs.length);
  return spreadOf(Array.from({ length: n }, (_, r) => slow.ms.runs[r] / fast.ms.runs[r]));
}

/** "95.2 (90.1-110.3)": a median with its spread, for tables. */
export function formatSpread(s: Spread, digits = 3): string {
  const f = (v: number): string => (Math.abs(v) >= 10 ** digits ? v.toFixed(0) : v.toPrecision(digits));
  return s.runs.length > 1 && s.min !== s.max ? `${f(s.median)} (${f(s.min)}-${f(s.max)})` : f(s.median);
}

// ---- Load of the machine during a benchmark ----

export interface LoadReport {
  cores: number;
  /** os.loadavg() (1, 5 and 15 minutes) when the benchmark started and ended. */
  loadStart: number[];
  loadEnd: number[];
  /** CPU used by every other process (and taken by the hypervisor: steal) during the benchmark, in cores; null off Linux. */
  otherCores: number | null;
  seconds: number;
  busy: boolean;
}

function procStatTicks(): { busy: number; total: number } | null {
  try {
    const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - cpu[3] - cpu[4], total };
  } catch {
    return null;
  }
}

function ownTicks(): number | null {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    // Fields after "(comm)": state is field 3, utime 14, stime 15, cutime 16, cstime 17 (waited-for children: peers).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    return f[11] + f[12] + f[13] + f[14];
  } catch {
    return null;
  }
}

const fmtLoad = (l: number[]): string => l.map((v) => v.toFixed(2)).join(' / ');

/**
 * Prints the load average now and returns finish(), which prints it again with the CPU time that other processes
 * took meanwhile, and a warning line when the machine was busy (others used more than a tenth of its cores on
 * average, or the 1-minute load average was above half the cores before the benchmark started): such figures are
 * not quiet-machine figures.
 */
export function watchLoad(name: string, write: (text: string) => void = (t) => void process.stdout.write(t)): { finish: () => LoadReport } {
  const cores = os.availableParallelism();
  const loadStart = os.loadavg();
  const stat0 = procStatTicks();
  const own0 = ownTicks();
  const t0 = process.hrtime.bigint();
  write(`${name}: load average (1 / 5 / 15 min) at start ${fmtLoad(loadStart)} on ${cores} cores\n`);
  return {
    finish: () => {
      const loadEnd = os.loadavg();
      const stat1 = procStatTicks();
      const own1 = ownTicks();
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      let otherCores: number | null = null;
      if (stat0 && stat1 && own0 !== null && own1 !== null && stat1.total > stat0.total) {
        // Ticks of all cores together: the wall time in ticks is total / cores.
        const wallTicks = (stat1.total - stat0.total) / cores;
        otherCores = Math.max(0, (stat1.busy - stat0.busy - (own1 - own0)) / wallTicks);
      }
      const busy = (otherCores !== null && otherCores > 0.1 * cores) || loadStart[0] > 0.5 * cores;
      write(
        `${name}: load average at end ${fmtLoad(loadEnd)}; other processes used ${otherCores === null ? 'an unknown number of' : otherCores.toFixed(2)} cores on average over ${seconds.toFixed(0)} s\n`,
      );
      if (busy) write(`WARNING: the machine was busy during this benchmark; its figures are not quiet-machine figures\n`);
      return { cores, loadStart, loadEnd, otherCores, seconds, busy };
    },
  };
}

export type Row = Record<string, string | number | boolean | null>;

/** The rows as an aligned text table under its title (columns: the union of the rows' keys, in first-seen order). */
export function formatTable(title: string, rows: Row[]): string {
  if (rows.length === 0) return '';
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const fmt = (v: Row[string] | undefined): string =>
    typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v === null || v === undefined ? '-' : String(v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => fmt(r[c]).length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i])).join('  ');
  return [`\n${title}`, line(cols), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map((r) => line(cols.map((c) => fmt(r[c])))), ''].join('\n');
}

export function printTable(title: string, rows: Row[]): void {
  process.stdout.write(formatTable(title, rows));
}

export function writeJson(name: string, payload: unknown, outDir = path.join(process.cwd(), 'bench', 'results')): string {
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `${name}.json`);
  fs.writeFileSync(file, `${JSON.stringify(payload, null, 2)}\n`);
  process.stdout.write(`\nJSON written to ${file}\n`);
  return file;
}

/** The Python that runs the peers: $IMIAD_PEER_PYTHON (read at each call), else Debian's /usr/bin/python3. */
export function peerPython(): string {
  return process.env.IMIAD_PEER_PYTHON || '/usr/bin/python3';
}

/**
 * The environment of a ResNet-18 peer (bench/peers/layout.py) in `layout`: imiad's own for the detector
 * (bindings/train/layout.ts resnetLayout) where a bench or test compares arithmetic (loss trajectories, scores),
 * torchvision's NCHW, the official code's, where it times.
 */
export function peerLayoutEnv(layout: TrainLayout): Record<string, string> {
  return { IMIAD_PEER_LAYOUT: layout };
}

/** `--peer-layout nchw|channels-last` (default nchw: the official code's layout), the layout a timed ResNet-18 peer runs in. */
export function peerLayoutFlag(args: string[]): TrainLayout {
  const value = flag(args, 'peer-layout', 'nchw');
  if (value !== 'nchw' && value !== 'channels-last') throw new Error(`--peer-layout: expected nchw or channels-last but received ${value}`);
  return value;
}

/** The modules of the list that the peers' Python cannot import (all of them when there is no such Python). */
export function missingPeerModules(modules: string[]): string[] {
  if (!fs.existsSync(peerPython())) return modules.slice();
  const probe = `import importlib.util, json; print(json.dumps([m for m in ${JSON.stringify(modules)} if importlib.util.find_spec(m) is None]))`;
  const r = spawnSync(peerPython(), ['-c', probe], { encoding: 'utf8' });
  if (r.status !== 0) return modules.slice();
  return JSON.parse(r.stdout.trim().split('\n').pop() as string) as string[];
}

/** True when the peers' Python can import every module named. */
export function peerAvailable(modules: string[]): boolean {
  if (!fs.existsSync(peerPython())) return false;
  const r = spawnSync(peerPython(), ['-c', modules.map((m) => `import ${m}`).join(';')], { stdio: 'ignore' });
  return r.status === 0;
}

/** bench/peers/<script> of this checkout or installed package. */
export function peerScript(script: string): string {
  return path.join(packageRoot(), 'bench', 'peers', script);
}

/** Runs bench/peers/<script> with args (and extra environment variables) and parses the JSON of its last stdout line. */
export function runPeer<T>(script: string, args: string[], env: Record<string, string> = {}): T {
  const r = spawnSync(peerPython(), [peerScript(script), ...args], { encoding: 'utf8', maxBuffer: 1 << 30, env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`peer ${script} failed (exit ${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as T;
}

/** Parses `--name value` flags from a benchmark's argv. */
export function flag(args: string[], name: string, fallback?: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}

/** An integer `--name value` flag of at least `min`; anything else is an error that names the flag. */
export function intFlag(args: string[], name: string, fallback: number, min = 1): number {
  const raw = flag(args, name);
  const value = raw === undefined ? fallback : Number(raw);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new Error(`--${name}: expected an integer >= ${min} but received ${raw}`);
  }
  return value;
}

/**
 * xorshift32: uniform doubles in [0, 1) from a 32-bit state (a zero seed becomes 1). The generator of the benchmark
 * and test data; the library's own seeded choices use lib/prng.ts and lib/settings/random.ts.
 */
export function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** Deterministic floats in [-halfWidth, halfWidth) for benchmark and test data (same seed, same data). */
export function randomFloats(n: number, seed: number, halfWidth = 0.5): Float32Array {
  const out = new Float32Array(n);
  const next = xorshift32(seed);
  for (let i = 0; i < n; i++) out[i] = (next() - 0.5) * 2 * halfWidth;
  return out;
}

/** The largest relative difference of two series (loss trajectories), Infinity when their lengths differ. */
export function maxRelativeDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), 1e-12));
  return worst;
}

/** What a step-trajectory peer (bench/peers/<method>_torch.py) prints: its losses and step times. */
export interface StepPeerResult {
  losses: number[];
  stepSeconds: number[];
  loopSeconds: number;
  torch: string;
}

/** Runs `step` over the batches in order, timing each step. */
export async function timeSteps<B>(batches: B[], step: (batch: B) => Promise<number>): Promise<{ losses: number[]; stepSeconds: number[] }> {
  const losses: number[] = [];
  const stepSeconds: number[] = [];
  for (const b of batches) {
    const t = process.hrtime.bigint();
    losses.push(await step(b));
    stepSeconds.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return { losses, stepSeconds };
}

/**
 * imiad's training steps against the peer's on the same job, in `repeats` interleaved rounds (the time of a round:
 * the sum of its step times; the peer's: its training loop): both sides' measurements, the largest relative loss
 * difference of the first round and the per-round time ratio (null without a peer).
 */
export async function compareSteps(
  imiad: () => Promise<{ losses: number[]; stepSeconds: number[] }>,
  peer: (() => StepPeerResult) | null,
  repeats: number,
): Promise<{ ours: Measured<number[]>; peer: Measured<number[]> | null; rel: number | null; ratio: Spread | null }> {
  const contenders: Array<Contender<number[]>> = [
    {
      name: 'imiad',
      run: async () => {
        const r = await imiad();
        return { ms: r.stepSeconds.reduce((a, b) => a + b, 0) * 1000, result: r.losses };
      },
    },
  ];
  if (peer) {
    contenders.push({
      name: 'torch',
      run: () => {
        const p = peer();
        return { ms: p.loopSeconds * 1000, result: p.losses };
      },
    });
  }
  const measured = await measureInterleaved<number[]>(contenders, repeats, (name, run, round) => process.stdout.write(`  round ${round + 1} ${name}: ${(run.ms / 1000).toFixed(2)} s\n`));
  const [ours, theirs = null] = measured;
  return { ours, peer: theirs, rel: theirs ? maxRelativeDiff(ours.results[0], theirs.results[0]) : null, ratio: theirs ? ratioSpread(ours, theirs) : null };
}
