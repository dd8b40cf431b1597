/** lib/image: decoding, the preprocessing pipeline, masks and augmentations. */
export { decodeImage, readImageSize, toRgb, type ImageSize } from './decode';
export { decodeRaw, readMask, readMaskUnion, readMaskWithValue, emptyMask, type BinaryMask, type RawImage } from './mask';
export {
  batches,
  geometryFor,
  loadBatch,
  loadMaskBatch,
  mapToOriginal,
  maskToCrop,
  prepareImage,
  prepareRaw,
  rawBatch,
  IMAGENET_MEAN,
  IMAGENET_STD,
  type BatchOptions,
  type Geometry,
  type ImageBatch,
  type InverseOptions,
  type PreparedImage,
  type PreprocessOptions,
} from './pipeline';
export { applyAugmentation, augmentVariants, sampleAugmentation, transformMatrix, IDENTITY, type AugmentParams, type AugmentSpec, type Augmented } from './augment';
