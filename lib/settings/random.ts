/**
 * The seeded choices of the settings: a small PRNG (mulberry32) and a Fisher-Yates shuffle. Every random choice of a
 * split is derived from (seed, category, purpose) by an FNV-1a hash, so that adding a category or a setting never
 * changes the files chosen for another one.
 */

/** FNV-1a, 32-bit, over the UTF-16 code units of the parts joined by '\0'. */
export function hashString(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  const text = parts.map(String).join('\0');
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** mulberry32: uniform floats in [0, 1) from a 32-bit state. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A shuffled copy (Fisher-Yates, from the last element down). */
export function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}

/** The PRNG for one purpose of one category under one seed. */
export function randomFor(seed: number, category: string, purpose: string): () => number {
  return mulberry32(hashString(seed, category, purpose));
}
