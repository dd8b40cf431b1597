/**
 * The weights of a ResNet-18 ONNX backbone, named as torchvision names its state dict (`conv1.weight`,
 * `bn1.running_var`, `layer2.0.downsample.0.weight`, ...), for the trainable ResNet-18 of the training addon
 * (native/train/resnet18.h: CutPaste, DevNet, DRA, RegAD fine-tune the backbone itself).
 *
 * The file is read with the project's own codec (onnx-proto.ts) and its graph is walked from the image input along
 * torchvision's resnet18 structure (stem conv 7x7/2, BN, ReLU, max-pool 3x3/2; per stage two BasicBlocks: conv 3x3,
 * BN, ReLU, conv 3x3, BN, plus the identity or a 1x1 conv + BN downsample, Add, ReLU). Initializer names are not
 * relied on: a torchvision export names them `layer1.0.conv1.weight` only without constant folding, `onnx::Conv_193`
 * with it, and the default backbone (builder.ts) has no BatchNormalization at all. Each conv's kernel, strides,
 * padding and weight shape are checked against ResNet-18's; the first thing that differs is named in an
 * ERR_IMIAD_LAYOUT error (`layer3.1.conv2: ...`).
 *
 * Folded BatchNorm. A model exported in eval mode with constant folding (and imiad's default backbone) has no
 * BatchNormalization nodes: the BN is folded into its conv, which then carries a bias (or none, when the folded BN
 * had zero shift). Such a conv becomes the bias-free conv with its folded weight followed by a BN of weight 1,
 * bias = the conv's bias (0 without one), running mean 0 and running variance 1 - 1e-5: in eval mode that BN adds the
 * bias and multiplies by 1/sqrt(1 - 1e-5 + 1e-5) = 1, so the network computes exactly what the file computes. The
 * original BN's scale and statistics are gone from such a file, so in training mode (batch statistics) the
 * fine-tuned network starts from a BN of weight 1 over the folded conv's output rather than from the trained BN;
 * export without folding (`do_constant_folding=False`, `training=torch.onnx.TrainingMode.PRESERVE`) to keep them.
 * A BN whose epsilon is not torchvision's 1e-5 gets running_var + eps - 1e-5, so that var + 1e-5 is unchanged.
 */
import * as fs from 'fs';

import { imiadError, invalidType, type ImiadError } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { decodeModel, ProtobufError, TensorDataType, type AttributeProto, type GraphProto, type NodeProto, type TensorProto } from './onnx-proto';

/** One weight tensor, row-major, with its torchvision shape. */
export interface WeightTensor {
  data: Float32Array;
  shape: number[];
}

export type ResNetWeights = Map<string, WeightTensor>;

/** torchvision's BatchNorm2d epsilon, which the libtorch network uses. */
export const TORCHVISION_BN_EPS = 1e-5;

export interface ResNet18WeightsOptions {
  /** The last stage read (1..4, default 4): RegAD stops at layer3, and a file cut after it is then enough. */
  upToLayer?: number;
}

class NotResNet18 extends Error {}

function readFloats(t: TensorProto, what: string): Float32Array {
  const count = t.dims.reduce((a, b) => a * b, 1);
  let out: Float32Array | undefined;
  if (t.dataType === TensorDataType.FLOAT) {
    if (t.rawData !== undefined && t.rawData.length > 0) {
      if (t.rawData.length !== count * 4) throw new NotResNet18(`${what}: the tensor ${t.name} holds ${t.rawData.length} bytes for ${count} floats`);
      const dv = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
      out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, true);
    } else if (t.floatData !== undefined) {
      out = Float32Array.from(t.floatData);
    }
  } else if (t.dataType === TensorDataType.DOUBLE) {
    if (t.rawData !== undefined && t.rawData.length > 0) {
      const dv = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
      out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(i * 8, true);
    } else if (t.doubleData !== undefined) {
      out = Float32Array.from(t.doubleData);
    }
  } else {
    throw new NotResNet18(`${what}: the tensor ${t.name} is of ONNX data type ${t.dataType}, expected float (1) or double (11)`);
  }
  if (out === undefined) {
    if (count === 0) return new Float32Array(0);
    throw new NotResNet18(
      `${what}: the tensor ${t.name} has no data in the file (external data?); re-export it with the weights inside the .onnx file`,
    );
  }
  if (out.length !== count) throw new NotResNet18(`${what}: the tensor ${t.name} holds ${out.length} values for its shape [${t.dims.join(', ')}]`);
  return out;
}

function attribute(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute.find((a) => a.name === name);
}

function sameInts(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The graph with its producers and consumers indexed; constants resolved through Identity and Constant nodes. */
class GraphWalk {
  private readonly producer = new Map<string, NodeProto>();
  private readonly consumers = new Map<string, NodeProto[]>();
  private readonly initializers = new Map<string, TensorProto>();
  readonly weights: ResNetWeights = new Map();

  constructor(readonly graph: GraphProto) {
    for (const t of graph.initializer) this.initializers.set(t.name, t);
    for (const n of graph.node) {
      for (const o of n.output) if (o) this.producer.set(o, n);
      for (const i of n.input) {
        if (!i) continue;
        const list = this.consumers.get(i) ?? [];
        list.push(n);
        this.consumers.set(i, list);
      }
    }
  }

  imageInput(): string {
    const inputs = this.graph.input.filter((i) => !this.initializers.has(i.name));
    if (inputs.length !== 1) throw new NotResNet18(`expected one image input but the graph has ${inputs.length}`);
    return inputs[0].name;
  }

  constant(name: string | undefined): TensorProto | undefined {
    if (!name) return undefined;
    const t = this.initializers.get(name);
    if (t) return t;
    const p = this.producer.get(name);
    if (p?.opType === 'Identity') return this.constant(p.input[0]);
    if (p?.opType === 'Constant') return attribute(p, 'value')?.t;
    return undefined;
  }

  /** The node of type `opType` that reads `tensor`, else an error naming `what` is missing. */
  next(tensor: string, opType: string, what: string): NodeProto {
    const all = this.consumers.get(tensor) ?? [];
    const found = all.filter((n) => n.opType === opType);
    if (found.length === 0) {
      const seen = all.length === 0 ? 'nothing reads it' : `it is read by ${all.map((n) => n.opType).join(', ')}`;
      throw new NotResNet18(`${what} is missing (expected a ${opType} reading '${tensor}'; ${seen})`);
    }
    return found[0];
  }

  consumersOf(tensor: string): NodeProto[] {
    return this.consumers.get(tensor) ?? [];
  }

  producerOf(tensor: string): NodeProto | undefined {
    return this.producer.get(tensor);
  }

  /**
   * A Conv (checked against ResNet-18's shape, stride and padding) and the BatchNormalization after it, if any,
   * stored under `conv`.weight and `bn`.*; returns the tensor after the BN (or the conv).
   */
  convBn(node: NodeProto, conv: string, bn: string, shape: number[], stride: number): string {
    const w = this.constant(node.input[1]);
    if (!w) throw new NotResNet18(`${conv}: the Conv's weight '${node.input[1]}' is not a constant of the file`);
    if (!sameInts(w.dims, shape)) throw new NotResNet18(`${conv}: expected a weight of [${shape.join(', ')}] but the file's is [${w.dims.join(', ')}]`);
    const pad = (shape[2] - 1) / 2;
    const strides = attribute(node, 'strides')?.ints ?? [1, 1];
    const pads = attribute(node, 'pads')?.ints ?? [0, 0, 0, 0];
    const group = attribute(node, 'group')?.i ?? 1;
    const dilations = attribute(node, 'dilations')?.ints ?? [1, 1];
    const autoPad = attribute(node, 'auto_pad')?.s;
    if (autoPad !== undefined && autoPad.length > 0 && Buffer.from(autoPad).toString() !== 'NOTSET') {
      throw new NotResNet18(`${conv}: expected explicit pads but the Conv has auto_pad ${Buffer.from(autoPad).toString()}`);
    }
    if (!sameInts(strides, [stride, stride]) || !sameInts(pads, [pad, pad, pad, pad]) || group !== 1 || !sameInts(dilations, [1, 1])) {
      throw new NotResNet18(
        `${conv}: expected stride ${stride}, padding ${pad}, no groups and no dilation but the Conv has strides [${strides.join(', ')}], ` +
          `pads [${pads.join(', ')}], group ${group}, dilations [${dilations.join(', ')}]`,
      );
    }
    this.weights.set(`${conv}.weight`, { data: readFloats(w, conv), shape: [...shape] });
    const channels = shape[0];
    const biasTensor = this.constant(node.input[2]);
    if (node.input[2] && !biasTensor) throw new NotResNet18(`${conv}: the Conv's bias '${node.input[2]}' is not a constant of the file`);
    const bias = biasTensor ? readFloats(biasTensor, conv) : new Float32Array(channels);
    if (bias.length !== channels) throw new NotResNet18(`${conv}: expected a bias of ${channels} values but the file's has ${bias.length}`);
    const out = node.output[0];
    const readers = this.consumersOf(out);
    const bnNode = readers.length === 1 && readers[0].opType === 'BatchNormalization' ? readers[0] : undefined;
    const vec = (data: Float32Array): WeightTensor => ({ data, shape: [channels] });
    if (!bnNode) {
      this.weights.set(`${bn}.weight`, vec(new Float32Array(channels).fill(1)));
      this.weights.set(`${bn}.bias`, vec(bias));
      this.weights.set(`${bn}.running_mean`, vec(new Float32Array(channels)));
      this.weights.set(`${bn}.running_var`, vec(new Float32Array(channels).fill(1 - TORCHVISION_BN_EPS)));
      return out;
    }
    const parts = ['scale', 'B', 'mean', 'var'].map((role, i) => {
      const t = this.constant(bnNode.input[i + 1]);
      if (!t) throw new NotResNet18(`${bn}: the BatchNormalization's ${role} '${bnNode.input[i + 1]}' is not a constant of the file`);
      const v = readFloats(t, bn);
      if (v.length !== channels) throw new NotResNet18(`${bn}: expected ${channels} values for the BatchNormalization's ${role} but the file has ${v.length}`);
      return v;
    });
    const eps = attribute(bnNode, 'epsilon')?.f ?? 1e-5;
    const [scale, shift, mean, variance] = parts;
    // BN(conv + b) = BN with the running mean less b; a different epsilon moves into the variance.
    const runningMean = mean.map((m, c) => m - bias[c]);
    const runningVar = variance.map((v) => v + eps - TORCHVISION_BN_EPS);
    this.weights.set(`${bn}.weight`, vec(scale));
    this.weights.set(`${bn}.bias`, vec(shift));
    this.weights.set(`${bn}.running_mean`, vec(runningMean));
    this.weights.set(`${bn}.running_var`, vec(runningVar));
    return bnNode.output[0];
  }

  /** Follows one ReLU after `tensor`. */
  relu(tensor: string, what: string): string {
    return this.next(tensor, 'Relu', what).output[0];
  }

  /** A Conv reading `tensor` whose kernel is k x k. */
  convReading(tensor: string, k: number, what: string): NodeProto {
    const convs = this.consumersOf(tensor).filter((n) => n.opType === 'Conv');
    const match = convs.find((n) => {
      const w = this.constant(n.input[1]);
      return w !== undefined && w.dims.length === 4 && w.dims[2] === k && w.dims[3] === k;
    });
    if (match) return match;
    const readers = this.consumersOf(tensor);
    const seen =
      readers.length === 0 ? 'nothing reads it' : convs.length === 0 ? `it is read by ${readers.map((n) => n.opType).join(', ')}` : `the Convs reading it have kernels ${convs.map((n) => this.constant(n.input[1])?.dims.slice(2).join('x') ?? '?').join(', ')}`;
    throw new NotResNet18(`${what} is missing (expected a ${k}x${k} Conv reading '${tensor}'; ${seen})`);
  }

  /** torchvision's BasicBlock `module` reading `x`; returns its output tensor. */
  basicBlock(x: string, module: string, inC: number, planes: number, stride: number): string {
    const c1 = this.convReading(x, 3, `${module}.conv1`);
    let h = this.convBn(c1, `${module}.conv1`, `${module}.bn1`, [planes, inC, 3, 3], stride);
    h = this.relu(h, `${module}.relu`);
    const c2 = this.next(h, 'Conv', `${module}.conv2`);
    h = this.convBn(c2, `${module}.conv2`, `${module}.bn2`, [planes, planes, 3, 3], 1);
    const add = this.next(h, 'Add', `${module}'s residual Add`);
    const skip = add.input[0] === h ? add.input[1] : add.input[0];
    const needsDownsample = stride !== 1 || inC !== planes;
    if (needsDownsample) {
      const ds = this.convReading(x, 1, `${module}.downsample.0`);
      const dsOut = this.convBn(ds, `${module}.downsample.0`, `${module}.downsample.1`, [planes, inC, 1, 1], stride);
      if (skip !== dsOut) throw new NotResNet18(`${module}'s residual Add does not add ${module}.downsample's output`);
    } else if (skip !== x) {
      throw new NotResNet18(`${module}'s residual Add does not add the block's input (an identity shortcut was expected)`);
    }
    return this.relu(add.output[0], `${module}.relu (after the Add)`);
  }
}

/** Walks a decoded graph; throws NotResNet18 with what is missing. Exported for tests through resnet18Weights. */
function walk(graph: GraphProto, upToLayer: number): ResNetWeights {
  const g = new GraphWalk(graph);
  const input = g.imageInput();
  const stem = g.next(input, 'Conv', 'conv1');
  let x = g.convBn(stem, 'conv1', 'bn1', [64, 3, 7, 7], 2);
  x = g.relu(x, 'relu (after bn1)');
  const pool = g.next(x, 'MaxPool', 'maxpool');
  const kernel = attribute(pool, 'kernel_shape')?.ints ?? [];
  const strides = attribute(pool, 'strides')?.ints ?? [1, 1];
  const pads = attribute(pool, 'pads')?.ints ?? [0, 0, 0, 0];
  if (!sameInts(kernel, [3, 3]) || !sameInts(strides, [2, 2]) || !sameInts(pads, [1, 1, 1, 1]) || (attribute(pool, 'ceil_mode')?.i ?? 0) !== 0) {
    throw new NotResNet18(`maxpool: expected a 3x3 MaxPool with stride 2 and padding 1 but it has kernel [${kernel.join(', ')}], strides [${strides.join(', ')}], pads [${pads.join(', ')}]`);
  }
  x = pool.output[0];
  let inC = 64;
  for (let layer = 1; layer <= upToLayer; layer++) {
    const planes = 64 << (layer - 1);
    for (let b = 0; b < 2; b++) {
      x = g.basicBlock(x, `layer${layer}.${b}`, inC, planes, b === 0 && layer > 1 ? 2 : 1);
      inC = planes;
    }
  }
  return g.weights;
}

/**
 * The torchvision-named weights of the ResNet-18 in `onnxFile` (conv1 .. layer<upToLayer>); ERR_IMIAD_FILE when the
 * file cannot be read or decoded, ERR_IMIAD_LAYOUT naming what is missing when its graph is not a ResNet-18.
 */
export async function resnet18Weights(onnxFile: string, opts: ResNet18WeightsOptions = {}): Promise<ResNetWeights> {
  if (!is.string(onnxFile) || onnxFile.length === 0) throw invalidType('path of an ONNX file', 'onnxFile', onnxFile);
  const upToLayer = opts.upToLayer ?? 4;
  if (!is.integer(upToLayer) || upToLayer < 1 || upToLayer > 4) throw invalidType('integer between 1 and 4', 'upToLayer', upToLayer);
  let bytes: Uint8Array;
  try {
    bytes = await fs.promises.readFile(onnxFile);
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read the backbone file ${onnxFile}: ${(err as Error).message}`);
  }
  let graph: GraphProto;
  try {
    graph = decodeModel(bytes).graph;
  } catch (err) {
    if (err instanceof ProtobufError) throw imiadError('Error', 'ERR_IMIAD_FILE', `The backbone file ${onnxFile} is not an ONNX model (${err.message})`);
    throw err;
  }
  try {
    return walk(graph, upToLayer);
  } catch (err) {
    if (err instanceof NotResNet18) throw notResNet18(onnxFile, err.message);
    throw err;
  }
}

function notResNet18(file: string, detail: string): ImiadError {
  return imiadError('Error', 'ERR_IMIAD_LAYOUT', `The backbone ${file} is not a ResNet-18 (torchvision's resnet18 graph): ${detail}`);
}

/** The weights as the training addon's model config takes them (TrainModelConfig.weights). */
export function weightsRecord(weights: ResNetWeights): Record<string, WeightTensor> {
  return Object.fromEntries(weights);
}
