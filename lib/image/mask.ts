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

function readFileOrThrow(file: string): Buffer {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read ${file}: ${(err as Error).message}`);
  }
  if (buf.length === 0) throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Expected an image in ${file} but the file is empty`);
  return buf;
}

/** Decodes a BMP file to 8-bit RGB(A). */
async function decodeBmp(file: string, buf: Buffer): Promise<RawImage> {
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
  const buf = readFileOrThrow(file);
  if (path.extname(file).toLowerCase() === '.bmp' || (buf[0] === 0x42 && buf[1] === 0x4d)) return decodeBmp(file, buf);
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
