/** lib/runner: experiments, the results store, the grid and the heatmap PNGs the report's Fig. 3 shows. */
export * from './types';
export { ResultsStore, DEFAULT_STORE, machineDescription } from './store';
export { experimentKey, canonicalJson } from './key';
export { gridConfig, parseGridConfig, readGridConfig, methodVariants, type GridConfig, type GridDataset, type GridMethod } from './config';
export { expandGrid, runGrid, resultRow, describeExperiment, type CategoryLoader, type GridSummary, type GridEvents, type InvalidExperiment } from './grid';
export { saveHeatmaps, selectHeatmapSamples, HEATMAP_SIZE, HEATMAP_COUNT } from './heatmaps';
export { abortOnInterrupt } from './interrupt';
export { trainingSamples, testSamples as splitTestSamples } from './samples';
export { metricsFromEvaluation, metricsFromLocoEvaluation, PRO_LIMIT, SPRO_LIMIT, type CategoryEvaluationLike, type LocoEvaluationLike } from './metrics';
export { createExecutor, storeMetrics, storeEfficiency, checkpointRun, NOTE_REFIT_ON_UNION, type ExecutorOptions } from './executor';
export { RESULTS_SCHEMA, resultFromRow, resultFromMetrics, resultsDocument, schemaMetrics, type ResultJson, type ResultsJson, type ResultsCommand } from './schema';
export { experimentFiles, taskCheckpoint, taskScores, taskMaps, checkpointFiles, type ExperimentFiles } from './files';
export { continualCheckpointFile, readContinualProgress, writeContinualProgress, type ContinualProgress } from './continual';
