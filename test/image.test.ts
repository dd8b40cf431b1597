/** The image pipeline: decoding, geometry, normalisation, masks, inverse mapping, prefetch, errors, augmentations. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { encodePixels } from '../lib/datasets/synth/encode';
import { applyAugmentation, augmentVariants, IDENTITY, sampleAugmentation } from '../lib/image/augment';
import { decodeImage, readImageSize } from '../lib/image/decode';
import type { BinaryMask, RawImage } from '../lib/image/mask';
import { batches, geometryFor, IMAGENET_MEAN, IMAGENET_STD, loadBatch, loadMaskBatch, mapToOriginal, maskToCrop, prepareRaw } from '../lib/image/pipeline';
import { Random } from '../lib/prng';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-image-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function pattern(width: number, height: number, channels: 1 | 3): Uint8Array {
  const px = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < channels; c++) px[(y * width + x) * channels + c] = (x * 37 + y * 11 + c * 80) % 256;
  return px;
}

async function writeRaw(name: string, px: Uint8Array, width: number, height: number, channels: 1 | 3, format: 'png' | 'jpg' | 'bmp' | 'tiff'): Promise<string> {
  const file = path.join(tmp, name);
  if (format === 'tiff') {
    let img = sharp(px, { raw: { width, height, channels } });
    if (channels === 1) img = img.toColourspace('b-w');
    fs.writeFileSync(file, await img.tiff({ compression: 'lzw' }).toBuffer());
  } else fs.writeFileSync(file, await encodePixels(px, width, height, channels, format));
  return file;
}

function rgbOf(px: Uint8Array, channels: 1 | 3): Uint8Array {
  if (channels === 3) return px;
  const out = new Uint8Array(px.length * 3);
  for (let i = 0; i < px.length; i++) out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = px[i];
  return out;
}

describe('decoding', () => {
  it.each([
    ['png', 3],
    ['png', 1],
    ['bmp', 3],
    ['bmp', 1],
    ['tiff', 3],
    ['tiff', 1],
  ] as const)('decodes %s with %i channel(s) losslessly to RGB', async (format, channels) => {
    const px = pattern(7, 5, channels);
    const file = await writeRaw(`lossless-${channels}.${format}`, px, 7, 5, channels, format);
    const img = await decodeImage(file);
    expect([img.width, img.height, img.channels]).toEqual([7, 5, 3]);
    expect(Array.from(img.data)).toEqual(Array.from(rgbOf(px, channels)));
    expect(await readImageSize(file)).toEqual({ width: 7, height: 5 });
  });

  it('reads sizes of large files from their header', async () => {
    const big = pattern(300, 200, 3);
    for (const format of ['png', 'tiff', 'bmp', 'jpg'] as const) {
      const file = await writeRaw(`big.${format}`, big, 300, 200, 3, format);
      expect(await readImageSize(file)).toEqual({ width: 300, height: 200 });
    }
  });

  it('decodes JPEG close to its source', async () => {
    const px = new Uint8Array(16 * 16 * 3).fill(120);
    const file = await writeRaw('flat.JPG', px, 16, 16, 3, 'jpg');
    const img = await decodeImage(file);
    expect(Math.max(...Array.from(img.data).map((v) => Math.abs(v - 120)))).toBeLessThanOrEqual(2);
  });

  it('names empty, missing, truncated and corrupt files', async () => {
    const empty = path.join(tmp, 'empty.png');
    fs.writeFileSync(empty, '');
    await expect(decodeImage(empty)).rejects.toThrow(`Expected an image in ${empty} but the file is empty`);
    await expect(decodeImage(empty)).rejects.toMatchObject({ code: 'ERR_IMIAD_IMAGE' });
    const missing = path.join(tmp, 'missing.png');
    await expect(decodeImage(missing)).rejects.toThrow(`Cannot read ${missing}: ENOENT: no such file or directory, open '${missing}'`);
    await expect(decodeImage(missing)).rejects.toMatchObject({ code: 'ERR_IMIAD_FILE' });
    const good = fs.readFileSync(await writeRaw('whole.png', pattern(32, 32, 3), 32, 32, 3, 'png'));
    const truncated = path.join(tmp, 'truncated.png');
    fs.writeFileSync(truncated, good.subarray(0, Math.floor(good.length / 2)));
    await expect(loadBatch([truncated], { imageSize: 16, cropSize: 16 })).rejects.toThrow(new RegExp(`^Cannot decode image ${truncated.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    await expect(loadBatch([truncated], { imageSize: 16, cropSize: 16 })).rejects.toMatchObject({ code: 'ERR_IMIAD_IMAGE' });
    const garbage = path.join(tmp, 'garbage.jpg');
    fs.writeFileSync(garbage, 'not an image at all');
    await expect(decodeImage(garbage)).rejects.toThrow(`Cannot decode image ${garbage}: Input buffer contains unsupported image format`);
    const bmp = fs.readFileSync(await writeRaw('whole.bmp', pattern(32, 32, 3), 32, 32, 3, 'bmp'));
    const badBmp = path.join(tmp, 'truncated.bmp');
    fs.writeFileSync(badBmp, bmp.subarray(0, 60));
    await expect(decodeImage(badBmp)).rejects.toThrow(new RegExp(`^Cannot decode BMP image ${badBmp.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
  });
});

describe('geometry and normalisation', () => {
  it('follows torchvision Resize(int) + CenterCrop', () => {
    expect(geometryFor(300, 200)).toEqual({ width: 300, height: 200, resizedWidth: 384, resizedHeight: 256, left: 80, top: 16, cropSize: 224 });
    expect(geometryFor(200, 300, { resize: 'exact' })).toEqual({ width: 200, height: 300, resizedWidth: 256, resizedHeight: 256, left: 16, top: 16, cropSize: 224 });
    // (257 - 224) / 2 = 16.5 rounds to the even 16, as Python's round().
    expect(geometryFor(257, 257, { imageSize: 257, cropSize: 224 }).left).toBe(16);
    expect(geometryFor(259, 259, { imageSize: 259, cropSize: 224 }).left).toBe(18);
    expect(() => geometryFor(10, 10, { imageSize: 32, cropSize: 40 })).toThrow('Expected integer between 1 and imageSize (32) for cropSize but received 40 of type number');
  });

  it('normalises with the ImageNet mean and std into CHW', async () => {
    const width = 12;
    const height = 9;
    const px = new Uint8Array(width * height * 3);
    for (let i = 0; i < width * height; i++) px.set([255, 0, 128], i * 3);
    const a = await writeRaw('flat-a.png', px, width, height, 3, 'png');
    const b = await writeRaw('flat-b.bmp', px, width, height, 3, 'bmp');
    const batch = await loadBatch([a, b], { imageSize: 8, cropSize: 6 });
    expect(batch.n).toBe(2);
    expect(batch.data.length).toBe(2 * 3 * 6 * 6);
    const expected = [255, 0, 128].map((v, c) => (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
    for (let i = 0; i < 2; i++)
      for (let c = 0; c < 3; c++)
        for (let k = 0; k < 36; k++) expect(batch.data[i * 108 + c * 36 + k]).toBeCloseTo(expected[c], 5);
    expect(batch.geometries[0]).toEqual({ width: 12, height: 9, resizedWidth: 10, resizedHeight: 8, left: 2, top: 1, cropSize: 6 });
  });

  it('crops the centre: without resizing, crop pixel (x, y) is image pixel (x + left, y + top)', async () => {
    const px = pattern(40, 30, 3);
    const raw: RawImage = { data: px, width: 40, height: 30, channels: 3 };
    const { tensor, geometry } = await prepareRaw(raw, { imageSize: 30, cropSize: 20, mean: [0, 0, 0], std: [1, 1, 1] });
    expect(geometry).toMatchObject({ resizedWidth: 40, resizedHeight: 30, left: 10, top: 5 });
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 20; y++)
        for (let x = 0; x < 20; x++) expect(Math.round(tensor[c * 400 + y * 20 + x] * 255)).toBe(px[((y + 5) * 40 + x + 10) * 3 + c]);
  });
});

describe('masks and the inverse mapping', () => {
  it('cuts masks to the crop with nearest neighbour', () => {
    const rng = new Random(5);
    const mask: BinaryMask = { data: Uint8Array.from({ length: 40 * 40 }, () => (rng.bool(0.3) ? 1 : 0)), width: 40, height: 40 };
    const g = geometryFor(40, 40, { imageSize: 20, cropSize: 10 });
    const crop = maskToCrop(mask, g);
    for (let y = 0; y < 10; y++) for (let x = 0; x < 10; x++) expect(crop[y * 10 + x]).toBe(mask.data[(2 * (y + 5) + 1) * 40 + 2 * (x + 5) + 1]);
    expect(new Set(crop)).toEqual(new Set([0, 1]));
  });

  it('reads mask files of a batch, the union for several files', async () => {
    const one = new Uint8Array(16).fill(0);
    one[0] = 255;
    const two = new Uint8Array(16).fill(0);
    two[15] = 255;
    const a = await writeRaw('m-a.png', one, 4, 4, 1, 'png');
    const b = await writeRaw('m-b.png', two, 4, 4, 1, 'png');
    const g = geometryFor(4, 4, { imageSize: 4, cropSize: 4 });
    const masks = await loadMaskBatch([[a, b], []], [g, g]);
    expect(Array.from(masks.subarray(0, 16))).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect(Array.from(masks.subarray(16))).toEqual(new Array(16).fill(0));
  });

  it('maps a crop-sized map back to the original pixels', () => {
    const g = geometryFor(40, 40, { imageSize: 40, cropSize: 20 });
    const map = new Float32Array(400);
    for (let y = 0; y < 20; y++) for (let x = 0; x < 20; x++) map[y * 20 + x] = x + 100 * y;
    const back = mapToOriginal(map, g);
    expect(back.length).toBe(1600);
    for (let y = 10; y < 30; y++) for (let x = 10; x < 30; x++) expect(back[y * 40 + x]).toBeCloseTo(x - 10 + 100 * (y - 10), 4);
    expect(back[0]).toBe(0); // outside the crop: the map's minimum
    expect(back[5 * 40 + 20]).toBe(0);
    const edge = mapToOriginal(map, g, { outside: 'edge' });
    expect(edge[5 * 40 + 20]).toBeCloseTo(10, 4);
    expect(edge[39 * 40 + 39]).toBeCloseTo(19 + 1900, 4);
  });

  it('maps a smaller map (feature resolution) with bilinear interpolation and checks its length', () => {
    const g = geometryFor(16, 16, { imageSize: 16, cropSize: 16 });
    const back = mapToOriginal(new Float32Array([0, 1, 2, 3]), g, { mapWidth: 2, mapHeight: 2 });
    expect(back[0]).toBe(0);
    expect(back[15]).toBe(1);
    // Original pixel 8 sits at 8.5 / 16 * 2 - 0.5 = 0.5625 map pixels on each axis: 0.5625 + 2 * 0.5625.
    expect(back[8 * 16 + 8]).toBeCloseTo(1.6875, 5);
    expect(() => mapToOriginal(new Float32Array(3), g)).toThrow('Expected length of map to be 256 (16 x 16) but received 3 of type number');
  });
});

describe('batches', () => {
  it('yields batches in input order with a bounded prefetch, and names a bad file at its batch', async () => {
    const files: string[] = [];
    for (let i = 0; i < 7; i++) {
      const px = new Uint8Array(8 * 8 * 3).fill(i * 30);
      files.push(await writeRaw(`seq-${i}.png`, px, 8, 8, 3, 'png'));
    }
    const seen: number[][] = [];
    for await (const b of batches(files, { imageSize: 8, cropSize: 8, batchSize: 3, prefetch: 2, mean: [0, 0, 0], std: [1, 1, 1] })) {
      seen.push(Array.from({ length: b.n }, (_, i) => Math.round(b.data[i * 192] * 255)));
      expect(b.paths).toEqual(files.slice(b.start, b.start + b.n));
    }
    expect(seen).toEqual([[0, 30, 60], [90, 120, 150], [180]]);
    const bad = path.join(tmp, 'bad.png');
    fs.writeFileSync(bad, 'xx');
    const it = batches([files[0], files[1], bad], { imageSize: 8, cropSize: 8, batchSize: 2, prefetch: 4 });
    expect((await it.next()).value?.n).toBe(2);
    await expect(it.next()).rejects.toThrow(`Cannot decode image ${bad}: Input buffer contains unsupported image format`);
    const controller = new AbortController();
    controller.abort();
    await expect(batches(files, { signal: controller.signal }).next()).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
  });
});

describe('augmentations', () => {
  function squareImage(size: number, x0: number, y0: number, side: number): { image: RawImage; mask: BinaryMask } {
    const data = new Uint8Array(size * size * 3).fill(40);
    const mask = new Uint8Array(size * size);
    for (let y = y0; y < y0 + side; y++)
      for (let x = x0; x < x0 + side; x++) {
        data.fill(250, (y * size + x) * 3, (y * size + x) * 3 + 3);
        mask[y * size + x] = 1;
      }
    return { image: { data, width: size, height: size, channels: 3 }, mask: { data: mask, width: size, height: size } };
  }

  it('leaves the image unchanged with identity parameters', () => {
    const img: RawImage = { data: pattern(9, 7, 3), width: 9, height: 7, channels: 3 };
    expect(Array.from(applyAugmentation(img, IDENTITY).image.data)).toEqual(Array.from(img.data));
  });

  it('flips and rotates by 90 degrees exactly', () => {
    const img: RawImage = { data: pattern(8, 8, 3), width: 8, height: 8, channels: 3 };
    const flipped = applyAugmentation(img, { ...IDENTITY, hflip: true }).image;
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) expect(flipped.data[(y * 8 + x) * 3]).toBe(img.data[(y * 8 + 7 - x) * 3]);
    const turned = applyAugmentation(img, { ...IDENTITY, angle: 90 }).image;
    // Rotating by +90 degrees (y down) sends input (x, y) to output (7 - y, x).
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) expect(turned.data[(x * 8 + (7 - y)) * 3]).toBe(img.data[(y * 8 + x) * 3]);
  });

  it.each([
    ['rotation', { rotation: 35 }],
    ['scale and translation', { scale: [0.8, 1.2] as [number, number], translate: 0.1 }],
    ['perspective', { perspective: 0.4 }],
    ['everything', { rotation: 25, hflip: 0.5, vflip: 0.5, scale: [0.9, 1.1] as [number, number], translate: 0.05, perspective: 0.3 }],
  ])('keeps the mask on the moved defect (%s)', (_name, spec) => {
    const { image, mask } = squareImage(64, 30, 20, 12);
    for (const v of augmentVariants(image, spec, { count: 4, seed: 11, mask })) {
      const m = v.mask as BinaryMask;
      let bright = 0;
      let brightInMask = 0;
      let inMask = 0;
      let maskBright = 0;
      for (let i = 0; i < 64 * 64; i++) {
        const b = v.image.data[i * 3] > 200;
        bright += b ? 1 : 0;
        inMask += m.data[i];
        if (b && m.data[i]) brightInMask++;
        if (m.data[i] && v.image.data[i * 3] > 120) maskBright++;
      }
      expect(inMask).toBeGreaterThan(50);
      expect(brightInMask / bright).toBeGreaterThan(0.97);
      expect(maskBright / inMask).toBeGreaterThan(0.9);
    }
  });

  it('draws fresh seeded parameters per variant, independent of the count', () => {
    const img: RawImage = { data: pattern(16, 16, 3), width: 16, height: 16, channels: 3 };
    const spec = { rotation: 30, brightness: 0.2, contrast: 0.2 };
    const three = augmentVariants(img, spec, { count: 3, seed: 4 });
    const five = augmentVariants(img, spec, { count: 5, seed: 4 });
    expect(five.slice(0, 3).map((v) => v.params)).toEqual(three.map((v) => v.params));
    expect(three[0].params.angle).not.toBe(three[1].params.angle);
    expect(augmentVariants(img, spec, { count: 1, seed: 5 })[0].params).not.toEqual(three[0].params);
    const p = sampleAugmentation({ rotation: 30 }, new Random(4).fork('augment', 0), 16, 16);
    expect(p.angle).toBe(three[0].params.angle);
  });

  it('applies colour jitter to the image only', () => {
    const { image, mask } = squareImage(16, 4, 4, 4);
    const dark = applyAugmentation(image, { ...IDENTITY, brightness: 0.5 }, mask);
    expect(dark.image.data[0]).toBe(20);
    expect(dark.image.data[(5 * 16 + 5) * 3]).toBe(125);
    expect(Array.from(dark.mask?.data ?? [])).toEqual(Array.from(mask.data));
    const flat = applyAugmentation(image, { ...IDENTITY, contrast: 0 });
    expect(new Set(flat.image.data).size).toBe(1);
  });

  it('validates the spec in the project format', () => {
    const img: RawImage = { data: pattern(4, 4, 3), width: 4, height: 4, channels: 3 };
    expect(() => augmentVariants(img, { rotation: 200 }, { count: 1 })).toThrow('Expected number between 0 and 180 for rotation but received 200 of type number');
    expect(() => augmentVariants(img, { hflip: 'yes' as never }, { count: 1 })).toThrow('Expected number between 0 and 1 for hflip but received yes of type string');
  });
});
