/**
 * From a few-shot manifest entry's `augment: { kind, seed }` to the augmented image: each kind maps to one
 * lib/image/augment.ts spec (torchvision-like ranges, chosen here since the paper does not give them; README,
 * "Settings"), and the copy's own seed draws its parameters, so a manifest names every copy exactly.
 */
import { decodeImage } from '../image/decode';
import { augmentVariants, type AugmentSpec } from '../image/augment';
import type { RawImage } from '../image/mask';
import type { AugmentKind, ManifestEntry } from './types';

export const AUGMENT_SPECS: Record<AugmentKind, AugmentSpec> = {
  // Industrial parts (screws, nuts) stay valid under any rotation: the full circle.
  rotation: { rotation: 180 },
  flip: { hflip: 0.5, vflip: 0.5 },
  scale: { scale: [0.8, 1.2] },
  translate: { translate: 0.1 },
  colorjitter: { brightness: 0.2, contrast: 0.2 },
  perspective: { perspective: 0.3 },
};

export function augmentSpecFor(kind: AugmentKind): AugmentSpec {
  return AUGMENT_SPECS[kind];
}

/** The pixels a training entry stands for: the image itself, or its augmented copy. */
export async function entryImage(entry: ManifestEntry): Promise<RawImage> {
  const image = await decodeImage(entry.path);
  if (!entry.augment) return image;
  return augmentVariants(image, augmentSpecFor(entry.augment.kind), { count: 1, seed: entry.augment.seed })[0].image;
}
