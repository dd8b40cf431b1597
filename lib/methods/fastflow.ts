/**
 * FastFlow (Yu et al. 2021) as gathierry/FastFlow implements it (the official code was never released; open-iad
 * copies gathierry): per tapped level a LayerNorm([c, h, w]) with affine weights, then 8 affine coupling blocks with
 * conv subnets (3x3 / 1x1 alternating, hidden ratio 1, clamp 2, hard permutation); the network in
 * native/train/flows.cc. Defaults (IM-IAD Table V = open-iad = gathierry): ResNet-18 layers 1..3, 256 px (no crop),
 * batch 32, Adam lr 1e-3, weight decay 1e-5, 500 epochs. Map = mean over levels of -exp(-0.5 mean_c z^2) upsampled
 * bilinearly (align_corners=False), not blurred; image score = the map's maximum (open-iad, anomalib).
 */
import { invalidRange, invalidType } from '../../bindings/errors';
import type { Nchw } from '../../bindings/train/train';
import { FrozenFeatureHead, type FrozenHeadParams } from './frozen-head';

export interface FastFlowParams extends FrozenHeadParams {
  /** Coupling blocks per level (default 8). */
  blocks?: number;
  /** Affine clamping (default 2). */
  clamp?: number;
}

const LAYERS = ['layer1', 'layer2', 'layer3'];
/** The stride of the default backbone's layer3: the LayerNorm is built for sides s/4, s/8, s/16. */
const DEEPEST_STRIDE = 16;

export class FastFlow extends FrozenFeatureHead {
  readonly name = 'fastflow';
  readonly blocks: number;
  readonly clamp: number;

  constructor(params: FastFlowParams = {}) {
    super(params, { kind: 'fastflow', label: 'FastFlow', shape: 'resnet18', layers: LAYERS, imageSize: 256, batchSize: 32, epochs: 500, lr: 1e-3, weightDecay: 1e-5, sigma: 0 });
    const crop = this.params.cropSize;
    const defaultTaps = params.backbone === undefined && this.params.layers.every((l) => LAYERS.includes(l));
    if (defaultTaps && crop % DEEPEST_STRIDE !== 0) {
      const lower = Math.max(DEEPEST_STRIDE, crop - (crop % DEEPEST_STRIDE));
      throw invalidRange(
        `a multiple of ${DEEPEST_STRIDE} (FastFlow's LayerNorm fixes the feature sides to s/4, s/8, s/16; e.g. ${lower} or ${lower + DEEPEST_STRIDE})`,
        'cropSize',
        crop,
      );
    }
    if (params.blocks !== undefined && !(Number.isInteger(params.blocks) && params.blocks >= 1 && params.blocks <= 64)) throw invalidType('integer between 1 and 64', 'blocks', params.blocks);
    this.blocks = params.blocks ?? 8;
    if (params.clamp !== undefined && !(typeof params.clamp === 'number' && params.clamp > 0 && Number.isFinite(params.clamp))) throw invalidType('positive number', 'clamp', params.clamp);
    this.clamp = params.clamp ?? 2;
  }

  protected extra(shapes: Nchw['shape'][]): Record<string, number[]> {
    return { sides: shapes.flatMap((s) => [s[2], s[3]]), blocks: [this.blocks], clamp: [this.clamp] };
  }
}
