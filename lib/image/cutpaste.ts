/**
 * CutPaste's self-supervised views (Li et al., CVPR 2021; LilitYolyan/CutPaste cutpaste.py and
 * Runinho/pytorch-cutpaste CutPasteNormal / CutPasteScar / CutPaste3Way, which open-iad copied): from one training
 * image, colour-jittered as a whole (ColorJitter 0.1 of brightness, contrast, saturation and hue, the train
 * transform), three views of the same image:
 * - normal: the jittered image;
 * - cut-paste: a rectangle of 2-15 % of the area, aspect ratio log-uniform in [0.3, 1/0.3], cut at a uniform place,
 *   colour-jittered (0.1) and pasted at another uniform place of the same image;
 * - scar: a thin rectangle of width U(2, 16) and height U(10, 25) pixels, cut, colour-jittered, rotated by U(-45, 45)
 *   degrees (PIL rotate with expand, nearest neighbour; only the rotated rectangle's own pixels are pasted) and
 *   pasted at a uniform place.
 * Every draw comes from the Random it is given (the detector forks one per image from its seed, the fit, the epoch
 * and the image's place in the batch), so the same seed gives the same views. Images are planar RGB [3, s, s] in
 * [0, 1]; the detector converts from and to its ImageNet-normalised batches. Not done: open-iad's RandomRotation(90)
 * of every view (neither the paper nor Runinho rotate whole images; industrial categories are not rotation-invariant).
 */
import type { Random } from '../prng';

// Module-level binding: hot loops then avoid global lookups, which are slow inside vm contexts (jest).
const Math = globalThis.Math;

/** A planar RGB image [3, height, width] in [0, 1]. */
export interface PlanarImage {
  data: Float32Array;
  width: number;
  height: number;
}

export interface CutPasteViews {
  normal: Float32Array;
  cutPaste: Float32Array;
  scar: Float32Array;
}

const clamp01 = (v: number): number => (v < 0 ? 0 : v > 1 ? 1 : v);

function grey(r: number, g: number, b: number): number {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

/** Hue rotation by `shift` (a fraction of the circle) through HSV, as torchvision's adjust_hue. */
function shiftHue(img: PlanarImage, shift: number): void {
  const { data, width, height } = img;
  const plane = width * height;
  for (let i = 0; i < plane; i++) {
    const r = data[i];
    const g = data[plane + i];
    const b = data[2 * plane + i];
    const max = Math.max(r, g, b);
    const min = Math.min(r, g, b);
    const delta = max - min;
    if (delta === 0) continue; // grey: hue has no effect
    let h: number;
    if (max === r) h = ((g - b) / delta) % 6;
    else if (max === g) h = (b - r) / delta + 2;
    else h = (r - g) / delta + 4;
    h = h / 6 + shift;
    h -= Math.floor(h);
    const s = delta / max;
    const v = max;
    const h6 = h * 6;
    const sector = Math.floor(h6) % 6;
    const f = h6 - Math.floor(h6);
    const p = v * (1 - s);
    const q = v * (1 - s * f);
    const t = v * (1 - s * (1 - f));
    const rgb = [
      [v, t, p],
      [q, v, p],
      [p, v, t],
      [p, q, v],
      [t, p, v],
      [v, p, q],
    ][sector];
    data[i] = rgb[0];
    data[plane + i] = rgb[1];
    data[2 * plane + i] = rgb[2];
  }
}

/**
 * torchvision's ColorJitter(strength, strength, strength, strength) in place: brightness, contrast, saturation and
 * hue factors drawn from [1 - s, 1 + s] (hue [-s, s]) and applied in a random order, each result clamped to [0, 1].
 */
export function colorJitter(img: PlanarImage, strength: number, rng: Random): void {
  const order = rng.shuffle([0, 1, 2, 3]);
  const brightness = rng.uniform(1 - strength, 1 + strength);
  const contrast = rng.uniform(1 - strength, 1 + strength);
  const saturation = rng.uniform(1 - strength, 1 + strength);
  const hue = rng.uniform(-strength, strength);
  const { data } = img;
  const plane = img.width * img.height;
  for (const op of order) {
    if (op === 0) {
      for (let i = 0; i < data.length; i++) data[i] = clamp01(data[i] * brightness);
    } else if (op === 1) {
      let mean = 0;
      for (let i = 0; i < plane; i++) mean += grey(data[i], data[plane + i], data[2 * plane + i]);
      mean /= plane;
      for (let i = 0; i < data.length; i++) data[i] = clamp01(data[i] * contrast + mean * (1 - contrast));
    } else if (op === 2) {
      for (let i = 0; i < plane; i++) {
        const y = grey(data[i], data[plane + i], data[2 * plane + i]) * (1 - saturation);
        data[i] = clamp01(data[i] * saturation + y);
        data[plane + i] = clamp01(data[plane + i] * saturation + y);
        data[2 * plane + i] = clamp01(data[2 * plane + i] * saturation + y);
      }
    } else {
      shiftHue(img, hue);
    }
  }
}

function crop(img: PlanarImage, x: number, y: number, w: number, h: number): PlanarImage {
  const out = new Float32Array(3 * w * h);
  for (let c = 0; c < 3; c++) {
    for (let r = 0; r < h; r++) {
      const from = c * img.width * img.height + (y + r) * img.width + x;
      out.set(img.data.subarray(from, from + w), c * w * h + r * w);
    }
  }
  return { data: out, width: w, height: h };
}

/** Pastes `patch` at (x, y); where `alpha` is given, only its nonzero pixels. */
function paste(dst: Float32Array, width: number, height: number, patch: PlanarImage, x: number, y: number, alpha?: Uint8Array): void {
  const pw = patch.width;
  const ph = patch.height;
  for (let r = 0; r < ph; r++) {
    const yy = y + r;
    if (yy < 0 || yy >= height) continue;
    for (let k = 0; k < pw; k++) {
      const xx = x + k;
      if (xx < 0 || xx >= width || (alpha && alpha[r * pw + k] === 0)) continue;
      for (let c = 0; c < 3; c++) dst[c * width * height + yy * width + xx] = patch.data[c * pw * ph + r * pw + k];
    }
  }
}

/** PIL's Image.rotate(angle, expand=True) with nearest neighbour, plus the mask of pixels that come from the patch. */
function rotateExpand(img: PlanarImage, degrees: number): { image: PlanarImage; alpha: Uint8Array } {
  const a = (degrees * Math.PI) / 180;
  const cos = Math.cos(a);
  const sin = Math.sin(a);
  const w = img.width;
  const h = img.height;
  // The rotated corners' bounding box (PIL: counter-clockwise for a positive angle, y pointing down).
  const xs = [0, w, w, 0].map((x, i) => x * cos + [0, 0, h, h][i] * sin);
  const ys = [0, w, w, 0].map((x, i) => -x * sin + [0, 0, h, h][i] * cos);
  const nw = Math.max(1, Math.ceil(Math.max(...xs) - Math.min(...xs) - 1e-9));
  const nh = Math.max(1, Math.ceil(Math.max(...ys) - Math.min(...ys) - 1e-9));
  const out = new Float32Array(3 * nw * nh);
  const alpha = new Uint8Array(nw * nh);
  for (let y = 0; y < nh; y++) {
    for (let x = 0; x < nw; x++) {
      // Inverse mapping of the output pixel's centre about the centres of both images.
      const dx = x + 0.5 - nw / 2;
      const dy = y + 0.5 - nh / 2;
      const sx = Math.floor(dx * cos - dy * sin + w / 2);
      const sy = Math.floor(dx * sin + dy * cos + h / 2);
      if (sx < 0 || sx >= w || sy < 0 || sy >= h) continue;
      alpha[y * nw + x] = 1;
      for (let c = 0; c < 3; c++) out[c * nw * nh + y * nw + x] = img.data[c * w * h + sy * w + sx];
    }
  }
  return { image: { data: out, width: nw, height: nh }, alpha };
}

const JITTER = 0.1;

/** The three views of one image (see the top of this file); `image` is not modified. */
export function cutPasteViews(image: PlanarImage, rng: Random): CutPasteViews {
  const { width, height } = image;
  const base: PlanarImage = { data: Float32Array.from(image.data), width, height };
  colorJitter(base, JITTER, rng);

  // CutPasteNormal
  const area = rng.uniform(0.02, 0.15) * width * height;
  const aspect = Math.exp(rng.uniform(Math.log(0.3), Math.log(1 / 0.3)));
  const cutW = Math.min(width, Math.max(1, Math.round(Math.sqrt(area * aspect))));
  const cutH = Math.min(height, Math.max(1, Math.round(Math.sqrt(area / aspect))));
  const fromX = Math.floor(rng.uniform(0, width - cutW));
  const fromY = Math.floor(rng.uniform(0, height - cutH));
  const patch = crop(base, fromX, fromY, cutW, cutH);
  colorJitter(patch, JITTER, rng);
  const toX = Math.floor(rng.uniform(0, width - cutW));
  const toY = Math.floor(rng.uniform(0, height - cutH));
  const cutPaste = Float32Array.from(base.data);
  paste(cutPaste, width, height, patch, toX, toY);

  // CutPasteScar: the box's float corners rounded as PIL's crop rounds them.
  const scarW = rng.uniform(2, 16);
  const scarH = rng.uniform(10, 25);
  const sx = Math.floor(rng.uniform(0, Math.max(0, width - scarW)));
  const sy = Math.floor(rng.uniform(0, Math.max(0, height - scarH)));
  const sw = Math.max(1, Math.min(width, Math.round(sx + scarW)) - sx);
  const sh = Math.max(1, Math.min(height, Math.round(sy + scarH)) - sy);
  const scarPatch = crop(base, sx, sy, sw, sh);
  colorJitter(scarPatch, JITTER, rng);
  const rotated = rotateExpand(scarPatch, rng.uniform(-45, 45));
  const px = Math.floor(rng.uniform(0, Math.max(0, width - rotated.image.width)));
  const py = Math.floor(rng.uniform(0, Math.max(0, height - rotated.image.height)));
  const scar = Float32Array.from(base.data);
  paste(scar, width, height, rotated.image, px, py, rotated.alpha);

  return { normal: base.data, cutPaste, scar };
}
