/**
 * Training-time pixel operations of the supervised detectors on 8-bit RGB images (interleaved), each driven by a
 * seeded generator so that a seed names every augmented batch:
 * - `randomRotation`: torchvision's RandomRotation(degrees) on a PIL image: an angle drawn uniformly from
 *   [-degrees, degrees], counter-clockwise about the image centre, nearest neighbour, the same size (expand=False),
 *   pixels from outside the image filled with 0 (PIL's affine transform: output pixel centres mapped back, floor).
 * - `cutMix`: DRA's pseudo-anomaly (Choubo/DRA datasets/cutmix.py, the CutPaste "normal" recipe): a rectangle of
 *   2-15 % of the image area with aspect ratio in [0.3, 1/0.3] (log-uniform), cut at a random place, colour-jittered
 *   (ColorJitter(0.1, 0.1, 0.1, 0.1)) and pasted at another random place of the same image.
 * - `colorJitter`: torchvision's ColorJitter on a PIL image: brightness, contrast, saturation and hue factors drawn
 *   first, applied in a random order, with PIL's definitions (ImageEnhance blends; hue shifted in PIL's 8-bit HSV).
 * The official code draws from Python's and torch's global generators; these draw from imiad's Random (lib/prng.ts),
 * so the distributions are the official ones and the streams are imiad's.
 */
import type { Random } from '../prng';

// Module-level bindings: hot loops then avoid global lookups, which are slow inside vm contexts (jest).
const Math = globalThis.Math;

/** An 8-bit RGB image, interleaved. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

const clip8 = (v: number): number => (v <= 0 ? 0 : v >= 255 ? 255 : v | 0);

/** Python's round(): halves to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** PIL's 8-bit luma (ITU-R 601-2, "L" conversion): (r 19595 + g 38470 + b 7471 + 0x8000) >> 16. */
function luma(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
}

/** The image rotated by `degrees` (counter-clockwise) about its centre, nearest neighbour, outside pixels = fill. */
export function rotateNearest(image: RgbImage, degrees: number, fill = 0): RgbImage {
  const { width: w, height: h, data } = image;
  const out = new Uint8Array(w * h * 3);
  const rad = (degrees * Math.PI) / 180;
  const cos = Math.cos(rad);
  const sin = Math.sin(rad);
  const cx = w / 2;
  const cy = h / 2;
  for (let y = 0; y < h; y++) {
    const dy = y + 0.5 - cy;
    for (let x = 0; x < w; x++) {
      const dx = x + 0.5 - cx;
      // Output -> input: the inverse rotation (PIL rotates by -angle in its y-down frame).
      const u = cos * dx - sin * dy + cx;
      const v = sin * dx + cos * dy + cy;
      const o = (y * w + x) * 3;
      if (u < 0 || v < 0 || u >= w || v >= h) {
        out[o] = out[o + 1] = out[o + 2] = fill;
        continue;
      }
      const i = ((v | 0) * w + (u | 0)) * 3;
      out[o] = data[i];
      out[o + 1] = data[i + 1];
      out[o + 2] = data[i + 2];
    }
  }
  return { data: out, width: w, height: h };
}

/** RandomRotation(degrees): one angle from [-degrees, degrees], then rotateNearest. */
export function randomRotation(image: RgbImage, degrees: number, rng: Random): RgbImage {
  return rotateNearest(image, rng.uniform(-degrees, degrees));
}

/** PIL's Image.blend(a, b, alpha) = a + alpha (b - a), truncated and clipped to 8 bits, per byte. */
function blendInto(base: Uint8Array | number, img: Uint8Array, alpha: number): void {
  for (let i = 0; i < img.length; i++) {
    const a = typeof base === 'number' ? base : base[i];
    img[i] = clip8(a + alpha * (img[i] - a));
  }
}

function grey(img: Uint8Array): Uint8Array {
  const out = new Uint8Array(img.length);
  for (let i = 0; i < img.length; i += 3) out[i] = out[i + 1] = out[i + 2] = luma(img[i], img[i + 1], img[i + 2]);
  return out;
}

/** PIL's RGB -> HSV -> hue shifted by `shift` (8-bit, wrapping) -> RGB, in place. */
function shiftHue(img: Uint8Array, shift: number): void {
  for (let i = 0; i < img.length; i += 3) {
    const r = img[i];
    const g = img[i + 1];
    const b = img[i + 2];
    const maxc = Math.max(r, g, b);
    const minc = Math.min(r, g, b);
    if (maxc === minc) continue; // grey: hue 0, saturation 0, unchanged by any shift
    const cr = maxc - minc;
    const s = cr / maxc;
    const rc = (maxc - r) / cr;
    const gc = (maxc - g) / cr;
    const bc = (maxc - b) / cr;
    let hh = r === maxc ? bc - gc : g === maxc ? 2 + rc - bc : 4 + gc - rc;
    hh = (((hh / 6 + 1) % 1) + 1) % 1;
    const h8 = (clip8(hh * 255) + shift) & 255;
    const s8 = clip8(s * 255);
    // HSV (8-bit) -> RGB as PIL's hsv2rgb.
    const hf = (h8 * 6) / 255;
    const sf = s8 / 255;
    const v = maxc;
    const k = Math.floor(hf);
    const f = hf - k;
    const p = clip8(Math.round(v * (1 - sf)));
    const q = clip8(Math.round(v * (1 - sf * f)));
    const t = clip8(Math.round(v * (1 - sf * (1 - f))));
    const rgb = [
      [v, t, p],
      [q, v, p],
      [p, v, t],
      [p, q, v],
      [t, p, v],
      [v, p, q],
    ][k % 6];
    img[i] = rgb[0];
    img[i + 1] = rgb[1];
    img[i + 2] = rgb[2];
  }
}

/** ColorJitter(brightness, contrast, saturation, hue) on 8-bit RGB pixels, in place. */
export function colorJitter(img: Uint8Array, amount: { brightness: number; contrast: number; saturation: number; hue: number }, rng: Random): void {
  const order = rng.shuffle([0, 1, 2, 3]);
  const b = rng.uniform(1 - amount.brightness, 1 + amount.brightness);
  const c = rng.uniform(1 - amount.contrast, 1 + amount.contrast);
  const s = rng.uniform(1 - amount.saturation, 1 + amount.saturation);
  const h = rng.uniform(-amount.hue, amount.hue);
  for (const op of order) {
    if (op === 0) blendInto(0, img, b);
    else if (op === 1) {
      let sum = 0;
      for (let i = 0; i < img.length; i += 3) sum += luma(img[i], img[i + 1], img[i + 2]);
      blendInto(Math.floor(sum / (img.length / 3) + 0.5), img, c);
    } else if (op === 2) blendInto(grey(img), img, s);
    else shiftHue(img, Math.trunc(h * 255) & 255);
  }
}

export const CUTMIX_AREA: readonly [number, number] = [0.02, 0.15];
export const CUTMIX_ASPECT = 0.3;
export const CUTMIX_JITTER = 0.1;

/** Where CutMix cut its patch and where it pasted it (left, top, width, height in pixels). */
export interface CutMixBoxes {
  from: [number, number];
  to: [number, number];
  width: number;
  height: number;
}

/** DRA's CutMix pseudo-anomaly: a jittered patch of the image pasted elsewhere on it (a new image). */
export function cutMix(image: RgbImage, rng: Random): { image: RgbImage; boxes: CutMixBoxes } {
  const { width: w, height: h, data } = image;
  const area = rng.uniform(CUTMIX_AREA[0], CUTMIX_AREA[1]) * w * h;
  const aspect = Math.exp(rng.uniform(Math.log(CUTMIX_ASPECT), Math.log(1 / CUTMIX_ASPECT)));
  const cw = Math.min(w, roundHalfEven(Math.sqrt(area * aspect)));
  const ch = Math.min(h, roundHalfEven(Math.sqrt(area / aspect)));
  const fromY = Math.trunc(rng.uniform(0, h - ch));
  const fromX = Math.trunc(rng.uniform(0, w - cw));
  const patch = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) patch.set(data.subarray(((fromY + y) * w + fromX) * 3, ((fromY + y) * w + fromX + cw) * 3), y * cw * 3);
  colorJitter(patch, { brightness: CUTMIX_JITTER, contrast: CUTMIX_JITTER, saturation: CUTMIX_JITTER, hue: CUTMIX_JITTER }, rng);
  const toY = Math.trunc(rng.uniform(0, h - ch));
  const toX = Math.trunc(rng.uniform(0, w - cw));
  const out = data.slice();
  for (let y = 0; y < ch; y++) out.set(patch.subarray(y * cw * 3, (y + 1) * cw * 3), ((toY + y) * w + toX) * 3);
  return { image: { data: out, width: w, height: h }, boxes: { from: [fromX, fromY], to: [toX, toY], width: cw, height: ch } };
}
