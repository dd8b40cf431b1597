/**
 * CFA (Lee et al. 2022, "Coupled-hypersphere-based Feature Adaptation") after its official code
 * sungwool/CFA_for_anomaly_localization; the network in native/train/feature_heads.cc. CFA reads the backbone's
 * PRE-activation outputs of layers 1..3 (its ResNet moves each block's ReLU to the block input): with imiad's
 * default backbone, and with torchvision models exported by torch.onnx, those are the residual sums before the last
 * ReLU of each stage, the node outputs named `/layer1/layer1.1/Add`, `/layer2/layer2.1/Add`, `/layer3/layer3.1/Add`
 * (ResNet-18) or `/layer1/layer1.2/Add`, `/layer2/layer2.3/Add`, `/layer3/layer3.5/Add` (WRN-50-2).
 *
 * Defaults (IM-IAD Table V = open-iad): ResNet-18, 256 px (no crop), batch 4, 50 epochs, AdamW lr 1e-3, weight
 * decay 5e-4, amsgrad; K = 3, J = 3, nu = 1e-3, alpha = 0.1, gamma_c = gamma_d = 1. Map: softmin-weighted distance
 * to the nearest centres, upsampled (align_corners=False), Gaussian blur sigma 4; image score = the map's maximum.
 * The official min-max over all test maps is left out: it is transductive and does not change any ranking.
 */
import type { BackboneShape } from '../backbone/builder';
import type { Nchw } from '../../bindings/train/train';
import { FrozenFeatureHead, type FrozenHeadParams } from './frozen-head';

export type CfaParams = FrozenHeadParams;

/** The pre-activation taps of layers 1..3 of the default backbone shapes (and of torchvision ONNX exports). */
export const CFA_LAYERS: Record<BackboneShape, string[]> = {
  resnet18: ['/layer1/layer1.1/Add', '/layer2/layer2.1/Add', '/layer3/layer3.1/Add'],
  wide_resnet50_2: ['/layer1/layer1.2/Add', '/layer2/layer2.3/Add', '/layer3/layer3.5/Add'],
};

export class Cfa extends FrozenFeatureHead {
  readonly name = 'cfa';

  constructor(params: CfaParams = {}) {
    const shape = params.backboneShape ?? 'resnet18';
    super(params, {
      kind: 'cfa',
      label: 'CFA',
      shape: 'resnet18',
      layers: CFA_LAYERS[shape] ?? CFA_LAYERS.resnet18,
      imageSize: 256,
      batchSize: 4,
      epochs: 50,
      lr: 1e-3,
      weightDecay: 5e-4,
      sigma: 4,
    });
  }

  protected override calibration(): 'before' {
    return 'before';
  }

  protected extra(shapes: Nchw['shape'][]): Record<string, number[]> {
    return { sides: [shapes[0][2], shapes[0][3]], k: [3], j: [3], nu: [1e-3], alpha: [0.1] };
  }
}
