/** imiad's public API. */
export { version } from './version';
export type { Device } from '../bindings/validate';
export { hasCode, type ImiadError } from '../bindings/errors';
export { greedyCoreset, defaultStartIndex, type GreedyCoresetOptions } from '../bindings/coreset';
export { KnnIndex, knnSearch, type KnnResult, type KnnIndexOptions, type KnnSearchOptions, type KnnSearchOneShotOptions } from '../bindings/knn';
export * from './datasets';
export * from './image';
export { synthesize, SYNTH_LAYOUTS, type SynthLayout, type SynthOptions } from './datasets/synth';
export { inspectDataset, type CategoryStats, type DatasetStats } from './datasets/inspect';
export { Random } from './prng';
// forgettingMeasure (strict) and forgettingMeasureWithGaps come from lib/metrics, the one implementation.
export {
  SETTING_NAMES, AUGMENT_KINDS, PAPER_SHOTS, PAPER_NOISE_RATIOS, NOISE_CAP_FRACTION, DEFAULT_SUPERVISED_ANOMALIES, DEFAULT_AUGMENT_COUNT,
  vanillaSplit, supervisedSplit, fewshotSplit, noisySplit, noiseCount, continualTasks, finalAverage, manifestOf,
  buildManifest, categorySplit, settingSpec, settingLabel, requireSettingName,
  type SettingName, type AugmentKind, type SettingSpec, type ManifestEntry, type SplitInfo, type CategoryManifest,
  type SettingManifest, type SplitSample, type CategorySplit, type SettingOptions,
} from './settings';
export { entryImage, augmentSpecFor, AUGMENT_SPECS } from './settings/augment';
export * from './runner';
export { writeReport, allTables, reportData, toMarkdown, toCsv, toLatex, toHtml, type ReportTable, type ReportFiles, type Figure } from './report';
export * from './metrics';
export {
  createDetector,
  METHOD_NAMES,
  METHODS,
  findMethod,
  type MethodEntry,
  type ContinualMode,
  type InputNormalisation,
  PatchCore,
  PatchCoreScorer,
  reweightFactor,
  Padim,
  Spade,
  Dne,
  type MethodName,
  type MethodParams,
  type PatchCoreParams,
  type PadimParams,
  type SpadeParams,
  type DneParams,
  type BackboneParams,
  type Detector,
  type Prediction as DetectorPrediction,
  type RunOptions,
  type FitOptions,
  type Timing,
} from './methods';
// Trained detectors (libtorch addon, optional) and checkpoints of every detector.
export {
  Stpm,
  Rd4ad,
  type TeacherStudentParams,
  Cfa,
  type CfaParams,
  CFlow,
  type CFlowParams,
  CsFlow,
  type CsFlowParams,
  FastFlow,
  type FastFlowParams,
  CutPasteDetector,
  type CutPasteParams,
  DevNet,
  type DevNetParams,
  Bgad,
  type BgadParams,
  Dra,
  type DraParams,
  Regad,
  type RegadParams,
  type MetaTrainCategory,
  Draem,
  type DraemParams,
  Favae,
  type FavaeParams,
  Igd,
  type IgdParams,
  Gcad,
  type GcadParams,
  SemiRest,
  type SemiRestParams,
  Prn,
  type PrnParams,
  PositionBank,
  TRAINED_METHODS,
  readCheckpoint,
  writeCheckpoint,
  type Checkpoint,
  type DetectorState,
  type TrainingStats,
} from './methods';
// Anomaly synthesis (DRAEM-style Perlin masks and textures), reusable by any method that trains on pseudo-anomalies.
export { AnomalySynthesiser, listTextures, perlinNoise, type SynthesisOptions, type SynthesisedSample } from './synthesis';
export { trainingAvailable, trainAddonPath, TrainModel } from '../bindings/train/train';
export { runExperiment, type ExperimentOptions, type ExperimentResult, type ExperimentMetrics, type ExperimentEfficiency } from './runner/experiment';
export {
  loadBackbone,
  resolveLayers,
  type Backbone,
  type BackboneTiming,
  type FeatureMap,
  type LoadBackboneOptions,
} from './backbone/session';
export { BACKBONE_SHAPES, backboneStages, buildBackboneModel, defaultBackboneFile, type BackboneShape } from './backbone/builder';
export { resnet18Weights, type ResNetWeights, type WeightTensor } from './backbone/resnet-weights';
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
export * from './stats';
export { loadDetector, type LoadedDetector, type ImagePrediction, type PredictOptions, type Decision } from './methods/load';
export { f1OptimalThreshold, quantileThreshold, NORMAL_QUANTILE, type DecisionThreshold, type ThresholdSource } from './metrics/threshold';
export { gaussianAccumulate, gaussianFactor, runningGaussian, runningGaussianBytes, type RunningGaussian } from '../bindings/gaussian';
