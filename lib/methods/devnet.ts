/**
 * DevNet (Deviation Networks, image version: Choubo/deviation-network-image; network and loss in
 * native/train/devnet.cc, training loop in lib/methods/deviation.ts): a ResNet-18 fine-tuned end to end with a 1x1
 * scoring head, top-10 % multiple-instance score at two input scales (448 and 224 px), the deviation loss against
 * 5000 N(0, 1) reference draws with margin 5, balanced batches of 24 normal and 24 labelled anomalous images (20
 * steps per epoch, RandomRotation(180)), Adam 2e-4 with weight decay 1e-5, StepLR(10, 0.1) after each epoch, the
 * gradients' norm clipped to 1, 50 epochs. The head is trained with the backbone (open-iad's port leaves it random).
 * Needs labelled anomalies: the supervised setting. Image scores only.
 */
import { DeviationDetector, type DeviationParams } from './deviation';

export type DevNetParams = DeviationParams;

export class DevNet extends DeviationDetector {
  readonly name = 'devnet';
  constructor(params: DevNetParams = {}) {
    super(params, { kind: 'devnet', label: 'DevNet', epochs: 50, normalNumerator: 1, normalDenominator: 2, referenceRows: 1, decayShift: 0, referenceImages: 0 });
  }
}
