/** imiad's public API. */
export { version } from './version';
export type { Device } from '../bindings/validate';
export { hasCode, type ImiadError } from '../bindings/errors';
export { greedyCoreset, defaultStartIndex, type GreedyCoresetOptions } from '../bindings/coreset';
export { KnnIndex, knnSearch, type KnnResult, type KnnIndexOptions, type KnnSearchOptions, type KnnSearchOneShotOptions } from '../bindings/knn';
