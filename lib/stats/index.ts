/**
 * lib/stats: the statistical comparison of methods over categories (Demsar 2006): Friedman + Iman-Davenport,
 * Nemenyi critical difference and CD diagrams, Wilcoxon signed-ranks with Holm against a control, and the bootstrap
 * interval of an experiment's image AUROC. Distributions come from jStat (lib/stats/distributions.ts).
 */
export { averageRanksOf, tieGroupSizes, type Direction } from './ranks';
export { friedmanTest, type FriedmanResult, type FriedmanOptions } from './friedman';
export { nemenyiQ, nemenyiCriticalDifference, nemenyiGroups } from './nemenyi';
export { wilcoxonSignedRank, holmAdjust, compareWithControl, type WilcoxonResult, type ControlComparison, type ZeroMethod } from './wilcoxon';
export { bootstrapAuroc, type BootstrapInterval, type BootstrapOptions } from './bootstrap';
export { cdDiagramSvg, type CdDiagramInput } from './cd-diagram';
export { chiSquareSurvival, fSurvival, normalSurvival, normalQuantile, studentizedRangeCdf, studentizedRangeQuantile } from './distributions';
