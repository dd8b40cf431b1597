/**
 * CS-Flow (Rudolph et al. 2022, "Fully Convolutional Cross-Scale-Flows") after its official code
 * marco-rudolph/cs-flow; the network in native/train/flows.cc. The backbone sees each image at three scales (the
 * crop, then nearest downsamplings by 2 and 4); one tapped level per scale feeds 4 cross-scale coupling blocks
 * (kernels 3, 3, 3, 5; hidden 1024; clamp 3; e(s) = exp(3 * 0.636 * atan(s / 3))). Defaults (IM-IAD Table V =
 * official): 768 px, batch 16, 240 epochs, Adam lr 2e-4, eps 1e-4, weight decay 1e-5, gradient norm clipped to 1.
 * Image score = mean z^2 over all dims; map = product over scales of mean_c z^2, upsampled bilinearly, not blurred
 * (the official code has no map; this is anomalib's, so that pixel metrics exist).
 *
 * The official tap is EfficientNet-B5's block 35 (304 channels, stride 32): give such an ONNX file with --backbone
 * and its node name with --layers. With the default backbone, ResNet-18's `layer4` (512 channels, stride 32) stands
 * in: the same stride, so the same 24 / 12 / 6 feature sides at 768 px, but 512 channels instead of 304, which makes
 * the head larger (about 460 M parameters at hidden 1024). `hidden` is the documented narrower option for CPU
 * machines: the parameter count scales with it (hidden 256: about a quarter).
 */
import { invalidRange } from '../../bindings/errors';
import { optionalInt } from './features';
import { FrozenFeatureHead, type FrozenHeadParams } from './frozen-head';

export interface CsFlowParams extends FrozenHeadParams {
  /** Cross-scale coupling blocks (default 4). */
  blocks?: number;
  /** Hidden channels of the subnets (default 1024, the official; smaller for CPU machines). */
  hidden?: number;
}

/** Strides of the default backbone's stage outputs. */
const STAGE_STRIDE: Record<string, number> = { layer1: 4, layer2: 8, layer3: 16, layer4: 32 };

export class CsFlow extends FrozenFeatureHead {
  readonly name = 'csflow';
  readonly blocks: number;
  readonly hidden: number;

  constructor(params: CsFlowParams = {}) {
    super(params, { kind: 'csflow', label: 'CS-Flow', shape: 'resnet18', layers: ['layer4'], imageSize: 768, batchSize: 16, epochs: 240, lr: 2e-4, weightDecay: 1e-5, sigma: 0 });
    if (this.params.layers.length !== 1) throw invalidRange('one layer name (CS-Flow taps one level at three scales)', 'layers', this.params.layers);
    const stride = params.backbone === undefined ? STAGE_STRIDE[this.params.layers[0]] : undefined;
    const crop = this.params.cropSize;
    if (stride !== undefined && crop % (4 * stride) !== 0) {
      const lower = Math.max(4 * stride, crop - (crop % (4 * stride)));
      throw invalidRange(
        `a multiple of ${4 * stride} (CS-Flow's three scales must halve the ${this.params.layers[0]} sides exactly; e.g. ${lower} or ${lower + 4 * stride})`,
        'cropSize',
        crop,
      );
    }
    this.blocks = optionalInt(params.blocks, 'blocks', 1, 4, 4);
    this.hidden = optionalInt(params.hidden, 'hidden', 1, 8192, 1024);
  }

  protected override inputScales(): number {
    return 3;
  }

  protected extra(): Record<string, number[]> {
    return { blocks: [this.blocks], hidden: [this.hidden], clamp: [3], kernels: [3, 3, 3, 5], eps: [1e-4], clipNorm: [1] };
  }
}
