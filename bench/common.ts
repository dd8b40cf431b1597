/**
 * Shared pieces of every benchmark: machine description, timing, a readable table, JSON output under
 * bench/results/<name>.json, and running an optional Python peer (Debian's /usr/bin/python3 with faiss, torch,
 * scikit-learn) in the same run so that ratios compare like with like.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { hostDescription, type HostDescription } from '../lib/runner/machine';

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

export type Row = Record<string, string | number | boolean | null>;

export function printTable(title: string, rows: Row[]): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const fmt = (v: Row[string]): string =>
    typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v === null ? '-' : String(v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => fmt(r[c]).length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i])).join('  ');
  process.stdout.write(`\n${title}\n${line(cols)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const r of rows) process.stdout.write(`${line(cols.map((c) => fmt(r[c])))}\n`);
}

export function writeJson(name: string, payload: unknown, outDir = path.join(process.cwd(), 'bench', 'results')): string {
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `${name}.json`);
  fs.writeFileSync(file, `${JSON.stringify(payload, null, 2)}\n`);
  process.stdout.write(`\nJSON written to ${file}\n`);
  return file;
}

export const PEER_PYTHON = process.env.IMIAD_PEER_PYTHON ?? '/usr/bin/python3';

/** True when Debian's python3 can import every module named. */
export function peerAvailable(modules: string[]): boolean {
  if (!fs.existsSync(PEER_PYTHON)) return false;
  const r = spawnSync(PEER_PYTHON, ['-c', modules.map((m) => `import ${m}`).join(';')], { stdio: 'ignore' });
  return r.status === 0;
}

/** Runs bench/peers/<script> with args and parses the JSON it prints on its last stdout line. */
export function runPeer<T>(script: string, args: string[]): T {
  const file = path.join(__dirname, '..', '..', 'bench', 'peers', script);
  const r = spawnSync(PEER_PYTHON, [file, ...args], { encoding: 'utf8', maxBuffer: 1 << 30 });
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

/** The median and the range of a set of measurements. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function spread(values: number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** `median [min-max]` with `digits` significant digits, for a table cell. */
export function formatSpread(s: Spread, digits = 3): string {
  const f = (v: number): string => v.toPrecision(digits);
  return `${f(s.median)} [${f(s.min)}-${f(s.max)}]`;
}

/** One side of an interleaved comparison: a name and one measured run. */
export interface Contender<T> {
  name: string;
  run: (repeat: number) => Promise<T> | T;
  /** CPU seconds the run used (its own processes), to estimate what other processes used meanwhile. */
  cpuSeconds?: (result: T) => number;
}

/** How busy the machine was around an interleaved comparison. */
export interface LoadReport {
  /** os.loadavg() (1, 5, 15 minutes) before the first run and after the last. */
  start: number[];
  end: number[];
  /** Cores that processes other than the runs used on average while they ran (Linux /proc/stat; null elsewhere). */
  otherCores: number | null;
  /** A line to print when the machine was not quiet (load average >= 0.5 or others used >= 0.25 cores), else null. */
  warning: string | null;
}

export interface Interleaved<T> {
  /** Each contender's results, in repeat order. */
  runs: Record<string, T[]>;
  /** The order the contenders ran in, per repeat. */
  order: string[][];
  load: LoadReport;
}

/** Busy CPU seconds of the whole machine so far (user, nice, system, irq, softirq, steal), or null off Linux. */
function machineBusySeconds(): number | null {
  try {
    const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = cpu;
    const ticks = user + nice + system + irq + softirq + (steal ?? 0);
    return ticks / 100; // USER_HZ, 100 on every Linux architecture that Node supports
  } catch {
    return null;
  }
}

/**
 * Runs every contender `repeats` times, interleaved: repeat r runs them in the order rotated by r, so each goes first
 * equally often and a drift in the machine's load hits every contender alike. Records the load average before and
 * after and, where the contenders report their CPU seconds, how many cores other processes used during the runs;
 * `load.warning` says when the machine was not quiet enough for the wall-clock ratios to mean much.
 */
export async function interleavedRepeats<T>(contenders: Contender<T>[], repeats: number): Promise<Interleaved<T>> {
  const runs: Record<string, T[]> = Object.fromEntries(contenders.map((c) => [c.name, [] as T[]]));
  const order: string[][] = [];
  const start = os.loadavg();
  const busy0 = machineBusySeconds();
  const own0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let runCpu: number | null = 0;
  for (let r = 0; r < repeats; r++) {
    const turn = contenders.map((_, i) => contenders[(i + r) % contenders.length]);
    order.push(turn.map((c) => c.name));
    for (const c of turn) {
      const result = await c.run(r);
      runs[c.name].push(result);
      runCpu = c.cpuSeconds && runCpu !== null ? runCpu + c.cpuSeconds(result) : null;
    }
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const own = process.cpuUsage(own0);
  const busy1 = machineBusySeconds();
  const end = os.loadavg();
  const otherCores =
    busy0 === null || busy1 === null || runCpu === null || wall <= 0
      ? null
      : Math.max(0, (busy1 - busy0 - runCpu - (own.user + own.system) / 1e6) / wall);
  const quiet = start[0] < 0.5 && (otherCores === null || otherCores < 0.25);
  const fmt = (l: number[]): string => l.map((v) => v.toFixed(2)).join(' ');
  const warning = quiet
    ? null
    : `WARNING: the machine was busy (load average ${fmt(start)} at the start, ${fmt(end)} at the end` +
      `${otherCores === null ? '' : `; other processes used ${otherCores.toFixed(2)} cores on average during the runs`}): wall-clock ratios are noisy`;
  return { runs, order, load: { start, end, otherCores, warning } };
}
