/**
 * The memory layout of each detector's trainable ResNet-18 (native/train/resnet18.h, ModelConfig extra
 * `channelsLast`). Channels-last (NHWC strides) runs oneDNN's NHWC kernels; whether that is faster depends on the
 * shapes, so it was measured per detector with `npm run bench -- layout` (imiad against itself, same weights and
 * batches; docs/training-speed.md): CutPaste's steps (batches of 48 views at 128-224 px) and RegAD's (96 images at
 * 224 px) gain, DevNet's and DRA's (12 images, two scales) do not, and keep torchvision's NCHW. The two layouts compute
 * the same functions with sums in another order (float rounding).
 *
 * IMIAD_TRAIN_LAYOUT=nchw|channels-last overrides the table for every detector (the benches and tests compare the
 * layouts with it); read when a model is built.
 */
export type TrainLayout = 'channels-last' | 'nchw';

export type ResNetTrainer = 'cutpaste' | 'regad' | 'devnet' | 'dra';

export const RESNET_LAYOUTS: Readonly<Record<ResNetTrainer, TrainLayout>> = { cutpaste: 'channels-last', regad: 'channels-last', devnet: 'nchw', dra: 'nchw' };

/** The layout `trainer` builds its ResNet-18 in now (the table, or IMIAD_TRAIN_LAYOUT). */
export function resnetLayout(trainer: ResNetTrainer): TrainLayout {
  const forced = process.env.IMIAD_TRAIN_LAYOUT;
  if (forced === undefined || forced === '') return RESNET_LAYOUTS[trainer];
  if (forced !== 'nchw' && forced !== 'channels-last') throw new Error(`IMIAD_TRAIN_LAYOUT: expected nchw or channels-last but received ${forced}`);
  return forced;
}

/** The model config's `extra` entry for that layout. */
export function resnetLayoutExtra(trainer: ResNetTrainer): { channelsLast: number[] } {
  return { channelsLast: [resnetLayout(trainer) === 'channels-last' ? 1 : 0] };
}
