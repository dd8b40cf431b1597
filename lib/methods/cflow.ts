/**
 * CFlow (CFLOW-AD, Gudovskiy et al. 2022) after its official code gudovskiy/cflow-ad (FrEIA pinned at cc5cf5e): per
 * tapped level one conditional flow of 8 coupling blocks over the feature vectors, conditioned on a 2-D sin/cos
 * positional encoding (P = 128), clamp 1.9, random orthogonal permutations; fibers shuffled and fed in chunks of 256
 * with one Adam step per chunk; the network in native/train/flows.cc. Defaults (official): WRN-50-2 layers 2..4,
 * 256 px (no crop), batch 32 with drop_last, Adam lr 2e-4 with 2 meta-epochs of linear warm-up from lr/10, then a
 * cosine per meta-epoch down to lr 1e-3; 25 meta-epochs x 8 sub-epochs. `epochs` counts meta-epochs.
 *
 * Map: per level exp(log p / C - m_l), m_l the maximum over the TRAINING normals (fixed after training; the
 * official code takes it over the test set), upsampled bilinearly (align_corners=True) and summed; map = levels -
 * sum (the official subtracts the sum from its test-set maximum: a constant, the same ranking). Not blurred; image
 * score = the map's maximum.
 */
import { invalidType } from '../../bindings/errors';
import type { Nchw } from '../../bindings/train/train';
import { optionalInt } from './features';
import { FrozenFeatureHead, type FrozenHeadParams } from './frozen-head';

export interface CFlowParams extends FrozenHeadParams {
  /** Sub-epochs per meta-epoch (default 8). */
  subEpochs?: number;
  /** Coupling blocks per level (default 8). */
  blocks?: number;
  /** Positional encoding channels (default 128, a multiple of 4). */
  condition?: number;
  /** Fibers per optimiser step (default 256). */
  fibers?: number;
}

export class CFlow extends FrozenFeatureHead {
  readonly name = 'cflow';
  readonly subEpochs: number;
  readonly blocks: number;
  readonly condition: number;
  readonly fibers: number;

  constructor(params: CFlowParams = {}) {
    super(params, {
      kind: 'cflow',
      label: 'CFlow',
      shape: 'wide_resnet50_2',
      layers: ['layer2', 'layer3', 'layer4'],
      imageSize: 256,
      batchSize: 32,
      epochs: 25,
      lr: 2e-4,
      weightDecay: 0,
      sigma: 0,
    });
    this.subEpochs = optionalInt(params.subEpochs, 'subEpochs', 1, 10_000, 8);
    this.blocks = optionalInt(params.blocks, 'blocks', 1, 64, 8);
    this.condition = optionalInt(params.condition, 'condition', 4, 4096, 128);
    if (this.condition % 4 !== 0) throw invalidType('multiple of 4', 'condition', params.condition);
    this.fibers = optionalInt(params.fibers, 'fibers', 1, 1 << 20, 256);
  }

  protected override passes(): number {
    return this.epochs * this.subEpochs;
  }

  protected override dropLast(): boolean {
    return true;
  }

  protected override calibration(): 'after' {
    return 'after';
  }

  protected extra(_shapes: Nchw['shape'][], stepsPerEpoch: number): Record<string, number[]> {
    return {
      blocks: [this.blocks],
      clamp: [1.9],
      condition: [this.condition],
      fibers: [this.fibers],
      schedule: [stepsPerEpoch, this.epochs, this.subEpochs, 2],
    };
  }
}
