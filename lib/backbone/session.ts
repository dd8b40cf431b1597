/**
 * A backbone: an ONNX Runtime session that returns named feature maps (NCHW) for a batch of images.
 *
 * Any ONNX classification model serves: the requested layers may be graph outputs or intermediate tensors, and
 * imiad exposes intermediate tensors itself, in memory: it decodes the ModelProto, makes the requested tensors the
 * graph's outputs (ValueInfoProto entries), prunes what they do not need, re-encodes and creates the session from the
 * buffer. A layer name resolves,
 * in order, as: a graph output; a tensor produced by a node; a node name (its first output); a PyTorch module path
 * (`layer2`, `layer2.1`), i.e. the last node, in the graph's topological order, inside that module's export scope
 * (`/layer2/...`). Anything else is an ERR_IMIAD_LAYER error that lists the candidates.
 */
import * as fs from 'fs';
import * as os from 'os';

import * as ort from 'onnxruntime-node';

import { imiadError, invalidType, type ImiadError } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { type BackboneShape, BACKBONE_SHAPES, DEFAULT_INPUT_SIZE, defaultBackboneFile } from './builder';
import { decodeModel, encodeModel, type GraphProto, type ModelProto, ProtobufError, TensorDataType, type ValueInfoProto } from './onnx-proto';

/** One layer's features for a batch, NCHW. */
export interface FeatureMap {
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
}

export interface BackboneTiming {
  /** Batches run so far. */
  batches: number;
  /** Images run so far. */
  images: number;
  /** Wall time spent inside ONNX Runtime, in milliseconds, over all batches. */
  totalMs: number;
  /** Wall time of the last batch, in milliseconds. */
  lastBatchMs: number;
}

export interface Backbone {
  /** The square input side to feed: the model's fixed H/W when it has one, else 224. */
  readonly inputSize: number;
  /** Channels the model's input expects (3 for RGB models). */
  readonly inputChannels: number;
  /** The requested layer names, in request order (the keys of `extract`'s result). */
  readonly layers: readonly string[];
  /** The graph tensor each layer resolved to. */
  readonly tensors: Readonly<Record<string, string>>;
  /** The ONNX file the session was created from. */
  readonly file: string;
  /** Runs a batch of n images (NCHW, already normalised) and returns every requested layer's features. */
  extract(batch: Float32Array, n: number, height: number, width: number): Promise<Record<string, FeatureMap>>;
  /** Cumulative backbone time, kept apart from the detector's time. */
  readonly timing: Readonly<BackboneTiming>;
  dispose(): Promise<void>;
}

export interface LoadBackboneOptions {
  /** An ONNX file; absent = imiad's default backbone, built (and cached) from `shape` and `seed`. */
  file?: string;
  /** Layers to tap: graph outputs, tensor names, node names or PyTorch module paths. */
  layers: string[];
  /** Seed of the default backbone (default 0). */
  seed?: number;
  /** Shape of the default backbone (default 'resnet18'). */
  shape?: BackboneShape;
  /** ONNX Runtime intra-op threads (default: every core). */
  threads?: number;
}

/** How a model's layers resolve; exported for tests and for `imiad` commands that list layers. */
export interface LayerResolution {
  tensors: Record<string, string>;
  /** Resolved tensors that are not graph outputs of the file (imiad exposes them). */
  appended: string[];
}

function layerError(message: string): ImiadError {
  return imiadError('Error', 'ERR_IMIAD_LAYER', message);
}

/**
 * The module paths of a node exported by PyTorch, outermost first. The exporter names a node by its scopes, each the
 * module's attribute name, except that children of a Sequential are already qualified: `/layer2/layer2.0/conv1/Conv`
 * is inside `layer2`, `layer2.0` and `layer2.0.conv1`.
 */
function modulePathsOf(nodeName: string): string[] {
  if (!nodeName.startsWith('/')) return [];
  const scopes = nodeName.split('/').slice(1, -1);
  const paths: string[] = [];
  for (const scope of scopes) {
    if (scope.length === 0) continue;
    const parent = paths[paths.length - 1];
    paths.push(parent === undefined || scope.startsWith(`${parent}.`) ? scope : `${parent}.${scope}`);
  }
  return paths;
}

/**
 * The names a layer can be given, for the error message: graph outputs, then the module paths of the first two
 * levels (`layer2`, `layer2.0`), in graph order; `deeper` counts the module paths left out.
 */
export function layerCandidates(graph: GraphProto): { names: string[]; deeper: number } {
  const seen = new Set<string>();
  const names: string[] = [];
  let deeper = 0;
  const push = (name: string, shown: boolean): void => {
    if (seen.has(name)) return;
    seen.add(name);
    if (shown) names.push(name);
    else deeper += 1;
  };
  for (const o of graph.output) push(o.name, true);
  for (const n of graph.node) modulePathsOf(n.name).forEach((m, depth) => push(m, depth < 2));
  return { names, deeper };
}

function lastDeeper(graph: GraphProto): string {
  for (let i = graph.node.length - 1; i >= 0; i--) {
    const paths = modulePathsOf(graph.node[i].name);
    if (paths.length > 2) return paths[paths.length - 1];
  }
  return '';
}

/** Resolves layer names against a graph (see the module comment for the rules). */
export function resolveLayers(graph: GraphProto, layers: readonly string[]): LayerResolution {
  const outputs = new Set(graph.output.map((o) => o.name));
  const produced = new Set<string>();
  const nodeByName = new Map<string, string>();
  const lastInModule = new Map<string, string>();
  for (const n of graph.node) {
    for (const o of n.output) if (o) produced.add(o);
    if (n.name && n.output[0]) {
      nodeByName.set(n.name, n.output[0]);
      // Nodes are topologically sorted (an ONNX requirement), so the last one seen in a scope is its output.
      for (const m of modulePathsOf(n.name)) lastInModule.set(m, n.output[0]);
    }
  }
  const tensors: Record<string, string> = {};
  const appended: string[] = [];
  for (const layer of layers) {
    let tensor: string | undefined;
    if (outputs.has(layer) || produced.has(layer)) tensor = layer;
    else tensor = nodeByName.get(layer) ?? lastInModule.get(layer);
    if (tensor === undefined) {
      const { names, deeper } = layerCandidates(graph);
      const more = deeper > 0 ? ` (and ${deeper} deeper module paths, e.g. ${lastDeeper(graph)})` : '';
      throw layerError(
        `Unknown layer '${layer}': expected a graph output, a node output or a module path; candidates: ${names.join(', ')}${more}`,
      );
    }
    tensors[layer] = tensor;
    if (!outputs.has(tensor) && !appended.includes(tensor)) appended.push(tensor);
  }
  return { tensors, appended };
}

/**
 * The model with exactly `tensors` as its graph outputs and without the nodes and initializers they do not need
 * (layer4 and the classifier when PatchCore taps layer2 + layer3): ONNX Runtime runs every node of a graph, fetched
 * or not. Graphs with subgraphs (If, Loop) are not pruned, since a subgraph may read outer tensors by name.
 */
export function restrictOutputs(model: ModelProto, tensors: readonly string[]): ModelProto {
  const g = model.graph;
  const known = new Map<string, ValueInfoProto>([...g.valueInfo, ...g.output].map((v) => [v.name, v]));
  const output = [...new Set(tensors)].map(
    (name) => known.get(name) ?? { name, type: { tensorType: { elemType: TensorDataType.FLOAT } } },
  );
  const hasSubgraphs = g.node.some((n) => n.attribute.some((a) => a.g !== undefined || (a.graphs?.length ?? 0) > 0));
  if (hasSubgraphs) return { ...model, graph: { ...g, output } };
  const needed = new Set(output.map((o) => o.name));
  const keep: boolean[] = new Array(g.node.length).fill(false);
  for (let i = g.node.length - 1; i >= 0; i--) {
    const n = g.node[i];
    if (!n.output.some((o) => needed.has(o))) continue;
    keep[i] = true;
    for (const input of n.input) if (input) needed.add(input);
  }
  const node = g.node.filter((_, i) => keep[i]);
  const initializer = g.initializer.filter((t) => needed.has(t.name));
  const input = g.input.filter((v) => needed.has(v.name) || !g.initializer.some((t) => t.name === v.name));
  const valueInfo = g.valueInfo.filter((v) => needed.has(v.name));
  return { ...model, graph: { ...g, node, initializer, input, output, valueInfo } };
}

function readModel(file: string): { bytes: Uint8Array; model: ModelProto } {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot read the backbone file ${file}: ${(err as Error).message}`);
  }
  try {
    return { bytes, model: decodeModel(bytes) };
  } catch (err) {
    if (err instanceof ProtobufError) {
      throw imiadError('Error', 'ERR_IMIAD_FILE', `The backbone file ${file} is not an ONNX model (${err.message})`);
    }
    throw err;
  }
}

function graphInput(graph: GraphProto): ValueInfoProto {
  // IR < 4 lists initializers among the inputs too; the image input is the one that is not an initializer.
  const initializers = new Set(graph.initializer.map((t) => t.name));
  const inputs = graph.input.filter((i) => !initializers.has(i.name));
  if (inputs.length !== 1) {
    throw imiadError(
      'Error',
      'ERR_IMIAD_LAYOUT',
      `Expected a backbone with exactly one image input but the graph has ${inputs.length}: ${inputs.map((i) => i.name).join(', ')}`,
    );
  }
  return inputs[0];
}

/** Loads a backbone: the given ONNX file, or imiad's default backbone. */
export async function loadBackbone(opts: LoadBackboneOptions): Promise<Backbone> {
  if (!is.object(opts)) throw invalidType('object', 'options', opts);
  const { layers } = opts;
  if (!Array.isArray(layers) || layers.length === 0 || !layers.every((l) => is.string(l) && l.length > 0)) {
    throw invalidType('non-empty array of layer names', 'layers', layers);
  }
  if (opts.file !== undefined && !is.string(opts.file)) throw invalidType('string', 'file', opts.file);
  if (opts.shape !== undefined && !BACKBONE_SHAPES.includes(opts.shape)) {
    throw invalidType(`one of ${BACKBONE_SHAPES.map((s) => `'${s}'`).join(', ')}`, 'shape', opts.shape);
  }
  if (opts.seed !== undefined && !(is.integer(opts.seed) && opts.seed >= 0 && opts.seed <= 0xffffffff)) {
    throw invalidType('integer between 0 and 4294967295', 'seed', opts.seed);
  }
  const cores = os.availableParallelism();
  if (opts.threads !== undefined && !(is.integer(opts.threads) && opts.threads >= 1 && opts.threads <= 1024)) {
    throw invalidType('integer between 1 and 1024', 'threads', opts.threads);
  }
  const threads = opts.threads ?? cores;

  const file = opts.file ?? defaultBackboneFile({ shape: opts.shape, seed: opts.seed });
  const { bytes, model } = readModel(file);
  const resolution = resolveLayers(model.graph, layers);
  const input = graphInput(model.graph);
  const dims = input.type?.tensorType?.shape ?? [];
  const fixed = (i: number): number | null => {
    const v = dims[i]?.value;
    return v !== undefined && v > 0 ? v : null;
  };
  const inputChannels = fixed(1) ?? 3;
  const fixedHeight = fixed(2);
  const fixedWidth = fixed(3);
  const fetched = [...new Set(Object.values(resolution.tensors))];
  const unchanged = fetched.length === model.graph.output.length && model.graph.output.every((o) => fetched.includes(o.name));
  const buffer = unchanged ? bytes : encodeModel(restrictOutputs(model, fetched));
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(buffer, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
      // Spinning worker threads halve the throughput when the cores are shared (another session, the k-NN kernels,
      // other processes): measured 95-128 ms vs 43-72 ms per ResNet-18 image on a loaded 2-core machine.
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    });
  } catch (err) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `ONNX Runtime cannot load the backbone ${file}: ${(err as Error).message}`);
  }
  return new OrtBackbone(session, file, input.name, [...layers], resolution.tensors, inputChannels, fixedHeight, fixedWidth);
}

class OrtBackbone implements Backbone {
  readonly inputSize: number;
  readonly timing: BackboneTiming = { batches: 0, images: 0, totalMs: 0, lastBatchMs: 0 };
  private disposed = false;

  constructor(
    private readonly session: ort.InferenceSession,
    readonly file: string,
    private readonly inputName: string,
    readonly layers: readonly string[],
    readonly tensors: Readonly<Record<string, string>>,
    readonly inputChannels: number,
    private readonly fixedHeight: number | null,
    private readonly fixedWidth: number | null,
  ) {
    this.inputSize = fixedHeight ?? fixedWidth ?? DEFAULT_INPUT_SIZE;
  }

  async extract(batch: Float32Array, n: number, height: number, width: number): Promise<Record<string, FeatureMap>> {
    if (this.disposed) throw imiadError('Error', 'ERR_IMIAD_ARGUMENT', 'The backbone has been disposed');
    if (!is.float32Array(batch)) throw invalidType('Float32Array', 'batch', batch);
    for (const [name, v] of [['n', n], ['height', height], ['width', width]] as const) {
      if (!is.integer(v) || v < 1 || v > 1 << 16) throw invalidType('integer between 1 and 65536', name, v);
    }
    const expected = n * this.inputChannels * height * width;
    if (batch.length !== expected) {
      throw imiadError(
        'RangeError',
        'ERR_IMIAD_DIMS',
        `Expected length of batch to be n * ${this.inputChannels} * height * width (${expected}) but received ${batch.length} of type number`,
      );
    }
    if ((this.fixedHeight !== null && height !== this.fixedHeight) || (this.fixedWidth !== null && width !== this.fixedWidth)) {
      throw imiadError(
        'RangeError',
        'ERR_IMIAD_DIMS',
        `Expected images of ${this.fixedHeight ?? 'any'} x ${this.fixedWidth ?? 'any'} pixels for this backbone but received ${height} x ${width}`,
      );
    }
    const feeds = { [this.inputName]: new ort.Tensor('float32', batch, [n, this.inputChannels, height, width]) };
    const fetches = [...new Set(Object.values(this.tensors))];
    const t0 = process.hrtime.bigint();
    const results = await this.session.run(feeds, fetches);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    this.timing.batches += 1;
    this.timing.images += n;
    this.timing.totalMs += ms;
    this.timing.lastBatchMs = ms;
    const out: Record<string, FeatureMap> = {};
    for (const layer of this.layers) {
      const tensor = results[this.tensors[layer]];
      if (tensor.type !== 'float32' || tensor.dims.length !== 4 || tensor.dims[0] !== n) {
        throw imiadError(
          'Error',
          'ERR_IMIAD_LAYER',
          `Expected layer '${layer}' to be a float32 NCHW feature map with ${n} image(s) but it is ${tensor.type} [${tensor.dims.join(', ')}]`,
        );
      }
      out[layer] = {
        data: tensor.data as Float32Array,
        channels: tensor.dims[1],
        height: tensor.dims[2],
        width: tensor.dims[3],
      };
    }
    return out;
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.session.release();
  }
}
