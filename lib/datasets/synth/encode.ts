/** Writing synthetic images and masks: PNG/JPEG through sharp, BMP through bmp-ts. Deterministic bytes. */
import * as fs from 'fs';
import * as path from 'path';

import sharp from 'sharp';

export type ImageFormat = 'png' | 'jpg' | 'bmp';

function bmpBytes(pixels: Uint8Array, width: number, height: number, channels: 1 | 3): Buffer {
  // bmp-ts reads 4 bytes per pixel in the order alpha, blue, green, red.
  const abgr = Buffer.alloc(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    const r = pixels[i * channels];
    const g = channels === 3 ? pixels[i * 3 + 1] : r;
    const b = channels === 3 ? pixels[i * 3 + 2] : r;
    abgr[i * 4] = 255;
    abgr[i * 4 + 1] = b;
    abgr[i * 4 + 2] = g;
    abgr[i * 4 + 3] = r;
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const bmp = require('bmp-ts') as typeof import('bmp-ts');
  return bmp.encode({ data: abgr, width, height, bitPP: 24 }).data;
}

export async function encodePixels(pixels: Uint8Array, width: number, height: number, channels: 1 | 3, format: ImageFormat): Promise<Buffer> {
  if (format === 'bmp') return bmpBytes(pixels, width, height, channels);
  let img = sharp(pixels, { raw: { width, height, channels } });
  if (channels === 1) img = img.toColourspace('b-w');
  return format === 'png' ? img.png({ compressionLevel: 6 }).toBuffer() : img.jpeg({ quality: 95, chromaSubsampling: '4:4:4' }).toBuffer();
}

export async function writePixels(file: string, pixels: Uint8Array, width: number, height: number, channels: 1 | 3, format: ImageFormat): Promise<void> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  await fs.promises.writeFile(file, await encodePixels(pixels, width, height, channels, format));
}

/** A mask as a one-channel image: `value` on the mask, 0 elsewhere. */
export async function writeMask(file: string, mask: Uint8Array, width: number, height: number, format: ImageFormat = 'png', value = 255): Promise<void> {
  const px = new Uint8Array(mask.length);
  for (let i = 0; i < mask.length; i++) px[i] = mask[i] ? value : 0;
  await writePixels(file, px, width, height, 1, format);
}
