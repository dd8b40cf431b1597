/**
 * Image decoding for the pipeline: any file imiad reads (PNG/JPEG/TIFF through sharp, BMP through bmp-ts via
 * lib/image/mask.ts) to 8-bit RGB, and header-only size reads. A missing file is ERR_IMIAD_FILE; an empty, corrupt
 * or truncated one ERR_IMIAD_IMAGE; both name the file.
 */
import * as fs from 'fs';

import sharp from 'sharp';

import { imiadError } from '../../bindings/errors';
import { decodeBmp, isBmp, readImageFile, type RawImage } from './mask';

export interface ImageSize {
  width: number;
  height: number;
}

/** 8-bit RGB copy of interleaved pixels with 1 (grey), 2 (grey + alpha), 3 or 4 (RGBA) channels; alpha is dropped. */
export function toRgb(raw: RawImage): RawImage {
  if (raw.channels === 3) return raw;
  const n = raw.width * raw.height;
  const out = new Uint8Array(n * 3);
  const c = raw.channels;
  for (let i = 0, p = 0, q = 0; i < n; i++, p += c, q += 3) {
    if (c <= 2) {
      const v = raw.data[p];
      out[q] = v;
      out[q + 1] = v;
      out[q + 2] = v;
    } else {
      out[q] = raw.data[p];
      out[q + 1] = raw.data[p + 1];
      out[q + 2] = raw.data[p + 2];
    }
  }
  return { data: out, width: raw.width, height: raw.height, channels: 3 };
}

function imageError(file: string, err: unknown): Error {
  return imiadError('Error', 'ERR_IMIAD_IMAGE', `Cannot decode image ${file}: ${(err as Error).message}`);
}

/** The file's bytes and a sharp instance that reads it as 8-bit sRGB without alpha (BMP decoded by bmp-ts first). */
export async function openImage(file: string): Promise<{ image: sharp.Sharp; width: number; height: number }> {
  const buf = await readImageFile(file);
  if (isBmp(file, buf)) {
    const rgb = toRgb(await decodeBmp(file, buf));
    return { image: sharp(rgb.data, { raw: { width: rgb.width, height: rgb.height, channels: 3 } }), width: rgb.width, height: rgb.height };
  }
  let meta: sharp.Metadata;
  try {
    meta = await sharp(buf).metadata();
  } catch (err) {
    throw imageError(file, err);
  }
  if (!meta.width || !meta.height) throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Cannot decode image ${file}: no image size in its header`);
  // failOn 'error' turns truncated and corrupt data into an error instead of a grey tail.
  const image = sharp(buf, { failOn: 'error' }).removeAlpha().toColourspace('srgb');
  return { image, width: meta.width, height: meta.height };
}

/** Decodes a file to 8-bit RGB at its original size. */
export async function decodeImage(file: string): Promise<RawImage> {
  const { image } = await openImage(file);
  try {
    const { data, info } = await image.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    return toRgb({ data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: info.channels });
  } catch (err) {
    throw imageError(file, err);
  }
}

const HEADER_BYTES = 64 * 1024;

async function readHead(file: string): Promise<Buffer> {
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(file, 'r');
    const buf = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await handle.read(buf, 0, HEADER_BYTES, 0);
    return buf.subarray(0, bytesRead);
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read ${file}: ${(err as Error).message}`);
  } finally {
    await handle?.close();
  }
}

/**
 * Width and height from the file header (BMP: from its info header), without decoding the pixels. Only the first
 * 64 KiB are read when they hold the header (PNG, JPEG, BMP); otherwise (TIFF directories, large JPEG metadata)
 * the whole file.
 */
export async function readImageSize(file: string): Promise<ImageSize> {
  const head = await readHead(file);
  if (head.length === 0) throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Expected an image in ${file} but the file is empty`);
  if (isBmp(file, head)) {
    if (head.length < 26) throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Cannot decode BMP image ${file}: the header is truncated`);
    const headerSize = head.readUInt32LE(14);
    if (headerSize === 12) return { width: head.readUInt16LE(18), height: head.readUInt16LE(20) };
    return { width: Math.abs(head.readInt32LE(18)), height: Math.abs(head.readInt32LE(22)) };
  }
  if (head.length < HEADER_BYTES) return sizeFromBuffer(file, head);
  try {
    const meta = await sharp(head).metadata();
    if (meta.width && meta.height && meta.format !== 'tiff') return { width: meta.width, height: meta.height };
  } catch {
    // The header lies beyond the first bytes: read the whole file below.
  }
  return sizeFromBuffer(file, await readImageFile(file));
}

async function sizeFromBuffer(file: string, buf: Buffer): Promise<ImageSize> {
  try {
    const meta = await sharp(buf).metadata();
    if (!meta.width || !meta.height) throw new Error('no image size in its header');
    return { width: meta.width, height: meta.height };
  } catch (err) {
    throw imageError(file, err);
  }
}

/** Rejects with `imageError` for sharp failures while keeping imiad's own errors as they are. */
export function rethrowDecode(file: string, err: unknown): never {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('ERR_IMIAD_')) throw err;
  throw imageError(file, err);
}
