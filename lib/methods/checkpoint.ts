/**
 * One checkpoint format for every detector (`imiad run --save/--load`): trained weights (STPM, RD4AD), memory banks
 * (PatchCore, SPADE) and statistics (PaDiM, DNE) alike.
 *
 * Layout (little-endian): magic `IMIADCKP` (8 bytes), format version (u32), header length (u32), the header as
 * UTF-8 JSON { method, params, config, arrays: [{ name, dtype, length, offset }], run?, decision? }, zero padding to 8
 * bytes, the arrays (each at its offset from the payload start, 8-byte aligned), then the SHA-256 of everything before
 * it. Files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint behind.
 * `run` (optional) says which experiment fitted the detector (dataset, category, setting, seed, continual task):
 * `imiad run --load` checks it against the command; checkpoints without it are taken as vanilla runs.
 * `decision` (optional, lib/metrics/threshold.ts) is the decision threshold `imiad predict` applies; checkpoints
 * written before it existed load without one.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

import { imiadError, type ImiadError } from '../../bindings/errors';
import type { GaussianState } from '../../bindings/gaussian';
import type { TrainModel } from '../../bindings/train/train';
import type { DecisionThreshold } from '../metrics/threshold';
import type { DetectorState, StateArray } from './types';

export const CHECKPOINT_MAGIC = 'IMIADCKP';
export const CHECKPOINT_VERSION = 1;

type Dtype = 'float32' | 'float64' | 'int32';

interface ArrayEntry {
  name: string;
  dtype: Dtype;
  length: number;
  offset: number;
}

interface Header {
  method: string;
  params: Record<string, unknown>;
  config: Record<string, unknown>;
  arrays: ArrayEntry[];
  run?: CheckpointRun;
  decision?: DecisionThreshold;
}

/** The experiment a checkpoint's detector was fitted in (written by the grid's executor, `imiad run --save`). */
export interface CheckpointRun {
  dataset: string;
  /** The category; continual: the tasks joined by '+', in learning order. */
  category: string;
  /** The canonical setting spec (lib/settings settingSpec). */
  setting: { name: string; [option: string]: unknown };
  seed: number;
  /** Continual: the detector after learning task `index` (0-based) of `count`, whose category is `category`. */
  task?: { index: number; count: number; category: string };
}

export interface Checkpoint {
  method: string;
  /** The detector's constructor parameters (JSON). */
  params: Record<string, unknown>;
  state: DetectorState;
  run?: CheckpointRun;
  /** The decision threshold chosen when the detector was saved (lib/metrics/threshold.ts). */
  decision?: DecisionThreshold;
}

function checkpointError(file: string, reason: string): ImiadError {
  return imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Checkpoint ${file}: ${reason}`);
}

function dtypeOf(a: StateArray): Dtype {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  throw new TypeError('Expected Float32Array, Float64Array or Int32Array');
}

const align8 = (n: number): number => (n + 7) & ~7;

/** The checkpoint's bytes. */
export function encodeCheckpoint(c: Checkpoint): Buffer {
  const entries: ArrayEntry[] = [];
  let offset = 0;
  for (const [name, a] of Object.entries(c.state.arrays)) {
    entries.push({ name, dtype: dtypeOf(a), length: a.length, offset });
    offset = align8(offset + a.byteLength);
  }
  const header: Header = { method: c.method, params: c.params, config: c.state.config, arrays: entries, ...(c.run ? { run: c.run } : {}), ...(c.decision ? { decision: c.decision } : {}) };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const payloadStart = align8(16 + json.length);
  const buf = Buffer.alloc(payloadStart + offset + 32);
  buf.write(CHECKPOINT_MAGIC, 0, 'latin1');
  buf.writeUInt32LE(CHECKPOINT_VERSION, 8);
  buf.writeUInt32LE(json.length, 12);
  json.copy(buf, 16);
  for (const e of entries) {
    const a = c.state.arrays[e.name];
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).copy(buf, payloadStart + e.offset);
  }
  createHash('sha256').update(buf.subarray(0, buf.length - 32)).digest().copy(buf, buf.length - 32);
  return buf;
}

/**
 * The header of checkpoint bytes `b` (at least the first 16 + header-length bytes of a file of `size` bytes); with
 * `json` false only the magic and the version are checked.
 */
function parseHeader(b: Buffer, size: number, file: string): Header;
function parseHeader(b: Buffer, size: number, file: string, json: false): void;
function parseHeader(b: Buffer, size: number, file: string, json = true): Header | void {
  if (size < 48 || b.length < 16 || b.toString('latin1', 0, 8) !== CHECKPOINT_MAGIC) throw checkpointError(file, 'not an imiad checkpoint (bad magic)');
  const version = b.readUInt32LE(8);
  if (version !== CHECKPOINT_VERSION) throw checkpointError(file, `format version ${version}, expected ${CHECKPOINT_VERSION}`);
  if (!json) return;
  const jsonLength = b.readUInt32LE(12);
  if (16 + jsonLength > size - 32 || 16 + jsonLength > b.length) throw checkpointError(file, 'header length out of range');
  let header: Header;
  try {
    header = JSON.parse(b.toString('utf8', 16, 16 + jsonLength)) as Header;
  } catch {
    throw checkpointError(file, 'unreadable header');
  }
  if (typeof header.method !== 'string' || typeof header.params !== 'object' || typeof header.config !== 'object' || !Array.isArray(header.arrays)) {
    throw checkpointError(file, 'incomplete header');
  }
  const run = header.run as Partial<CheckpointRun> | undefined;
  if (run !== undefined && (typeof run !== 'object' || run === null || typeof run.dataset !== 'string' || typeof run.category !== 'string' ||
    typeof run.setting !== 'object' || run.setting === null || typeof run.setting.name !== 'string' || !Number.isInteger(run.seed))) {
    throw checkpointError(file, 'bad run description');
  }
  const decision = header.decision;
  if (decision !== undefined && (typeof decision !== 'object' || decision === null || !Number.isFinite(decision.threshold) || typeof decision.source !== 'string')) {
    throw checkpointError(file, 'bad decision threshold');
  }
  return header;
}

/** Parses checkpoint bytes; every inconsistency is an ERR_IMIAD_CHECKPOINT error naming `file`. */
export function decodeCheckpoint(buf: Uint8Array, file: string): Checkpoint {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  // Magic and version first (a foreign file is named as such), then the checksum, then the header.
  parseHeader(b.subarray(0, 16), b.length, file, false);
  const digest = createHash('sha256').update(b.subarray(0, b.length - 32)).digest();
  if (!digest.equals(b.subarray(b.length - 32))) throw checkpointError(file, 'checksum mismatch (the file is corrupt or truncated)');
  const header = parseHeader(b, b.length, file);
  const jsonLength = b.readUInt32LE(12);
  const payloadStart = align8(16 + jsonLength);
  const payloadEnd = b.length - 32;
  const arrays: Record<string, StateArray> = {};
  for (const e of header.arrays) {
    const size = e.dtype === 'float64' ? 8 : e.dtype === 'float32' || e.dtype === 'int32' ? 4 : 0;
    if (size === 0 || !Number.isInteger(e.length) || !Number.isInteger(e.offset) || e.length < 0 || e.offset < 0) {
      throw checkpointError(file, `bad array entry ${String(e.name)}`);
    }
    const start = payloadStart + e.offset;
    if (start + e.length * size > payloadEnd) throw checkpointError(file, `array ${e.name} runs past the end of the file`);
    // Copied into fresh, aligned memory: the arrays outlive the file buffer and typed arrays need alignment.
    const bytes = new Uint8Array(e.length * size);
    bytes.set(b.subarray(start, start + e.length * size));
    arrays[e.name] = e.dtype === 'float32' ? new Float32Array(bytes.buffer) : e.dtype === 'float64' ? new Float64Array(bytes.buffer) : new Int32Array(bytes.buffer);
  }
  return { method: header.method, params: header.params, state: { config: header.config, arrays }, ...(header.run ? { run: header.run } : {}), ...(header.decision ? { decision: header.decision } : {}) };
}

/** Writes a checkpoint atomically (temporary file in the same folder, then rename). */
export async function writeCheckpoint(file: string, c: Checkpoint): Promise<void> {
  const bytes = encodeCheckpoint(c);
  const dir = path.dirname(path.resolve(file));
  await fs.promises.mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  try {
    await fs.promises.writeFile(tmp, bytes);
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot write the checkpoint ${file}: ${(err as Error).message}`);
  }
}

export async function readCheckpoint(file: string): Promise<Checkpoint> {
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(file);
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read the checkpoint ${file}: ${(err as Error).message}`);
  }
  return decodeCheckpoint(bytes, file);
}

/**
 * A checkpoint's method, parameters and run description without reading its arrays (nor verifying its checksum,
 * which readCheckpoint does): `imiad run --load` checks every checkpoint against the command before anything runs.
 */
export async function readCheckpointHeader(file: string): Promise<Omit<Checkpoint, 'state'>> {
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(file, 'r');
    const size = (await handle.stat()).size;
    const head = Buffer.alloc(Math.min(size, 16));
    await handle.read(head, 0, head.length, 0);
    const jsonLength = head.length >= 16 ? head.readUInt32LE(12) : 0;
    const b = Buffer.alloc(Math.min(size, 16 + jsonLength));
    await handle.read(b, 0, b.length, 0);
    const header = parseHeader(b, size, file);
    return { method: header.method, params: header.params, ...(header.run ? { run: header.run } : {}) };
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_IMIAD_CHECKPOINT') throw err;
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read the checkpoint ${file}: ${(err as Error).message}`);
  } finally {
    await handle?.close();
  }
}

/** A state's config value, or an ERR_IMIAD_CHECKPOINT error when absent or of the wrong type. */
export function configValue<T>(state: DetectorState, key: string, check: (v: unknown) => boolean, what: string): T {
  const v = state.config[key];
  if (!check(v)) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected ${what} for the checkpoint's ${key} but received ${JSON.stringify(v)}`);
  return v as T;
}

/** A state's array of the given type, or an ERR_IMIAD_CHECKPOINT error. */
export function stateArray<T extends StateArray>(state: DetectorState, key: string, ctor: new (n: number) => T, length?: number): T {
  const a = state.arrays[key];
  if (!(a instanceof ctor) || (length !== undefined && a.length !== length)) {
    throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected ${ctor.name}${length !== undefined ? `(${length})` : ''} for the checkpoint's array ${key}`);
  }
  return a;
}

const positiveInt = (v: unknown): boolean => Number.isInteger(v) && (v as number) > 0;
const isGrid = (v: unknown): boolean => typeof v === 'object' && v !== null && positiveInt((v as { height?: unknown }).height) && positiveInt((v as { width?: unknown }).width);

/** A grid { height, width } from a state's config. */
export function configGrid(state: DetectorState, key = 'grid'): { height: number; width: number } {
  const g = configValue<{ height: number; width: number }>(state, key, isGrid, '{ height, width }');
  return { height: g.height, width: g.width };
}

export function configInt(state: DetectorState, key: string): number {
  return configValue<number>(state, key, positiveInt, 'a positive integer');
}

/** A Gaussian state's arrays and dims under a prefix (PaDiM, DNE). */
export function gaussianToState(g: GaussianState, prefix: string, out: DetectorState): void {
  out.config[`${prefix}channels`] = g.channels;
  out.config[`${prefix}positions`] = g.positions;
  out.arrays[`${prefix}mean`] = g.mean;
  out.arrays[`${prefix}cholesky`] = g.cholesky;
}

export function gaussianFromState(state: DetectorState, prefix: string): GaussianState {
  const channels = configInt(state, `${prefix}channels`);
  const positions = configInt(state, `${prefix}positions`);
  return {
    channels,
    positions,
    mean: stateArray(state, `${prefix}mean`, Float32Array, channels * positions),
    cholesky: stateArray(state, `${prefix}cholesky`, Float32Array, ((channels * (channels + 1)) / 2) * positions),
  };
}

/**
 * A trained model's weights (`w:<name>`) and optimiser state (`o:<name>`) as checkpoint arrays, with the names and
 * shapes the config must carry to restore them (every libtorch-trained detector stores them this way).
 */
export function trainedModelState(model: TrainModel): {
  arrays: DetectorState['arrays'];
  config: { names: string[]; shapes: number[][]; optimizerNames: string[]; optimizerShapes: number[][] };
} {
  const s = model.state();
  const o = model.optimizerState();
  const arrays: DetectorState['arrays'] = {};
  s.names.forEach((name, i) => (arrays[`w:${name}`] = s.arrays[i]));
  o.names.forEach((name, i) => (arrays[`o:${name}`] = o.arrays[i]));
  return { arrays, config: { names: s.names, shapes: s.shapes, optimizerNames: o.names, optimizerShapes: o.shapes } };
}

const isInts = (v: unknown): boolean => Array.isArray(v) && v.every((x) => Number.isInteger(x));
const isNames = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');
const isShapes = (v: unknown): boolean => Array.isArray(v) && v.every(isInts);
const isExtra = (v: unknown): boolean =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((a) => Array.isArray(a) && a.every((x) => typeof x === 'number'));

/** Refuses the checkpoint of another trained model kind (ERR_IMIAD_CHECKPOINT naming both). */
export function requireCheckpointKind(state: DetectorState, kind: string): void {
  const found = configValue<string>(state, 'kind', (v) => typeof v === 'string', 'a string');
  if (found !== kind) throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected ${kind} weights but the checkpoint holds ${found} weights`);
}

/** Refuses a checkpoint trained at another input side than the detector's. */
export function requireCheckpointCrop(state: DetectorState, cropSize: number): void {
  if (configInt(state, 'cropSize') !== cropSize) {
    throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `Expected a model trained at ${cropSize} px but the checkpoint's was trained at ${String(state.config.cropSize)} px`);
  }
}

/** An integer list of a trained model's config (channels, widths, head dims). */
export function configInts(state: DetectorState, key: string): number[] {
  return configValue<number[]>(state, key, isInts, 'an array of integers');
}

/** The native model's `extra` options as the checkpoint holds them. */
export function configExtra(state: DetectorState): Record<string, number[]> {
  return configValue<Record<string, number[]>>(state, 'extra', isExtra, 'an object of number arrays');
}

/**
 * Restores into `model` the weights and optimiser state that trainedModelState wrote; a name, shape or array that
 * does not fit is ERR_IMIAD_CHECKPOINT. `optionalOptimizer`: checkpoints written before optimiser state was saved
 * (STPM, RD4AD) have none, and training then continues with a fresh optimiser.
 */
export function restoreTrainedModel(model: TrainModel, state: DetectorState, opts: { optionalOptimizer?: boolean } = {}): void {
  const names = configValue<string[]>(state, 'names', isNames, 'an array of names');
  const shapes = configValue<number[][]>(state, 'shapes', isShapes, 'an array of shapes');
  const legacy = opts.optionalOptimizer === true && state.config.optimizerNames === undefined;
  const optimizerNames = legacy ? [] : configValue<string[]>(state, 'optimizerNames', isNames, 'an array of names');
  const optimizerShapes = legacy ? [] : configValue<number[][]>(state, 'optimizerShapes', isShapes, 'an array of shapes');
  try {
    model.loadState({ names, shapes, arrays: names.map((n) => stateArray(state, `w:${n}`, Float32Array)) });
    model.loadOptimizerState({ names: optimizerNames, shapes: optimizerShapes, arrays: optimizerNames.map((n) => stateArray(state, `o:${n}`, Float32Array)) });
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_IMIAD_CHECKPOINT') throw err;
    throw imiadError('Error', 'ERR_IMIAD_CHECKPOINT', `The checkpoint's weights do not fit the model: ${(err as Error).message}`);
  }
}
