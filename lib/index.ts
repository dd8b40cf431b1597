/** imiad's public API. */
export { version } from './version';
export type { Device } from '../bindings/validate';
export { hasCode, type ImiadError } from '../bindings/errors';
export {
  loadBackbone,
  resolveLayers,
  type Backbone,
  type BackboneTiming,
  type FeatureMap,
  type LoadBackboneOptions,
} from './backbone/session';
export { BACKBONE_SHAPES, backboneStages, buildBackboneModel, defaultBackboneFile, type BackboneShape } from './backbone/builder';
export {
  adaptiveAvgPool1d,
  gatherChannels,
  gaussianBlur,
  neighbourhoodAverage,
  patchEmbedding,
  resizeBilinear,
  resizeFeatureMap,
  type FeatureMapLike,
  type PatchEmbedding,
  type PatchEmbeddingOptions,
} from '../bindings/filters';
export { gaussianFit, gaussianStateBytes, mahalanobisDistances, type GaussianState, type GaussianFitOptions } from '../bindings/gaussian';
