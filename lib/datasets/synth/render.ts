/**
 * Procedural scenes and defects for `imiad synth`. A scene is a texture (woven, grid, leather, wood) or an object
 * on a background (disc, screw, bottle, tray of parts); the category fixes its look (palette, period, pose), the
 * image seed its phase, jitter, lighting and sensor noise. Defects (scratch, hole, stain, crack) are drawn with
 * hard edges, so the ground-truth mask is exactly the set of pixels a defect changed (clipped to the object).
 * Everything is a function of the PRNG streams handed in: same seed, same pixels.
 */
import { Random } from '../../prng';

// Module-level bindings: hot loops then avoid global lookups, which are slow inside vm contexts (jest).
const Math = globalThis.Math;

export type SceneKind = 'woven' | 'grid' | 'leather' | 'wood' | 'disc' | 'screw' | 'bottle' | 'tray';
export type DefectKind = 'scratch' | 'hole' | 'stain' | 'crack';

export const TEXTURE_KINDS: readonly SceneKind[] = ['woven', 'grid', 'leather', 'wood'];

/** Interleaved RGB in [0, 1], width * height * 3. */
export interface Canvas {
  width: number;
  height: number;
  data: Float32Array;
}

/** What the category fixes for all its images. */
export interface CategoryStyle {
  kind: SceneKind;
  grey: boolean;
  dark: [number, number, number];
  light: [number, number, number];
  /** Pattern period in pixels at a 128-pixel image (scaled with the image). */
  period: number;
  /** Base orientation of objects, radians. */
  angle: number;
  /** Colours of the tray's parts (LOCO). */
  partColours: Array<[number, number, number]>;
}

export interface Part {
  x: number;
  y: number;
  radius: number;
}

export interface Scene {
  canvas: Canvas;
  /** Where defects may lie (1) — the object, or the whole texture inside a margin. */
  region: Uint8Array;
  /** Tray slots (LOCO): centre and radius of each part. */
  slots: Part[];
}

// ---------------------------------------------------------------------------------------------- noise

function hash2(ix: number, iy: number, seed: number): number {
  let h = Math.imul(ix, 0x27d4eb2d) ^ Math.imul(iy, 0x165667b1) ^ Math.imul(seed, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

function smooth(t: number): number {
  return t * t * (3 - 2 * t);
}

/** Value noise in [0, 1) on an integer lattice. */
export function valueNoise(x: number, y: number, seed: number): number {
  const ix = Math.floor(x);
  const iy = Math.floor(y);
  const fx = smooth(x - ix);
  const fy = smooth(y - iy);
  const a = hash2(ix, iy, seed);
  const b = hash2(ix + 1, iy, seed);
  const c = hash2(ix, iy + 1, seed);
  const d = hash2(ix + 1, iy + 1, seed);
  return a + (b - a) * fx + (c - a) * fy + (a - b - c + d) * fx * fy;
}

export function fbm(x: number, y: number, seed: number, octaves = 4): number {
  let sum = 0;
  let amp = 0.5;
  let norm = 0;
  for (let o = 0; o < octaves; o++) {
    sum += amp * valueNoise(x, y, seed + o * 1013);
    norm += amp;
    x *= 2.03;
    y *= 2.03;
    amp *= 0.5;
  }
  return sum / norm;
}

// ---------------------------------------------------------------------------------------------- styles

const PALETTES: Record<SceneKind, { dark: [number, number, number]; light: [number, number, number]; grey: boolean }> = {
  woven: { dark: [0.3, 0.27, 0.22], light: [0.86, 0.8, 0.68], grey: false },
  grid: { dark: [0.12, 0.12, 0.12], light: [0.74, 0.74, 0.74], grey: true },
  leather: { dark: [0.28, 0.16, 0.09], light: [0.62, 0.42, 0.27], grey: false },
  wood: { dark: [0.42, 0.25, 0.12], light: [0.78, 0.58, 0.36], grey: false },
  disc: { dark: [0.1, 0.1, 0.11], light: [0.78, 0.77, 0.74], grey: false },
  screw: { dark: [0.16, 0.16, 0.16], light: [0.86, 0.86, 0.86], grey: true },
  bottle: { dark: [0.05, 0.06, 0.05], light: [0.45, 0.55, 0.35], grey: false },
  tray: { dark: [0.45, 0.47, 0.5], light: [0.82, 0.83, 0.85], grey: false },
};

export function categoryStyle(kind: SceneKind, rng: Random, forceGrey = false): CategoryStyle {
  const p = PALETTES[kind];
  const jitter = (c: [number, number, number]): [number, number, number] => {
    const d = rng.uniform(-0.04, 0.04);
    return [clamp01(c[0] + d), clamp01(c[1] + d), clamp01(c[2] + d)];
  };
  const periods: Record<SceneKind, [number, number]> = {
    woven: [9, 12],
    grid: [11, 14],
    leather: [14, 20],
    wood: [10, 14],
    disc: [1, 1],
    screw: [5, 6],
    bottle: [1, 1],
    tray: [1, 1],
  };
  const [pmin, pmax] = periods[kind];
  return {
    kind,
    grey: forceGrey || p.grey,
    dark: jitter(p.dark),
    light: jitter(p.light),
    period: rng.uniform(pmin, pmax),
    angle: rng.uniform(-0.5, 0.5),
    partColours: [
      [0.85, 0.15, 0.12],
      [0.12, 0.35, 0.8],
      [0.95, 0.78, 0.1],
      [0.15, 0.65, 0.25],
    ],
  };
}

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

// ---------------------------------------------------------------------------------------------- scenes

function newCanvas(width: number, height: number): Canvas {
  return { width, height, data: new Float32Array(width * height * 3) };
}

function put(c: Canvas, i: number, style: CategoryStyle, v: number): void {
  const t = clamp01(v);
  const p = i * 3;
  c.data[p] = style.dark[0] + (style.light[0] - style.dark[0]) * t;
  c.data[p + 1] = style.dark[1] + (style.light[1] - style.dark[1]) * t;
  c.data[p + 2] = style.dark[2] + (style.light[2] - style.dark[2]) * t;
}

function putRgb(c: Canvas, i: number, r: number, g: number, b: number): void {
  const p = i * 3;
  c.data[p] = r;
  c.data[p + 1] = g;
  c.data[p + 2] = b;
}

/** The central box (margin `m` of each side) where defects are placed, so that a centre crop keeps them. */
function marginRegion(w: number, h: number, m = 0.12): Uint8Array {
  const r = new Uint8Array(w * h);
  const x0 = Math.floor(w * m);
  const x1 = Math.ceil(w * (1 - m));
  const y0 = Math.floor(h * m);
  const y1 = Math.ceil(h * (1 - m));
  for (let y = y0; y < y1; y++) r.fill(1, y * w + x0, y * w + x1);
  return r;
}

export function renderScene(style: CategoryStyle, width: number, height: number, rng: Random, opts: { omitSlots?: number[] } = {}): Scene {
  const c = newCanvas(width, height);
  const s = Math.min(width, height) / 128;
  const seed = rng.nextUint32() | 0;
  const ox = rng.uniform(0, 1000);
  const oy = rng.uniform(0, 1000);
  let region = marginRegion(width, height);
  const slots: Part[] = [];
  const period = style.period * s;
  switch (style.kind) {
    case 'woven':
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const u = (x + ox) / period;
          const v = (y + oy) / period;
          const parity = (Math.floor(u) + Math.floor(v)) & 1;
          const prof = parity ? Math.sin(Math.PI * (v - Math.floor(v))) : Math.sin(Math.PI * (u - Math.floor(u)));
          put(c, y * width + x, style, 0.25 + 0.65 * Math.pow(Math.max(0, prof), 0.7) + 0.12 * (valueNoise(x / (3 * s), y / (3 * s), seed) - 0.5));
        }
      break;
    case 'grid':
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const gx = (x + ox) % period;
          const gy = (y + oy) % period;
          const line = gx < 2.2 * s || gy < 2.2 * s;
          put(c, y * width + x, style, (line ? 0.12 : 0.82) + 0.1 * (valueNoise(x / (6 * s), y / (6 * s), seed) - 0.5));
        }
      break;
    case 'leather':
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const base = fbm((x + ox) / period, (y + oy) / period, seed, 4);
          const grain = valueNoise((x + ox) / (1.6 * s), (y + oy) / (1.6 * s), seed + 7);
          put(c, y * width + x, style, 0.2 + 0.8 * base + 0.18 * (grain - 0.5));
        }
      break;
    case 'wood':
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const warp = 10 * s * fbm((x + ox) / (40 * s), (y + oy) / (12 * s), seed, 3);
          const t = (y + oy + warp) / period;
          const ring = 0.5 + 0.5 * Math.sin(2 * Math.PI * t);
          put(c, y * width + x, style, 0.3 + 0.5 * ring * ring + 0.15 * (valueNoise(x / (8 * s), y / (1.5 * s), seed + 3) - 0.5));
        }
      break;
    case 'disc':
    case 'bottle': {
      const m = Math.min(width, height);
      const cx = width / 2 + rng.uniform(-0.015, 0.015) * m;
      const cy = height / 2 + rng.uniform(-0.015, 0.015) * m;
      const R = (style.kind === 'disc' ? 0.36 : 0.4) * m;
      const light = style.angle + rng.uniform(-0.15, 0.15);
      region = new Uint8Array(width * height);
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const i = y * width + x;
          const dx = x + 0.5 - cx;
          const dy = y + 0.5 - cy;
          const r = Math.hypot(dx, dy) / R;
          const a = Math.atan2(dy, dx);
          const bg = 0.12 + 0.08 * (valueNoise(x / (10 * s), y / (10 * s), seed) - 0.5);
          if (style.kind === 'disc') {
            if (r > 1 || r < 0.32) put(c, i, style, bg);
            else {
              const shade = 0.55 + 0.25 * Math.cos(a - light) * (r - 0.3) + 0.15 * Math.cos(12 * a) * (r > 0.82 ? 1 : 0);
              put(c, i, style, shade + 0.06 * (valueNoise(x / (2 * s), y / (2 * s), seed + 5) - 0.5));
              if (r > 0.4 && r < 0.92) region[i] = 1;
            }
          } else if (r > 1) put(c, i, style, bg * 0.6);
          else {
            const glass = r > 0.72 ? 0.55 + 0.3 * (1 - Math.abs(r - 0.86) / 0.14) : r > 0.28 ? 0.28 + 0.05 * Math.cos(a - light) : 0.6 - r;
            put(c, i, style, glass + 0.05 * (valueNoise(x / (3 * s), y / (3 * s), seed + 9) - 0.5));
            if (r < 0.93) region[i] = 1;
          }
        }
      break;
    }
    case 'screw': {
      const m = Math.min(width, height);
      const cx = width / 2 + rng.uniform(-0.02, 0.02) * m;
      const cy = height / 2 + rng.uniform(-0.02, 0.02) * m;
      const angle = style.angle + rng.uniform(-0.2, 0.2);
      const half = 0.3 * m;
      const radius = 0.075 * m;
      const headR = 0.12 * m;
      const ca = Math.cos(angle);
      const sa = Math.sin(angle);
      region = new Uint8Array(width * height);
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const i = y * width + x;
          const dx = x + 0.5 - cx;
          const dy = y + 0.5 - cy;
          const along = dx * ca + dy * sa;
          const across = -dx * sa + dy * ca;
          const inShaft = Math.abs(along) <= half && Math.abs(across) <= radius * (along > half - radius ? Math.max(0.2, (half - along) / radius) : 1);
          const hx = along + half;
          const inHead = Math.hypot(hx, across) <= headR;
          const bg = 0.86 + 0.06 * (valueNoise(x / (12 * s), y / (12 * s), seed) - 0.5);
          if (inHead) put(c, i, style, 0.3 + 0.15 * (1 - Math.hypot(hx, across) / headR));
          else if (inShaft) {
            const thread = 0.5 + 0.5 * Math.sin((2 * Math.PI * along) / period);
            put(c, i, style, 0.22 + 0.22 * thread + 0.1 * (1 - Math.abs(across) / radius));
            if (Math.abs(along) < half * 0.85) region[i] = 1;
          } else put(c, i, style, bg);
        }
      break;
    }
    case 'tray': {
      const m = Math.min(width, height);
      const border = 0.07 * m;
      const count = 3;
      const radius = 0.12 * m;
      for (let k = 0; k < count; k++) {
        slots.push({
          x: width * ((k + 1) / (count + 1)) + rng.uniform(-0.012, 0.012) * m,
          y: height * 0.42 + rng.uniform(-0.012, 0.012) * m,
          radius,
        });
      }
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const i = y * width + x;
          const edge = x < border || y < border || x >= width - border || y >= height - border;
          put(c, i, style, (edge ? 0.15 : 0.85) + 0.06 * (valueNoise(x / (9 * s), y / (9 * s), seed) - 0.5));
        }
      slots.forEach((slot, k) => {
        if (opts.omitSlots?.includes(k)) return;
        drawPart(c, slot, style.partColours[k % style.partColours.length], seed + k);
      });
      region = marginRegion(width, height, 0.12);
      break;
    }
  }
  // Lighting drift and sensor noise: normal images differ a little, as real captures do.
  const gain = 1 + rng.uniform(-0.03, 0.03);
  const noiseSeed = rng.nextUint32() | 0;
  for (let i = 0; i < width * height; i++) {
    const n = (hash2(i, 17, noiseSeed) + hash2(i, 29, noiseSeed) - 1) * 0.025;
    for (let k = 0; k < 3; k++) c.data[i * 3 + k] = clamp01(c.data[i * 3 + k] * gain + n);
  }
  if (style.grey) toGrey(c);
  return { canvas: c, region, slots };
}

/** A part of the LOCO tray: a coloured disc with a rim and a highlight. */
export function drawPart(c: Canvas, part: Part, colour: [number, number, number], seed: number): Uint8Array {
  const mask = new Uint8Array(c.width * c.height);
  const { x0, x1, y0, y1 } = bbox(c, part.x, part.y, part.radius + 1);
  for (let y = y0; y < y1; y++)
    for (let x = x0; x < x1; x++) {
      const d = Math.hypot(x + 0.5 - part.x, y + 0.5 - part.y) / part.radius;
      if (d > 1) continue;
      const i = y * c.width + x;
      const shade = d > 0.85 ? 0.6 : 1 - 0.25 * d + 0.05 * (valueNoise(x / 2, y / 2, seed) - 0.5);
      putRgb(c, i, clamp01(colour[0] * shade), clamp01(colour[1] * shade), clamp01(colour[2] * shade));
      mask[i] = 1;
    }
  return mask;
}

function toGrey(c: Canvas): void {
  for (let i = 0; i < c.width * c.height; i++) {
    const p = i * 3;
    const v = 0.299 * c.data[p] + 0.587 * c.data[p + 1] + 0.114 * c.data[p + 2];
    c.data[p] = v;
    c.data[p + 1] = v;
    c.data[p + 2] = v;
  }
}

function bbox(c: Canvas, x: number, y: number, r: number): { x0: number; x1: number; y0: number; y1: number } {
  return {
    x0: Math.max(0, Math.floor(x - r)),
    x1: Math.min(c.width, Math.ceil(x + r) + 1),
    y0: Math.max(0, Math.floor(y - r)),
    y1: Math.min(c.height, Math.ceil(y + r) + 1),
  };
}

// ---------------------------------------------------------------------------------------------- defects

/** A random pixel of the region (rejection sampling, then a scan as the fallback). */
function pointIn(region: Uint8Array, w: number, h: number, rng: Random): [number, number] {
  for (let t = 0; t < 2000; t++) {
    const x = rng.int(w);
    const y = rng.int(h);
    if (region[y * w + x]) return [x + 0.5, y + 0.5];
  }
  const i = region.indexOf(1);
  return i < 0 ? [w / 2, h / 2] : [(i % w) + 0.5, Math.floor(i / w) + 0.5];
}

function segmentDistance(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const vx = bx - ax;
  const vy = by - ay;
  const len2 = vx * vx + vy * vy;
  const t = len2 > 0 ? Math.max(0, Math.min(1, ((px - ax) * vx + (py - ay) * vy) / len2)) : 0;
  return Math.hypot(px - ax - t * vx, py - ay - t * vy);
}

/** Pixels within width/2 of a polyline. */
function strokeMask(w: number, h: number, points: Array<[number, number]>, width: number): Uint8Array {
  const mask = new Uint8Array(w * h);
  const r = width / 2;
  for (let k = 0; k + 1 < points.length; k++) {
    const [ax, ay] = points[k];
    const [bx, by] = points[k + 1];
    const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - r - 1));
    const x1 = Math.min(w, Math.ceil(Math.max(ax, bx) + r + 1));
    const y0 = Math.max(0, Math.floor(Math.min(ay, by) - r - 1));
    const y1 = Math.min(h, Math.ceil(Math.max(ay, by) + r + 1));
    for (let y = y0; y < y1; y++)
      for (let x = x0; x < x1; x++) if (segmentDistance(x + 0.5, y + 0.5, ax, ay, bx, by) <= r) mask[y * w + x] = 1;
  }
  return mask;
}

function meanIntensity(c: Canvas, mask: Uint8Array): number {
  let sum = 0;
  let n = 0;
  for (let i = 0; i < mask.length; i++)
    if (mask[i]) {
      sum += (c.data[i * 3] + c.data[i * 3 + 1] + c.data[i * 3 + 2]) / 3;
      n++;
    }
  return n > 0 ? sum / n : 0.5;
}

/** The defect's shape around a point of the region, before clipping to the region. */
function defectShape(c: Canvas, region: Uint8Array, kind: DefectKind, rng: Random): { mask: Uint8Array; px: number; py: number } {
  const { width: w, height: h } = c;
  const s = Math.min(w, h) / 128;
  const [px, py] = pointIn(region, w, h, rng);
  let mask: Uint8Array;
  switch (kind) {
    case 'scratch': {
      const angle = rng.uniform(0, Math.PI);
      const len = rng.uniform(0.22, 0.34) * Math.min(w, h);
      const bend = rng.uniform(-0.25, 0.25);
      const pts: Array<[number, number]> = [];
      for (let k = 0; k <= 4; k++) {
        const t = k / 4 - 0.5;
        const a = angle + bend * t;
        pts.push([px + Math.cos(a) * len * t, py + Math.sin(a) * len * t]);
      }
      mask = strokeMask(w, h, pts, Math.max(2, 2.4 * s));
      break;
    }
    case 'crack': {
      const pts: Array<[number, number]> = [[px, py]];
      let a = rng.uniform(0, 2 * Math.PI);
      const steps = Math.round(rng.uniform(9, 13));
      const step = 3.2 * s;
      let [x, y] = [px, py];
      for (let k = 0; k < steps; k++) {
        a += rng.uniform(-0.7, 0.7);
        x += Math.cos(a) * step;
        y += Math.sin(a) * step;
        pts.push([x, y]);
      }
      mask = strokeMask(w, h, pts, Math.max(2, 2 * s));
      const from = pts[Math.floor(steps / 2)];
      const branch: Array<[number, number]> = [from];
      let b = a + rng.uniform(0.8, 1.4) * (rng.bool() ? 1 : -1);
      [x, y] = from;
      for (let k = 0; k < Math.floor(steps / 2); k++) {
        b += rng.uniform(-0.5, 0.5);
        x += Math.cos(b) * step;
        y += Math.sin(b) * step;
        branch.push([x, y]);
      }
      const m2 = strokeMask(w, h, branch, Math.max(1.5, 1.6 * s));
      for (let i = 0; i < mask.length; i++) mask[i] |= m2[i];
      break;
    }
    case 'hole': {
      const r = rng.uniform(0.045, 0.065) * Math.min(w, h);
      mask = new Uint8Array(w * h);
      const { x0, x1, y0, y1 } = bbox(c, px, py, r + 1);
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (Math.hypot(x + 0.5 - px, y + 0.5 - py) <= r) mask[y * w + x] = 1;
      break;
    }
    case 'stain': {
      const r0 = rng.uniform(0.07, 0.1) * Math.min(w, h);
      const seed = rng.nextUint32() | 0;
      mask = new Uint8Array(w * h);
      const { x0, x1, y0, y1 } = bbox(c, px, py, r0 * 1.4 + 1);
      for (let y = y0; y < y1; y++)
        for (let x = x0; x < x1; x++) {
          const dx = x + 0.5 - px;
          const dy = y + 0.5 - py;
          const a = Math.atan2(dy, dx);
          const rr = r0 * (0.8 + 0.5 * valueNoise(2 + 1.5 * Math.cos(a), 2 + 1.5 * Math.sin(a), seed));
          if (Math.hypot(dx, dy) <= rr) mask[y * w + x] = 1;
        }
      break;
    }
  }
  return { mask, px, py };
}

/**
 * Draws one defect inside `region` and returns its exact mask (the pixels it changed). Sizes scale with the
 * image; contrast is chosen against the local brightness so that every defect is plainly visible.
 */
export function drawDefect(c: Canvas, region: Uint8Array, kind: DefectKind, rng: Random, grey: boolean): Uint8Array {
  const { width: w, height: h } = c;
  const s = Math.min(w, h) / 128;
  // A shape that mostly leaves the region (an object's rim, the margin) is drawn again elsewhere.
  let best = defectShape(c, region, kind, rng);
  let bestKept = -1;
  for (let attempt = 0; attempt < 12; attempt++) {
    const candidate = attempt === 0 ? best : defectShape(c, region, kind, rng);
    let total = 0;
    let kept = 0;
    for (let i = 0; i < candidate.mask.length; i++) {
      total += candidate.mask[i];
      kept += candidate.mask[i] & region[i];
    }
    const fraction = total > 0 ? kept / total : 0;
    if (fraction > bestKept) {
      best = candidate;
      bestKept = fraction;
    }
    if (fraction >= 0.9) break;
  }
  const { mask, px, py } = best;
  for (let i = 0; i < mask.length; i++) mask[i] &= region[i];
  if (mask.indexOf(1) < 0) {
    // The region was too thin for the drawn shape: mark the seed pixel so the defect is never empty.
    mask[Math.floor(py) * w + Math.floor(px)] = 1;
  }
  const local = meanIntensity(c, mask);
  const bright = local < 0.5;
  const meanDark = local < 0.4;
  const seed = rng.nextUint32() | 0;
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    const p = i * 3;
    const x = i % w;
    const y = Math.floor(i / w);
    const n = 0.06 * (valueNoise(x / (1.5 * s), y / (1.5 * s), seed) - 0.5);
    switch (kind) {
      case 'scratch':
      case 'crack':
      case 'hole': {
        const v = flatLevel(kind, bright, meanDark);
        c.data[p] = clamp01(v + n);
        c.data[p + 1] = clamp01(v + n);
        c.data[p + 2] = clamp01(v + n);
        break;
      }
      case 'stain': {
        if (grey) {
          // Without colour a stain is a blotch: dark on light surfaces, light on dark ones, with the texture faintly through.
          for (let k = 0; k < 3; k++) c.data[p + k] = clamp01((bright ? 0.6 : 0) + 0.3 * c.data[p + k] + n);
          break;
        }
        const tint: [number, number, number] = [0.55, 0.22, 0.1];
        const add = bright ? 0.45 : 0;
        for (let k = 0; k < 3; k++) c.data[p + k] = clamp01(c.data[p + k] * tint[k] + add * tint[k] + n);
        break;
      }
    }
  }
  if (grey) toGrey(c);
  return mask;
}

/** The flat grey level a scratch, crack or hole is painted with, by the surface's mean intensity around it. */
function flatLevel(kind: 'scratch' | 'crack' | 'hole', bright: boolean, meanDark: boolean): number {
  if (kind === 'scratch') return bright ? 0.95 : 0.06;
  // Dark on bright surfaces; on dark ones a crack shows as a bright, light-catching edge.
  if (kind === 'crack') return meanDark ? 0.92 : 0.03;
  return bright ? 0.9 : 0.02;
}

/** A disc mask (LOCO: the place of a missing part, or an extra part). */
export function discMask(w: number, h: number, part: Part, scale = 1): Uint8Array {
  const mask = new Uint8Array(w * h);
  const r = part.radius * scale;
  for (let y = Math.max(0, Math.floor(part.y - r)); y < Math.min(h, Math.ceil(part.y + r) + 1); y++)
    for (let x = Math.max(0, Math.floor(part.x - r)); x < Math.min(w, Math.ceil(part.x + r) + 1); x++)
      if (Math.hypot(x + 0.5 - part.x, y + 0.5 - part.y) <= r) mask[y * w + x] = 1;
  return mask;
}

/** 8-bit pixels of a canvas: 3 interleaved channels, or 1 for grey categories. */
export function toBytes(c: Canvas, grey: boolean): Uint8Array {
  const n = c.width * c.height;
  if (grey) {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.round(c.data[i * 3] * 255);
    return out;
  }
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n * 3; i++) out[i] = Math.round(c.data[i] * 255);
  return out;
}
