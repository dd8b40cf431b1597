/** lib/methods: the detectors and their registry. */
import { imiadError } from '../../bindings/errors';
import type { DneParams } from './dne';
import type { PadimParams } from './padim';
import type { PatchCoreParams } from './patchcore';
import { findMethod, METHODS } from './registry';
import type { SpadeParams } from './spade';
import type { Rd4adParams, StpmParams } from './teacher-student';
import type { CfaParams } from './cfa';
import type { BgadParams } from './bgad';
import type { CFlowParams } from './cflow';
import type { CsFlowParams } from './csflow';
import type { CutPasteParams } from './cutpaste';
import type { FastFlowParams } from './fastflow';
import type { DevNetParams } from './devnet';
import type { DraParams } from './dra';
import type { RegadParams } from './regad';
import type { DraemParams } from './draem';
import type { FavaeParams } from './favae';
import type { IgdParams } from './igd';
import type { GcadParams } from './gcad';
import type { SemiRestParams } from './semirest';
import type { PrnParams } from './prn';
import type { Detector } from './types';

/** Each registered method's parameters (the typed overload of createDetector). */
export interface MethodParams {
  patchcore: PatchCoreParams;
  padim: PadimParams;
  spade: SpadeParams;
  dne: DneParams;
  stpm: StpmParams;
  rd4ad: Rd4adParams;
  cfa: CfaParams;
  cflow: CFlowParams;
  csflow: CsFlowParams;
  fastflow: FastFlowParams;
  cutpaste: CutPasteParams;
  devnet: DevNetParams;
  bgad: BgadParams;
  dra: DraParams;
  regad: RegadParams;
  draem: DraemParams;
  favae: FavaeParams;
  igd: IgdParams;
  gcad: GcadParams;
  semirest: SemiRestParams;
  prn: PrnParams;
}
export type MethodName = keyof MethodParams;

/** The registered method names, in the paper's table order (lib/methods/registry.ts). */
export const METHOD_NAMES: readonly MethodName[] = METHODS.map((m) => m.name as MethodName);
/** Methods that learn weights by gradient descent (they need the libtorch training addon). */
export const TRAINED_METHODS: readonly MethodName[] = METHODS.filter((m) => m.trained).map((m) => m.name as MethodName);

/** A new, unfitted detector by name. */
export function createDetector<M extends MethodName>(name: M, params?: MethodParams[M]): Detector;
export function createDetector(name: string, params?: Record<string, unknown>): Detector;
export function createDetector(name: string, params: Record<string, unknown> = {}): Detector {
  const entry = findMethod(name);
  if (entry === undefined) {
    throw imiadError(
      'TypeError',
      'ERR_IMIAD_ARGUMENT',
      `Expected one of ${METHODS.map((m) => `'${m.name}'`).join(', ')} for method but received ${String(name)} of type ${typeof name}`,
    );
  }
  return entry.create(params);
}

export { METHODS, findMethod, methodNames, type MethodEntry, type MethodOption, type ContinualMode, type InputNormalisation } from './registry';
export { PatchCore, PatchCoreScorer, reweightFactor, type PatchCoreParams, type PatchCoreBreakdown, type PatchScores } from './patchcore';
export { Padim, padimChannelCount, padimChannelSubset, type PadimParams } from './padim';
export { Spade, type SpadeParams } from './spade';
export { Dne, type DneParams } from './dne';
export type { BackboneParams } from './features';
export type { AnomalyMap, Detector, FitOptions, MetaTrainCategory, Prediction, RunOptions, Timing, TrainSample } from './types';
export { Stpm, Rd4ad, type StpmParams, type Rd4adParams, type TeacherStudentParams } from './teacher-student';
export { FastFlow, type FastFlowParams } from './fastflow';
export { CFlow, type CFlowParams } from './cflow';
export { Cfa, CFA_LAYERS, type CfaParams } from './cfa';
export { CsFlow, type CsFlowParams } from './csflow';
export { CutPasteDetector, cutPasteLearningRate, type CutPasteParams } from './cutpaste';
export { Regad, type RegadParams } from './regad';
export { Draem, draemLearningRate, pooledMax, type DraemParams } from './draem';
export { Favae, FAVAE_SIZE, FAVAE_VGG16_LAYERS, FAVAE_DEFAULT_LAYERS, imagenetFromUnit, type FavaeParams } from './favae';
export { Igd, IGD_RANGE, type IgdParams } from './igd';
export { Gcad, GCAD_DEFAULTS, type GcadParams, type GcadValidationSource } from './gcad';
export { SemiRest, PositionBank, blockLabels, type SemiRestParams } from './semirest';
export { Prn, prnBatchComposition, prnStepsPerEpoch, topKMean, type PrnParams } from './prn';
export type { FrozenHeadParams } from './frozen-head';
export { DevNet, type DevNetParams } from './devnet';
export { Bgad, type BgadParams } from './bgad';
export { Dra, DRA_REFERENCES, type DraParams } from './dra';
export type { DeviationParams } from './deviation';
export { readCheckpoint, writeCheckpoint, encodeCheckpoint, decodeCheckpoint, type Checkpoint } from './checkpoint';
export type { DetectorState, TrainingStats } from './types';
