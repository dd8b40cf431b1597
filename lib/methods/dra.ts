/**
 * DRA ("Catching Both Gray and Black Swans", Choubo/DRA; network and losses in native/train/dra.cc, training loop in
 * lib/methods/deviation.ts): DevNet's fine-tuned ResNet-18 with four heads (holistic normality, seen anomaly,
 * pseudo anomaly, composite residual against 5 reference normals), each a deviation loss; balanced batches of 2/3
 * normal and 1/3 labelled anomalous images (batch 48, 20 steps per epoch), of which each normal slot becomes, with
 * probability 1/2, a CutMix pseudo-anomaly of a random normal image (label 2; lib/image/cutmix.ts), all rotated by
 * RandomRotation(180); 5 reference normals from their own stream open every batch. Adam 2e-4 with weight decay 1e-5,
 * StepLR(10, 0.1) stepped at the start of each epoch as the official loop does, the gradients' norm clipped to 1, 30
 * epochs. Score = -holistic + seen + pseudo + composite, against 5 reference normals fixed after training.
 * The heads are trained with the backbone and pseudo-anomalies are made (open-iad's port does neither).
 * Needs labelled anomalies: the supervised setting. Image scores only.
 */
import type { RgbImage } from '../image/cutmix';
import { cutMix } from '../image/cutmix';
import type { Random } from '../prng';
import { DeviationDetector, type DeviationParams } from './deviation';

export type DraParams = DeviationParams;

/** Reference normal images of DRA's composite head (nRef). */
export const DRA_REFERENCES = 5;

export class Dra extends DeviationDetector {
  readonly name = 'dra';
  constructor(params: DraParams = {}) {
    super(params, { kind: 'dra', label: 'DRA', epochs: 30, normalNumerator: 2, normalDenominator: 3, referenceRows: 4, decayShift: 1, referenceImages: DRA_REFERENCES });
  }

  /** MVTecAD.__getitem__ of the official code: with probability 1/2 a CutMix of a random normal image, label 2. */
  protected override normalSlot(normals: RgbImage[], index: number, rng: Random): { image: RgbImage; label: number } {
    if (rng.next() < 0.5) return { image: cutMix(normals[rng.int(normals.length)], rng).image, label: 2 };
    return { image: normals[index], label: 0 };
  }
}
