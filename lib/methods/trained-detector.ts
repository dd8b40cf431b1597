/**
 * What every detector that trains a libtorch network on top of a frozen feature extractor shares (FAVAE, GCAD, IGD,
 * the frozen-feature heads CFA / CFlow / CS-Flow / FastFlow, and the mask-supervised BGAD, PRN, SemiREST): the fitted
 * model and its size, the fit count of the continual setting, the last fit's statistics and the last predict()'s
 * timing, and the checkpoint round trip (the network's weights, buffers and optimiser state through
 * lib/methods/checkpoint.ts, with the model's kind, channels, method numbers and crop checked on load).
 */
import { TrainModel, type TrainModelConfig } from '../../bindings/train/train';
import { configExtra, configInt, configInts, requireCheckpointCrop, requireCheckpointKind, restoreTrainedModel, trainedModelState } from './checkpoint';
import type { FeatureExtractor } from './features';
import { requireFitted } from './features';
import type { DetectorState, Timing, TrainingStats } from './types';

export abstract class TrainedFeatureDetector {
  /** The frozen feature extractor (ONNX): set by the subclass's constructor. */
  protected extractor!: FeatureExtractor;
  protected model: TrainModel | null = null;
  protected modelBytes = 0;
  protected fits = 0;
  protected timing: Timing = { backboneMs: [], methodMs: [] };
  protected stats: TrainingStats | null = null;

  /** The native model kind, also the checkpoint's `kind`. */
  protected abstract readonly kind: string;
  /** The name errors use ("FAVAE: call fit() before predict()"). */
  protected abstract readonly label: string;

  /** The network's learning rate, training threads and device (the detector's options). */
  abstract readonly lr: number;
  abstract readonly trainThreads: number;
  abstract readonly trainDevice: 'cpu' | 'cuda';

  /** A fresh network of this detector for the given channels and method numbers (TrainModelConfig.extra). */
  protected abstract createModel(channels: number[], extra: Record<string, number[]>): TrainModel;

  /**
   * A network of `kind` seeded as the extractor, with this detector's learning rate, training threads and device, the
   * method's optimiser settings (libtorch's defaults where absent) and its extra parameters: what every createModel builds.
   */
  protected newTrainModel(
    kind: TrainModelConfig['kind'],
    channels: number[],
    extra: Record<string, number[]>,
    optimiser: Pick<TrainModelConfig, 'weightDecay' | 'beta1' | 'beta2'> = {},
  ): TrainModel {
    return new TrainModel({ kind, channels, seed: this.extractor.params.seed, threads: this.trainThreads, lr: this.lr, ...optimiser, device: this.trainDevice, extra });
  }

  /** The crop the network works at (checked against a checkpoint's); default the extractor's crop. */
  protected checkpointCrop(): number {
    return this.extractor.params.cropSize;
  }

  /** More config entries a checkpoint keeps (GCAD: where its map statistics came from). */
  protected stateConfig(): Record<string, unknown> {
    return {};
  }

  /** The network a checkpoint's config describes (override to check method numbers first). */
  protected modelFromCheckpoint(state: DetectorState): TrainModel {
    return this.createModel(configInts(state, 'channels'), configExtra(state));
  }

  /** Restores what stateConfig() saved; called after the weights are restored. */
  protected restoreConfig(_state: DetectorState): void {
    // nothing by default
  }

  get params(): FeatureExtractor['params'] {
    return this.extractor.params;
  }

  /** fit() calls the current network has been trained by: 0 unfitted, k after k tasks of the continual setting. */
  get fitCount(): number {
    return this.fits;
  }

  protected setModel(model: TrainModel): void {
    this.model = model;
    this.modelBytes = model.state().arrays.reduce((a, x) => a + x.byteLength, 0);
  }

  /** The fitted network; an ERR_IMIAD_STATE error naming the detector before a fit. */
  protected fitted(): TrainModel {
    requireFitted(this.model !== null, this.label);
    return this.model as TrainModel;
  }

  /** The network's weights, buffers and optimiser state, for a checkpoint. */
  saveState(): DetectorState {
    const model = this.fitted();
    const { arrays, config } = trainedModelState(model);
    return {
      config: {
        kind: this.kind,
        channels: model.config.channels,
        extra: model.config.extra ?? {},
        ...config,
        fits: this.fits,
        cropSize: this.checkpointCrop(),
        ...this.stateConfig(),
        stats: this.stats,
      },
      arrays,
    };
  }

  async loadState(state: DetectorState): Promise<void> {
    requireCheckpointKind(state, this.kind);
    requireCheckpointCrop(state, this.checkpointCrop());
    const fits = configInt(state, 'fits');
    const model = this.modelFromCheckpoint(state);
    restoreTrainedModel(model, state);
    this.setModel(model);
    this.fits = fits;
    this.stats = null;
    this.restoreConfig(state);
  }

  trainingStats(): TrainingStats | null {
    return this.stats;
  }

  /** Bytes of the fitted state (weights, buffers and optimiser state; 0 before a fit). */
  stateBytes(): number {
    return this.model ? this.modelBytes : 0;
  }

  /** Trainable parameters of the fitted network (0 before a fit). */
  parameterCount(): number {
    return this.model ? this.model.parameterCount : 0;
  }

  lastTiming(): Timing {
    return this.timing;
  }

  async dispose(): Promise<void> {
    await this.extractor.dispose();
  }
}
