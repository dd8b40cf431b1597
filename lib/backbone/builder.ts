/**
 * imiad's own default backbone: a ResNet-shaped ONNX graph with He-initialised weights drawn from a seeded PRNG, so
 * that everything runs offline and reproducibly. Shapes follow torchvision's resnet18 (BasicBlock, [2, 2, 2, 2]) and
 * wide_resnet50_2 (Bottleneck, [3, 4, 6, 3], inner width x2, stride on the 3x3 conv as in torchvision v1.5), without
 * the classifier head: the graph's outputs are the four stages, named layer1..layer4.
 *
 * Batch normalisation at initialisation (gamma 1, beta 0, running mean 0, variance 1) is folded into the
 * convolutions, so there are no biases and the network is positively homogeneous. Plain He init keeps the variance
 * of a plain ReLU chain constant but lets it double at every residual sum; the last conv of every residual branch
 * and every downsample conv is therefore scaled by 1/sqrt(2) (as a BN gamma would be), which keeps each stage's
 * activations of order 1 for inputs of unit variance (ImageNet-normalised images). Node names follow PyTorch's ONNX
 * exporter (`/layer2/layer2.1/relu_1/Relu`), so module paths resolve the same way on both.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import {
  encodeModel,
  floatTensor,
  intAttribute,
  intsAttribute,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  TensorDataType,
  tensorValueInfo,
} from './onnx-proto';

export type BackboneShape = 'resnet18' | 'wide_resnet50_2';

export const BACKBONE_SHAPES: readonly BackboneShape[] = ['resnet18', 'wide_resnet50_2'];

/** Bumped whenever the builder's output changes, so cached files of an older builder are not reused. */
export const BUILDER_VERSION = 1;

/** The input side the default backbones are benchmarked and used at (any size works: H and W are dynamic). */
export const DEFAULT_INPUT_SIZE = 224;

export interface StageInfo {
  name: string;
  channels: number;
  /** Input pixels per feature-map cell. */
  stride: number;
}

/** The four stage outputs of each shape. */
export function backboneStages(shape: BackboneShape): StageInfo[] {
  const expansion = shape === 'resnet18' ? 1 : 4;
  return [64, 128, 256, 512].map((planes, i) => ({
    name: `layer${i + 1}`,
    channels: planes * expansion,
    stride: 4 << i,
  }));
}

// Module-level alias: a global lookup per call (Math) is slow where the module runs in a vm context (jest).
const imul = Math.imul;

/**
 * xoshiro128** seeded through splitmix32: a small, fast PRNG with a 128-bit state whose output is the same on every
 * platform (32-bit integer arithmetic only).
 */
export class Xoshiro128 {
  private s = new Uint32Array(4);

  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
  }

  nextUint32(): number {
    const s = this.s;
    const result = imul(rotl(imul(s[1], 5), 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform on [-1, 1), 24 bits: exact in float32, so the weights do not depend on the platform's libm. */
  nextSigned(): number {
    return (this.nextUint32() >>> 8) / 8388608 - 1;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

interface GraphBuilder {
  nodes: NodeProto[];
  initializers: TensorProto[];
  rng: Xoshiro128;
}

/**
 * He (Kaiming) uniform initialisation: U(-b, b) with b = sqrt(3) * gain * sqrt(2 / fan_in), which has the variance
 * of N(0, 2 gain^2 / fan_in). `gain` carries the folded BN scale.
 */
function convWeight(g: GraphBuilder, name: string, outC: number, inC: number, k: number, gain: number): TensorProto {
  const fanIn = inC * k * k;
  const bound = Math.sqrt(3) * gain * Math.sqrt(2 / fanIn);
  const values = new Float32Array(outC * inC * k * k);
  for (let i = 0; i < values.length; i++) values[i] = bound * g.rng.nextSigned();
  const t = floatTensor(name, [outC, inC, k, k], values);
  g.initializers.push(t);
  return t;
}

function conv(
  g: GraphBuilder,
  scope: string,
  module: string,
  input: string,
  inC: number,
  outC: number,
  k: number,
  stride: number,
  gain: number,
): string {
  const weight = convWeight(g, `${module}.weight`, outC, inC, k, gain);
  const output = `${scope}/Conv_output_0`;
  const pad = Math.floor(k / 2);
  g.nodes.push({
    name: `${scope}/Conv`,
    opType: 'Conv',
    domain: '',
    input: [input, weight.name],
    output: [output],
    attribute: [
      intsAttribute('dilations', [1, 1]),
      intAttribute('group', 1),
      intsAttribute('kernel_shape', [k, k]),
      intsAttribute('pads', [pad, pad, pad, pad]),
      intsAttribute('strides', [stride, stride]),
    ],
  });
  return output;
}

function relu(g: GraphBuilder, scope: string, input: string, output = `${scope}/Relu_output_0`): string {
  g.nodes.push({ name: `${scope}/Relu`, opType: 'Relu', domain: '', input: [input], output: [output], attribute: [] });
  return output;
}

function add(g: GraphBuilder, scope: string, a: string, b: string): string {
  const output = `${scope}/Add_output_0`;
  g.nodes.push({ name: `${scope}/Add`, opType: 'Add', domain: '', input: [a, b], output: [output], attribute: [] });
  return output;
}

const BRANCH_END_GAIN = Math.SQRT1_2;
// The stem's input is not a ReLU output (zero mean, unit variance), so LeCun's gain 1/sqrt(2) would keep its
// variance; a further 1/2 offsets the growth through the max-pool and the residual sums, so that the stage outputs
// stay of order 1 (RMS 1.4 to 2.7 for resnet18 and 0.9 to 1.4 for wide_resnet50_2, on unit-variance noise). The network has no biases, so this only
// scales the features.
const BOTTLENECK_IDENTITY_GAIN = 0.3;
const STEM_GAIN = Math.SQRT1_2 / 2;

/** torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1 x)))) + downsample(x)). */
function basicBlock(g: GraphBuilder, module: string, input: string, inC: number, planes: number, stride: number, output?: string): string {
  const scope = `/${module.split('.')[0]}/${module}`;
  let x = conv(g, `${scope}/conv1`, `${module}.conv1`, input, inC, planes, 3, stride, 1);
  x = relu(g, `${scope}/relu`, x);
  x = conv(g, `${scope}/conv2`, `${module}.conv2`, x, planes, planes, 3, 1, BRANCH_END_GAIN);
  let skip = input;
  if (stride !== 1 || inC !== planes) {
    skip = conv(g, `${scope}/downsample/downsample.0`, `${module}.downsample.0`, input, inC, planes, 1, stride, BRANCH_END_GAIN);
  }
  return relu(g, `${scope}/relu_1`, add(g, scope, x, skip), output);
}

/** torchvision's Bottleneck (v1.5): 1x1 -> 3x3 (stride) -> 1x1 expansion 4, inner width = planes * 2 for wide. */
function bottleneck(
  g: GraphBuilder,
  module: string,
  input: string,
  inC: number,
  planes: number,
  width: number,
  stride: number,
  output?: string,
): string {
  const scope = `/${module.split('.')[0]}/${module}`;
  const outC = planes * 4;
  let x = conv(g, `${scope}/conv1`, `${module}.conv1`, input, inC, width, 1, 1, 1);
  x = relu(g, `${scope}/relu`, x);
  x = conv(g, `${scope}/conv2`, `${module}.conv2`, x, width, width, 3, stride, 1);
  x = relu(g, `${scope}/relu_1`, x);
  // A Bottleneck's branch adds more variance than a BasicBlock's (three convs, and deeper stages): identity blocks
  // get a smaller branch gain so that layer3/layer4 stay of order 1 too.
  const identity = stride === 1 && inC === outC;
  x = conv(g, `${scope}/conv3`, `${module}.conv3`, x, width, outC, 1, 1, identity ? BOTTLENECK_IDENTITY_GAIN : BRANCH_END_GAIN);
  let skip = input;
  if (stride !== 1 || inC !== outC) {
    skip = conv(g, `${scope}/downsample/downsample.0`, `${module}.downsample.0`, input, inC, outC, 1, stride, BRANCH_END_GAIN);
  }
  return relu(g, `${scope}/relu_2`, add(g, scope, x, skip), output);
}

export interface BuildOptions {
  shape?: BackboneShape;
  seed?: number;
}

/** Builds the default backbone's ModelProto; the same options always give the same model, byte for byte. */
export function buildBackboneModel(opts: BuildOptions = {}): ModelProto {
  const shape = opts.shape ?? 'resnet18';
  const seed = opts.seed ?? 0;
  const g: GraphBuilder = { nodes: [], initializers: [], rng: new Xoshiro128(seed) };
  let x = conv(g, '/conv1', 'conv1', 'input', 3, 64, 7, 2, STEM_GAIN);
  x = relu(g, '/relu', x);
  const poolOut = '/maxpool/MaxPool_output_0';
  g.nodes.push({
    name: '/maxpool/MaxPool',
    opType: 'MaxPool',
    domain: '',
    input: [x],
    output: [poolOut],
    attribute: [
      intAttribute('ceil_mode', 0),
      intsAttribute('dilations', [1, 1]),
      intsAttribute('kernel_shape', [3, 3]),
      intsAttribute('pads', [1, 1, 1, 1]),
      intsAttribute('strides', [2, 2]),
    ],
  });
  x = poolOut;
  const blocks = shape === 'resnet18' ? [2, 2, 2, 2] : [3, 4, 6, 3];
  let inC = 64;
  const stages = backboneStages(shape);
  for (let s = 0; s < 4; s++) {
    const planes = 64 << s;
    for (let b = 0; b < blocks[s]; b++) {
      const module = `layer${s + 1}.${b}`;
      const stride = b === 0 && s > 0 ? 2 : 1;
      const output = b === blocks[s] - 1 ? stages[s].name : undefined;
      if (shape === 'resnet18') {
        x = basicBlock(g, module, x, inC, planes, stride, output);
        inC = planes;
      } else {
        x = bottleneck(g, module, x, inC, planes, planes * 2, stride, output);
        inC = planes * 4;
      }
    }
  }
  const graph: GraphProto = {
    name: `imiad_${shape}_seed${seed}`,
    node: g.nodes,
    initializer: g.initializers,
    input: [tensorValueInfo('input', TensorDataType.FLOAT, ['batch', 3, 'height', 'width'])],
    output: stages.map((st) => tensorValueInfo(st.name, TensorDataType.FLOAT, ['batch', st.channels, `${st.name}_height`, `${st.name}_width`])),
    valueInfo: [],
  };
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    producerName: 'imiad',
    producerVersion: String(BUILDER_VERSION),
    domain: '',
    modelVersion: 1,
    docString: `imiad default backbone: ${shape}-shaped, He-initialised from seed ${seed} (not pretrained)`,
    graph,
  };
}

export function buildBackboneBytes(opts: BuildOptions = {}): Uint8Array {
  return encodeModel(buildBackboneModel(opts));
}

/** Where built backbones are cached: IMIAD_CACHE_DIR, else ~/.cache/imiad. */
export function cacheDir(): string {
  return process.env.IMIAD_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'imiad');
}

/** The cache file name of a configuration: shape, seed and a hash of everything that determines the bytes. */
export function backboneFileName(opts: BuildOptions = {}): string {
  const shape = opts.shape ?? 'resnet18';
  const seed = opts.seed ?? 0;
  const hash = createHash('sha256').update(JSON.stringify({ builder: BUILDER_VERSION, shape, seed })).digest('hex');
  return `${shape}-seed${seed}-${hash.slice(0, 12)}.onnx`;
}

/**
 * The default backbone's ONNX file, built on first use. The write is atomic (temporary file in the same folder,
 * then rename), so concurrent processes never see a partial file.
 */
export function defaultBackboneFile(opts: BuildOptions & { dir?: string } = {}): string {
  const dir = opts.dir ?? cacheDir();
  const file = path.join(dir, backboneFileName(opts));
  if (fs.existsSync(file)) return file;
  fs.mkdirSync(dir, { recursive: true });
  const bytes = buildBackboneBytes(opts);
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  try {
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, file);
  } finally {
    if (fs.existsSync(tmp)) fs.rmSync(tmp, { force: true });
  }
  return file;
}
