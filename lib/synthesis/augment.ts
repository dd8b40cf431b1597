/**
 * The ten texture augmenters of DRAEM's data_loader.py (imgaug), on 8-bit RGB pixels held as a Float32Array (HWC,
 * values 0..255, rounded and clipped after every operation as imgaug's uint8 images are). Three distinct ones are
 * drawn per texture and applied in the drawn order (np.random.choice(10, 3, replace=False)). Parameters as the
 * official's: where imgaug's internals are only approximated, the comment says how (docs/anomaly-synthesis.md).
 */
import type { Random } from '../prng';
import { rotate } from './perlin';

const Math = globalThis.Math;

/** An RGB image, HWC, values 0..255 (integers after every augmenter). */
export interface Rgb8 {
  data: Float32Array;
  width: number;
  height: number;
}

function round8(data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    const v = Math.round(data[i]);
    data[i] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
}

/** A per-channel lookup table applied to every pixel. */
function applyLut(img: Rgb8, luts: Float32Array[]): void {
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    d[i] = luts[0][d[i]];
    d[i + 1] = luts[1][d[i + 1]];
    d[i + 2] = luts[2][d[i + 2]];
  }
}

// RGB <-> HSV with H in degrees [0, 360), S and V in 0..255 (OpenCV's convention, hue kept continuous).
export function rgbToHsv(r: number, g: number, b: number): [number, number, number] {
  const max = Math.max(r, g, b);
  const min = Math.min(r, g, b);
  const d = max - min;
  let h = 0;
  if (d > 0) {
    if (max === r) h = 60 * (((g - b) / d) % 6);
    else if (max === g) h = 60 * ((b - r) / d + 2);
    else h = 60 * ((r - g) / d + 4);
  }
  if (h < 0) h += 360;
  return [h, max === 0 ? 0 : (255 * d) / max, max];
}

export function hsvToRgb(h: number, s: number, v: number): [number, number, number] {
  const c = (v * s) / 255;
  const hp = (((h % 360) + 360) % 360) / 60;
  const x = c * (1 - Math.abs((hp % 2) - 1));
  let r = 0;
  let g = 0;
  let b = 0;
  if (hp < 1) [r, g, b] = [c, x, 0];
  else if (hp < 2) [r, g, b] = [x, c, 0];
  else if (hp < 3) [r, g, b] = [0, c, x];
  else if (hp < 4) [r, g, b] = [0, x, c];
  else if (hp < 5) [r, g, b] = [x, 0, c];
  else [r, g, b] = [c, 0, x];
  const m = v - c;
  return [r + m, g + m, b + m];
}

export type Augmenter = (img: Rgb8, rng: Random) => void;

/** iaa.GammaContrast((0.5, 2.0), per_channel=True): 255 * (v / 255)^gamma, one gamma per channel. */
const gammaContrast: Augmenter = (img, rng) => {
  const luts = [0, 1, 2].map(() => {
    const g = rng.uniform(0.5, 2);
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) lut[v] = Math.round(255 * Math.pow(v / 255, g));
    return lut;
  });
  applyLut(img, luts);
};

/**
 * iaa.MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30)): the brightness channel is multiplied, then an
 * integer is added. imgaug picks YCrCb's Y or HSV's V at random; here always the luma Y = 0.299 R + 0.587 G +
 * 0.114 B, changed by adding the change of Y to each of R, G, B (Cr and Cb stay as they were).
 */
const multiplyAndAddToBrightness: Augmenter = (img, rng) => {
  const mul = rng.uniform(0.8, 1.2);
  const add = -30 + rng.int(61);
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    const yNew = Math.min(255, Math.max(0, Math.round(y * mul) + add));
    const dy = yNew - y;
    d[i] += dy;
    d[i + 1] += dy;
    d[i + 2] += dy;
  }
  round8(d);
};

/**
 * iaa.pillike.EnhanceSharpness(factor=(0.0, 2.0)): PIL's ImageEnhance.Sharpness: the blend degenerate + factor *
 * (image - degenerate), where degenerate is the image smoothed with [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 inside and
 * the image itself on the 1-pixel border.
 */
const enhanceSharpness: Augmenter = (img, rng) => {
  const factor = rng.uniform(0, 2);
  const { width: w, height: h } = img;
  const src = img.data.slice();
  const d = img.data;
  for (let y = 1; y < h - 1; y++) {
    for (let x = 1; x < w - 1; x++) {
      for (let c = 0; c < 3; c++) {
        const o = (y * w + x) * 3 + c;
        let sum = 4 * src[o];
        for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) sum += src[o + (dy * w + dx) * 3];
        const degenerate = Math.round(sum / 13);
        d[o] = degenerate + factor * (src[o] - degenerate);
      }
    }
  }
  round8(d);
};

/**
 * iaa.AddToHueAndSaturation((-50, 50), per_channel=True): one integer for the hue and one for the saturation. As
 * imgaug, the hue value is on a 0..255 scale for the full circle (v * 360 / 255 degrees), the saturation value is
 * added to S in 0..255 and clipped.
 */
const addToHueAndSaturation: Augmenter = (img, rng) => {
  const dh = ((-50 + rng.int(101)) * 360) / 255;
  const ds = -50 + rng.int(101);
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    const [h, s, v] = rgbToHsv(d[i], d[i + 1], d[i + 2]);
    const [r, g, b] = hsvToRgb(h + dh, Math.min(255, Math.max(0, s + ds)), v);
    d[i] = r;
    d[i + 1] = g;
    d[i + 2] = b;
  }
  round8(d);
};

/** iaa.Solarize(0.5, threshold=(32, 128)): with probability 0.5, values at or above the threshold are inverted. */
const solarize: Augmenter = (img, rng) => {
  const apply = rng.bool(0.5);
  const t = rng.uniform(32, 128);
  if (!apply) return;
  const d = img.data;
  for (let i = 0; i < d.length; i++) if (d[i] >= t) d[i] = 255 - d[i];
};

/** iaa.Posterize(): nb_bits in 1..8 (imgaug's default range); only the top nb_bits bits of each value are kept. */
const posterize: Augmenter = (img, rng) => {
  const bits = 1 + rng.int(8);
  const mask = (0xff << (8 - bits)) & 0xff;
  const d = img.data;
  for (let i = 0; i < d.length; i++) d[i] = d[i] & mask;
};

/** iaa.Invert(): 255 - v (imgaug's default probability 1). */
const invert: Augmenter = (img) => {
  const d = img.data;
  for (let i = 0; i < d.length; i++) d[i] = 255 - d[i];
};

/** Per-channel histograms (256 bins). */
function histograms(img: Rgb8): Float64Array[] {
  const hs = [new Float64Array(256), new Float64Array(256), new Float64Array(256)];
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    hs[0][d[i]]++;
    hs[1][d[i + 1]]++;
    hs[2][d[i + 2]]++;
  }
  return hs;
}

/**
 * iaa.pillike.Autocontrast(cutoff=(0, 20)): PIL's ImageOps.autocontrast per channel: an integer cutoff percentage of
 * the pixels is cut from each end of the histogram, the remaining range [lo, hi] is stretched to 0..255.
 */
const autocontrast: Augmenter = (img, rng) => {
  const cutoff = rng.int(21);
  const luts = histograms(img).map((hist) => {
    const h = Float64Array.from(hist);
    const n = h.reduce((a, b) => a + b, 0);
    let cut = Math.floor((n * cutoff) / 100);
    for (let lo = 0; lo < 256 && cut > 0; lo++) {
      const take = Math.min(cut, h[lo]);
      h[lo] -= take;
      cut -= take;
    }
    cut = Math.floor((n * cutoff) / 100);
    for (let hi = 255; hi >= 0 && cut > 0; hi--) {
      const take = Math.min(cut, h[hi]);
      h[hi] -= take;
      cut -= take;
    }
    let lo = 0;
    while (lo < 256 && h[lo] === 0) lo++;
    let hi = 255;
    while (hi >= 0 && h[hi] === 0) hi--;
    const lut = new Float32Array(256);
    if (hi <= lo) {
      for (let v = 0; v < 256; v++) lut[v] = v;
    } else {
      const scale = 255 / (hi - lo);
      const offset = -lo * scale;
      for (let v = 0; v < 256; v++) lut[v] = Math.min(255, Math.max(0, Math.floor(v * scale + offset)));
    }
    return lut;
  });
  applyLut(img, luts);
};

/** iaa.pillike.Equalize(): PIL's ImageOps.equalize per channel. */
const equalize: Augmenter = (img) => {
  const luts = histograms(img).map((h) => {
    const lut = new Float32Array(256);
    const nonzero: number[] = [];
    for (let v = 0; v < 256; v++) if (h[v] > 0) nonzero.push(h[v]);
    const step = nonzero.length === 0 ? 0 : Math.floor((nonzero.reduce((a, b) => a + b, 0) - nonzero[nonzero.length - 1]) / 255);
    if (step === 0) {
      for (let v = 0; v < 256; v++) lut[v] = v;
      return lut;
    }
    let n = Math.floor(step / 2);
    for (let v = 0; v < 256; v++) {
      lut[v] = Math.min(255, Math.floor(n / step));
      n += h[v];
    }
    return lut;
  });
  applyLut(img, luts);
};

/** iaa.Affine(rotate=(-45, 45)): bilinear rotation about the centre, black outside. */
const affineRotate: Augmenter = (img, rng) => {
  const angle = rng.uniform(-45, 45);
  img.data = rotate(img.data, img.height, img.width, 3, angle, 0);
  round8(img.data);
};

/** The ten augmenters, in the official list's order. */
export const AUGMENTERS: ReadonlyArray<{ name: string; apply: Augmenter }> = [
  { name: 'gamma', apply: gammaContrast },
  { name: 'brightness', apply: multiplyAndAddToBrightness },
  { name: 'sharpness', apply: enhanceSharpness },
  { name: 'hue-saturation', apply: addToHueAndSaturation },
  { name: 'solarize', apply: solarize },
  { name: 'posterize', apply: posterize },
  { name: 'invert', apply: invert },
  { name: 'autocontrast', apply: autocontrast },
  { name: 'equalize', apply: equalize },
  { name: 'rotate', apply: affineRotate },
];

/** Draws 3 distinct augmenters (in drawn order) and applies them; returns their names. */
export function augmentTexture(img: Rgb8, rng: Random, count = 3): string[] {
  const order = rng.shuffle(AUGMENTERS.map((_, i) => i)).slice(0, count);
  for (const i of order) AUGMENTERS[i].apply(img, rng);
  return order.map((i) => AUGMENTERS[i].name);
}
