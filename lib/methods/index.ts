/** lib/methods: the detectors and their registry. */
import { imiadError } from '../../bindings/errors';
import { Dne, type DneParams } from './dne';
import { Padim, type PadimParams } from './padim';
import { PatchCore, type PatchCoreParams } from './patchcore';
import { Spade, type SpadeParams } from './spade';
import { Rd4ad, type Rd4adParams, Stpm, type StpmParams } from './teacher-student';
import type { Detector } from './types';

export const METHOD_NAMES = ['patchcore', 'padim', 'spade', 'dne', 'stpm', 'rd4ad'] as const;
/** Methods that learn weights by gradient descent (they need the libtorch training addon). */
export const TRAINED_METHODS: readonly MethodName[] = ['stpm', 'rd4ad'];
export type MethodName = (typeof METHOD_NAMES)[number];

export interface MethodParams {
  patchcore: PatchCoreParams;
  padim: PadimParams;
  spade: SpadeParams;
  dne: DneParams;
  stpm: StpmParams;
  rd4ad: Rd4adParams;
}

/** A new, unfitted detector by name. */
export function createDetector<M extends MethodName>(name: M, params?: MethodParams[M]): Detector;
export function createDetector(name: string, params?: Record<string, unknown>): Detector;
export function createDetector(name: string, params: Record<string, unknown> = {}): Detector {
  switch (name) {
    case 'patchcore':
      return new PatchCore(params as PatchCoreParams);
    case 'padim':
      return new Padim(params as PadimParams);
    case 'spade':
      return new Spade(params as SpadeParams);
    case 'dne':
      return new Dne(params as DneParams);
    case 'stpm':
      return new Stpm(params as StpmParams);
    case 'rd4ad':
      return new Rd4ad(params as Rd4adParams);
    default:
      throw imiadError(
        'TypeError',
        'ERR_IMIAD_ARGUMENT',
        `Expected one of ${METHOD_NAMES.map((m) => `'${m}'`).join(', ')} for method but received ${String(name)} of type ${typeof name}`,
      );
  }
}

export { PatchCore, PatchCoreScorer, reweightFactor, type PatchCoreParams, type PatchCoreBreakdown, type PatchScores } from './patchcore';
export { Padim, padimChannelCount, padimChannelSubset, type PadimParams } from './padim';
export { Spade, type SpadeParams } from './spade';
export { Dne, type DneParams } from './dne';
export type { BackboneParams } from './features';
export type { AnomalyMap, Detector, Prediction, RunOptions, Timing, TrainSample } from './types';
export { Stpm, Rd4ad, type StpmParams, type Rd4adParams, type TeacherStudentParams } from './teacher-student';
export { readCheckpoint, writeCheckpoint, encodeCheckpoint, decodeCheckpoint, type Checkpoint } from './checkpoint';
export type { DetectorState, TrainingStats } from './types';
