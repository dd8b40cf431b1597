/**
 * Readers for saved anomaly maps: float TIFF (uncompressed strips, little or big endian, the format MVTec's
 * evaluation scripts read with tifffile), NumPy .npy, and 8/16-bit PNG (through sharp). Every error names the file.
 */
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';

import { imiadError } from '../../bindings/errors';

export interface AnomalyMap {
  /** Scores, row-major, width * height. */
  data: Float32Array;
  width: number;
  height: number;
}

/** Extensions tried for a map, in order: the official scripts' TIFF extensions, then .npy and .png. */
export const MAP_EXTENSIONS = ['.tif', '.tiff', '.TIF', '.TIFF', '.npy', '.png'] as const;

function fileError(file: string, reason: string): Error {
  return imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read anomaly map ${file}: ${reason}`);
}

/** Reads a whole file off the event loop (a map of 1024 x 1024 is 4 MB). */
async function readBuffer(file: string): Promise<Buffer> {
  try {
    return await fs.promises.readFile(file);
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read ${file}: ${(err as Error).message}`);
  }
}

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Converts `count` samples of a numeric type at `offset` to float32. */
function samplesToFloat32(
  buf: Buffer,
  offset: number,
  count: number,
  kind: 'float' | 'uint' | 'int',
  bytes: number,
  little: boolean,
  out: Float32Array,
  outOffset: number,
  file: string,
): void {
  if (offset < 0 || offset + count * bytes > buf.length) throw fileError(file, 'pixel data runs past the end of the file');
  if (kind === 'float' && bytes === 4 && little === HOST_LITTLE_ENDIAN) {
    // Stored as the host's own float32: one memcpy (the samples need not be 4-byte aligned in the file).
    new Uint8Array(out.buffer, out.byteOffset + outOffset * 4, count * 4).set(buf.subarray(offset, offset + count * 4));
    return;
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i < count; i++) {
    const at = offset + i * bytes;
    let v: number;
    if (kind === 'float') v = bytes === 4 ? view.getFloat32(at, little) : view.getFloat64(at, little);
    else if (kind === 'uint') v = bytes === 1 ? view.getUint8(at) : bytes === 2 ? view.getUint16(at, little) : view.getUint32(at, little);
    else v = bytes === 1 ? view.getInt8(at) : bytes === 2 ? view.getInt16(at, little) : view.getInt32(at, little);
    out[outOffset + i] = v;
  }
}

/** Reads a single-channel TIFF with uncompressed strips (float32/float64 or integer samples). */
export function decodeTiff(buf: Buffer, file: string): AnomalyMap {
  if (buf.length < 8) throw fileError(file, 'not a TIFF file');
  const order = buf.toString('latin1', 0, 2);
  if (order !== 'II' && order !== 'MM') throw fileError(file, 'not a TIFF file');
  const little = order === 'II';
  const u16 = (o: number): number => (little ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number): number => (little ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const magic = u16(2);
  if (magic === 43) throw fileError(file, 'BigTIFF is not supported');
  if (magic !== 42) throw fileError(file, 'not a TIFF file');
  const ifd = u32(4);
  if (ifd + 2 > buf.length) throw fileError(file, 'truncated TIFF header');
  const entries = u16(ifd);
  const tags = new Map<number, number[]>();
  const typeSize: Record<number, number> = { 1: 1, 2: 1, 3: 2, 4: 4, 6: 1, 7: 1, 8: 2, 9: 4, 11: 4, 12: 8, 16: 8 };
  for (let e = 0; e < entries; e++) {
    const at = ifd + 2 + e * 12;
    if (at + 12 > buf.length) throw fileError(file, 'truncated TIFF directory');
    const tag = u16(at);
    const type = u16(at + 2);
    const count = u32(at + 4);
    const size = typeSize[type] ?? 1;
    const inline = size * count <= 4;
    const base = inline ? at + 8 : u32(at + 8);
    if (!inline && base + size * count > buf.length) throw fileError(file, 'truncated TIFF directory');
    const values: number[] = [];
    if (type === 3 || type === 4 || type === 1 || type === 16) {
      for (let i = 0; i < count; i++) {
        const o = base + i * size;
        values.push(type === 3 ? u16(o) : type === 4 ? u32(o) : type === 1 ? buf[o] : Number(little ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o)));
      }
    }
    tags.set(tag, values);
  }
  const one = (tag: number, fallback?: number): number => {
    const v = tags.get(tag);
    if (v && v.length > 0) return v[0];
    if (fallback === undefined) throw fileError(file, `TIFF tag ${tag} is missing`);
    return fallback;
  };
  const width = one(256);
  const height = one(257);
  const compression = one(259, 1);
  if (compression !== 1) throw fileError(file, `compressed TIFF (compression ${compression}) is not supported; save the map uncompressed`);
  const samplesPerPixel = one(277, 1);
  if (samplesPerPixel !== 1) throw fileError(file, `expected a single-channel map but found ${samplesPerPixel} samples per pixel`);
  if (tags.has(322)) throw fileError(file, 'tiled TIFF is not supported; save the map in strips');
  const bits = one(258, 1);
  const format = one(339, 1);
  const kind = format === 3 ? 'float' : format === 2 ? 'int' : format === 1 ? 'uint' : undefined;
  if (kind === undefined || (kind === 'float' && bits !== 32 && bits !== 64) || (kind !== 'float' && bits !== 8 && bits !== 16 && bits !== 32)) {
    throw fileError(file, `unsupported sample format ${format} with ${bits} bits`);
  }
  const bytes = bits / 8;
  const offsets = tags.get(273);
  const counts = tags.get(279);
  if (!offsets || offsets.length === 0) throw fileError(file, 'TIFF has no strip offsets');
  const rowsPerStrip = Math.min(one(278, height), height);
  const data = new Float32Array(width * height);
  let row = 0;
  for (let s = 0; s < offsets.length && row < height; s++) {
    const rows = Math.min(rowsPerStrip, height - row);
    const n = rows * width;
    if (counts && counts[s] !== undefined && counts[s] < n * bytes) throw fileError(file, `strip ${s} is shorter than its rows`);
    samplesToFloat32(buf, offsets[s], n, kind, bytes, little, data, row * width, file);
    row += rows;
  }
  if (row < height) throw fileError(file, 'TIFF strips hold fewer rows than the image height');
  return { data, width, height };
}

/** Reads a 2-D NumPy array (shape (h, w), or with a singleton leading or trailing axis). */
export function decodeNpy(buf: Buffer, file: string): AnomalyMap {
  if (buf.length < 10 || buf[0] !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') throw fileError(file, 'not a .npy file');
  const major = buf[6];
  const headerLength = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', headerStart, headerStart + headerLength);
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*True/.test(header);
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || shapeText === undefined) throw fileError(file, 'malformed .npy header');
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  let height: number;
  let width: number;
  if (shape.length === 2) [height, width] = shape;
  else if (shape.length === 3 && (shape[0] === 1 || shape[2] === 1)) [height, width] = shape[0] === 1 ? [shape[1], shape[2]] : [shape[0], shape[1]];
  else throw fileError(file, `expected a 2-D map but found shape (${shape.join(', ')})`);
  const m = /^([<>|=])([fiu])(\d)$/.exec(descr);
  if (!m) throw fileError(file, `unsupported dtype ${descr}`);
  const little = m[1] !== '>';
  const kind = m[2] === 'f' ? 'float' : m[2] === 'u' ? 'uint' : 'int';
  const bytes = Number(m[3]);
  if ((kind === 'float' && bytes !== 4 && bytes !== 8) || (kind !== 'float' && bytes !== 1 && bytes !== 2 && bytes !== 4)) {
    throw fileError(file, `unsupported dtype ${descr}`);
  }
  const n = width * height;
  const raw = new Float32Array(n);
  samplesToFloat32(buf, headerStart + headerLength, n, kind, bytes, little, raw, 0, file);
  if (!fortran) return { data: raw, width, height };
  const data = new Float32Array(n);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = raw[x * height + y];
  return { data, width, height };
}

/** Reads an 8- or 16-bit grey PNG map; the scores are the stored integers. */
export async function decodePngMap(buf: Buffer, file: string): Promise<AnomalyMap> {
  try {
    const image = sharp(buf, { failOn: 'error' });
    const meta = await image.metadata();
    const depth = meta.depth === 'ushort' || meta.depth === 'short' ? 'ushort' : 'uchar';
    // A grey interpretation keeps the stored integers (the default sRGB one rescales 16-bit data to 8 bits).
    const { data, info } = await image
      .toColourspace(depth === 'ushort' ? 'grey16' : 'b-w')
      .raw({ depth })
      .toBuffer({ resolveWithObject: true });
    const n = info.width * info.height;
    const out = new Float32Array(n);
    if (depth === 'ushort') {
      const view = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
      for (let i = 0; i < n; i++) out[i] = view[i * info.channels];
    } else {
      for (let i = 0; i < n; i++) out[i] = data[i * info.channels];
    }
    return { data: out, width: info.width, height: info.height };
  } catch (err) {
    throw fileError(file, (err as Error).message);
  }
}

/** Reads an anomaly map file by its extension. */
export async function readAnomalyMap(file: string): Promise<AnomalyMap> {
  const ext = path.extname(file).toLowerCase();
  const buf = await readBuffer(file);
  if (ext === '.tif' || ext === '.tiff') return decodeTiff(buf, file);
  if (ext === '.npy') return decodeNpy(buf, file);
  if (ext === '.png') return decodePngMap(buf, file);
  throw fileError(file, `unsupported extension ${ext} (expected .tiff, .tif, .npy or .png)`);
}

/**
 * Finds the map of one test image: MAPS/<category>/test/<defect>/<image stem> with one of MAP_EXTENSIONS. Exactly one
 * must exist (the official read_tiff refuses ambiguity as well).
 */
export function findMapFile(mapsRoot: string, category: string, defect: string, imagePath: string): string {
  const stem = path.basename(imagePath, path.extname(imagePath));
  const base = path.join(mapsRoot, category, 'test', defect, stem);
  const found = MAP_EXTENSIONS.map((ext) => base + ext).filter((f) => fs.existsSync(f));
  const unique = [...new Set(found.map((f) => fs.realpathSync(f)))];
  if (unique.length === 0) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Missing anomaly map for ${imagePath}: expected ${base}.tiff (or .tif, .npy, .png)`);
  }
  if (unique.length > 1) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Several anomaly maps for ${imagePath}: ${found.join(', ')}`);
  }
  return found[0];
}

/** Encodes a float32 map as an uncompressed little-endian TIFF (one strip), the format the official scripts read. */
export function encodeTiff(map: AnomalyMap, littleEndian = true): Buffer {
  const { width, height, data } = map;
  const entries: [number, number, number][] = [
    [256, 4, width],
    [257, 4, height],
    [258, 3, 32],
    [259, 3, 1],
    [262, 3, 1],
    [273, 4, 0], // patched below
    [277, 3, 1],
    [278, 4, height],
    [279, 4, width * height * 4],
    [339, 3, 3],
  ];
  const ifdSize = 2 + entries.length * 12 + 4;
  const dataOffset = 8 + ifdSize;
  const buf = Buffer.alloc(dataOffset + width * height * 4);
  const w16 = (v: number, o: number): number => (littleEndian ? buf.writeUInt16LE(v, o) : buf.writeUInt16BE(v, o));
  const w32 = (v: number, o: number): number => (littleEndian ? buf.writeUInt32LE(v, o) : buf.writeUInt32BE(v, o));
  buf.write(littleEndian ? 'II' : 'MM', 0, 'latin1');
  w16(42, 2);
  w32(8, 4);
  w16(entries.length, 8);
  entries.forEach(([tag, type, value], i) => {
    const at = 10 + i * 12;
    w16(tag, at);
    w16(type, at + 2);
    w32(1, at + 4);
    const v = tag === 273 ? dataOffset : value;
    if (type === 3) w16(v, at + 8);
    else w32(v, at + 8);
  });
  w32(0, 10 + entries.length * 12);
  for (let i = 0; i < data.length; i++) {
    if (littleEndian) buf.writeFloatLE(data[i], dataOffset + i * 4);
    else buf.writeFloatBE(data[i], dataOffset + i * 4);
  }
  return buf;
}

/** Encodes a float32 map as a NumPy .npy file (version 1.0, '<f4', C order). */
export function encodeNpy(map: AnomalyMap): Buffer {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${map.height}, ${map.width}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  head[0] = 0x93;
  head.write('NUMPY', 1, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.from(map.data.buffer, map.data.byteOffset, map.data.byteLength);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(body)]);
}
