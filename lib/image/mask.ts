/**
 * Ground-truth masks: decoded at their original size and binarised as `> 0` (any channel), never resized with
 * interpolation. PNG/JPEG/TIFF through sharp; BMP (BTAD) through bmp-ts, since sharp's prebuilt libvips has no BMP
 * loader.
 */
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';

import { imiadError } from '../../bindings/errors';

export interface BinaryMask {
  /** 1 for anomalous pixels, 0 elsewhere; row-major, width * height. */
  data: Uint8Array;
  width: number;
  height: number;
}

/** Raw decoded pixels (8-bit, interleaved channels) of any image file imiad reads. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/** Reads an image file without blocking the event loop; a missing file is ERR_IMIAD_FILE, an empty one ERR_IMIAD_IMAGE. */
export async function readImageFile(file: string): Promise<Buffer> {
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(file);
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read ${file}: ${(err as Error).message}`);
  }
  if (buf.length === 0) throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Expected an image in ${file} but the file is empty`);
  return buf;
}

/** True for BMP files, by extension or by the 'BM' signature. */
export function isBmp(file: string, buf: Buffer): boolean {
  return path.extname(file).toLowerCase() === '.bmp' || (buf.length > 1 && buf[0] === 0x42 && buf[1] === 0x4d);
}

/** Decodes a BMP file to 8-bit RGB(A). */
export async function decodeBmp(file: string, buf: Buffer): Promise<RawImage> {
  try {
    const bmp = await import('bmp-ts');
    const decoded = bmp.decode(buf, { toRGBA: true });
    return { data: new Uint8Array(decoded.data.buffer, decoded.data.byteOffset, decoded.data.byteLength), width: decoded.width, height: decoded.height, channels: 4 };
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Cannot decode BMP image ${file}: ${(err as Error).message}`);
  }
}

/** Decodes any supported image file to 8-bit interleaved pixels, naming the file on failure. */
export async function decodeRaw(file: string): Promise<RawImage> {
  const buf = await readImageFile(file);
  if (isBmp(file, buf)) return decodeBmp(file, buf);
  try {
    const { data, info } = await sharp(buf, { failOn: 'error' }).toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: info.channels };
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Cannot decode image ${file}: ${(err as Error).message}`);
  }
}

/** Reads a ground-truth mask, binarised as `> 0` over its colour channels (alpha ignored). */
export async function readMask(file: string): Promise<BinaryMask> {
  const raw = await decodeRaw(file);
  const n = raw.width * raw.height;
  const out = new Uint8Array(n);
  const colour = raw.channels === 2 || raw.channels === 4 ? raw.channels - 1 : raw.channels;
  for (let i = 0, p = 0; i < n; i++, p += raw.channels) {
    let any = 0;
    for (let c = 0; c < colour; c++) any |= raw.data[p + c];
    out[i] = any > 0 ? 1 : 0;
  }
  return { data: out, width: raw.width, height: raw.height };
}

/** An all-zero mask (normal images, and anomalies without a ground-truth file). */
export function emptyMask(width: number, height: number): BinaryMask {
  return { data: new Uint8Array(width * height), width, height };
}

/**
 * Reads a mask and the grey value its foreground carries (the largest value of the first colour channel): MVTec
 * LOCO AD links each ground-truth PNG to its defects_config.json entry through that pixel_value.
 */
export async function readMaskWithValue(file: string): Promise<{ mask: BinaryMask; value: number }> {
  const raw = await decodeRaw(file);
  const n = raw.width * raw.height;
  const out = new Uint8Array(n);
  const colour = raw.channels === 2 || raw.channels === 4 ? raw.channels - 1 : raw.channels;
  let value = 0;
  for (let i = 0, p = 0; i < n; i++, p += raw.channels) {
    let any = 0;
    for (let c = 0; c < colour; c++) any |= raw.data[p + c];
    out[i] = any > 0 ? 1 : 0;
    if (raw.data[p] > value) value = raw.data[p];
  }
  return { mask: { data: out, width: raw.width, height: raw.height }, value };
}

/** Union (logical OR) of the masks of one image; MVTec LOCO AD images have one mask per defect. */
export async function readMaskUnion(files: string[], width?: number, height?: number): Promise<BinaryMask> {
  if (files.length === 0) {
    if (width === undefined || height === undefined) throw imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', 'Expected mask files or a width and height for an empty mask');
    return emptyMask(width, height);
  }
  const masks = await Promise.all(files.map((f) => readMask(f)));
  const first = masks[0];
  const out = new Uint8Array(first.data.length);
  masks.forEach((m, k) => {
    if (m.width !== first.width || m.height !== first.height) {
      throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Mask ${files[k]} is ${m.width}x${m.height} but ${files[0]} is ${first.width}x${first.height}`);
    }
    for (let i = 0; i < out.length; i++) out[i] |= m.data[i];
  });
  return { data: out, width: first.width, height: first.height };
}
