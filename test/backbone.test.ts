import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { backboneStages, buildBackboneBytes, buildBackboneModel, defaultBackboneFile } from '../lib/backbone/builder';
import {
  decodeModel,
  encodeModel,
  floatTensor,
  intsAttribute,
  type ModelProto,
  TensorDataType,
  tensorValueInfo,
} from '../lib/backbone/onnx-proto';
import { patchEmbedding } from '../bindings/filters';
import { loadBackbone, restrictOutputs } from '../lib/backbone/session';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-backbone-'));
process.env.IMIAD_CACHE_DIR = path.join(tmp, 'cache');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function noise(length: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  let s = seed >>> 0;
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s >>> 8) / 16777216 - 0.5) * Math.sqrt(12); // unit variance
  }
  return out;
}

/**
 * A hand-built graph: x [1, 2, 2, 2] -> /block/conv/Conv (1x1, weights [[1, -1], [2, 0]]) -> /block/relu/Relu ->
 * /head/Mul (x 3) -> y. Only y is a graph output.
 */
function tinyModel(): ModelProto {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    producerName: 'test',
    producerVersion: '',
    domain: '',
    modelVersion: 0,
    graph: {
      name: 'tiny',
      node: [
        {
          name: '/block/conv/Conv',
          opType: 'Conv',
          domain: '',
          input: ['x', 'w'],
          output: ['conv_out'],
          attribute: [intsAttribute('kernel_shape', [1, 1])],
        },
        { name: '/block/relu/Relu', opType: 'Relu', domain: '', input: ['conv_out'], output: ['relu_out'], attribute: [] },
        { name: '/head/Mul', opType: 'Mul', domain: '', input: ['relu_out', 'three'], output: ['y'], attribute: [] },
      ],
      initializer: [floatTensor('w', [2, 2, 1, 1], new Float32Array([1, -1, 2, 0])), floatTensor('three', [], new Float32Array([3]))],
      input: [tensorValueInfo('x', TensorDataType.FLOAT, [1, 2, 2, 2])],
      output: [tensorValueInfo('y', TensorDataType.FLOAT, [1, 2, 2, 2])],
      valueInfo: [],
    },
  };
}

describe('ONNX protobuf codec', () => {
  test('round-trips a model, keeping fields it does not model', () => {
    const model = tinyModel();
    // metadata_props (field 14): key "k", value "v" -- unknown to the codec, must survive.
    const metadata = Uint8Array.from([0x72, 0x06, 0x0a, 0x01, 0x6b, 0x12, 0x01, 0x76]);
    const bytes = encodeModel({ ...model, unknownFields: [metadata] });
    const decoded = decodeModel(bytes);
    expect(decoded.unknownFields?.map((f) => Array.from(f))).toEqual([Array.from(metadata)]);
    expect(decoded.graph.node.map((n) => n.name)).toEqual(['/block/conv/Conv', '/block/relu/Relu', '/head/Mul']);
    expect(decoded.graph.node[0].attribute[0].ints).toEqual([1, 1]);
    expect(Array.from(new Float32Array(decoded.graph.initializer[0].rawData!.slice().buffer))).toEqual([1, -1, 2, 0]);
    expect(Buffer.from(encodeModel(decoded)).equals(Buffer.from(bytes))).toBe(true);
  });

  test('negative int64 attributes survive (ten-byte varints)', () => {
    const model = tinyModel();
    model.graph.node[0].attribute.push(intsAttribute('axes', [-1, -3, 2 ** 40]));
    const decoded = decodeModel(encodeModel(model));
    expect(decoded.graph.node[0].attribute[1].ints).toEqual([-1, -3, 2 ** 40]);
  });

  test('malformed bytes are an ERR_IMIAD_FILE error naming the file', async () => {
    const file = path.join(tmp, 'garbage.onnx');
    fs.writeFileSync(file, Buffer.from([0x0a, 0xff, 0xff, 0x01]));
    await expect(loadBackbone({ file, layers: ['x'] })).rejects.toMatchObject({
      code: 'ERR_IMIAD_FILE',
      message: `The backbone file ${file} is not an ONNX model (truncated length-delimited field)`,
    });
    await expect(loadBackbone({ file: path.join(tmp, 'missing.onnx'), layers: ['x'] })).rejects.toMatchObject({ code: 'ERR_IMIAD_FILE' });
  });
});

describe('default backbone builder', () => {
  test('the same seed gives the same bytes; another seed other weights', () => {
    const a = buildBackboneBytes({ seed: 7 });
    const b = buildBackboneBytes({ seed: 7 });
    const c = buildBackboneBytes({ seed: 8 });
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    expect(a.length).toBe(c.length);
    expect(Buffer.from(a).equals(Buffer.from(c))).toBe(false);
  });

  test('ResNet-18 and WideResNet-50-2 shapes: conv counts and stage channels', () => {
    const r18 = buildBackboneModel({ shape: 'resnet18' });
    expect(r18.graph.node.filter((n) => n.opType === 'Conv')).toHaveLength(20);
    expect(r18.graph.output.map((o) => o.name)).toEqual(['layer1', 'layer2', 'layer3', 'layer4']);
    const params = r18.graph.initializer.reduce((s, t) => s + t.dims.reduce((a, b) => a * b, 1), 0);
    expect(params).toBe(11_166_912); // torchvision resnet18's conv weights (BN folded, no fc)
    expect(backboneStages('wide_resnet50_2').map((s) => s.channels)).toEqual([256, 512, 1024, 2048]);
    const wrn = buildBackboneModel({ shape: 'wide_resnet50_2' });
    expect(wrn.graph.node.filter((n) => n.opType === 'Conv')).toHaveLength(53);
    const w2 = wrn.graph.initializer.find((t) => t.name === 'layer2.0.conv2.weight');
    expect(w2?.dims).toEqual([256, 256, 3, 3]); // width x2: 128 * 2
  });

  test('restricting the outputs prunes the nodes and weights the layers do not need', () => {
    const model = restrictOutputs(buildBackboneModel({ seed: 2 }), ['layer2']);
    expect(model.graph.output.map((o) => o.name)).toEqual(['layer2']);
    expect(model.graph.node.some((n) => n.name.startsWith('/layer3/'))).toBe(false);
    expect(model.graph.node.filter((n) => n.opType === 'Conv')).toHaveLength(1 + 4 + 5);
    expect(model.graph.initializer.some((t) => t.name.startsWith('layer3.'))).toBe(false);
  });

  test('the cache file is written once, atomically, under IMIAD_CACHE_DIR', () => {
    const dir = path.join(tmp, 'cache-test');
    const file = defaultBackboneFile({ seed: 1, dir });
    expect(path.basename(file)).toMatch(/^resnet18-seed1-[0-9a-f]{12}\.onnx$/);
    const mtime = fs.statSync(file).mtimeMs;
    expect(defaultBackboneFile({ seed: 1, dir })).toBe(file);
    expect(fs.statSync(file).mtimeMs).toBe(mtime);
    expect(fs.readdirSync(dir)).toEqual([path.basename(file)]);
  });
});

describe('backbone session', () => {
  test('ResNet-18 at 224 px: layer shapes, sane activations, timing', async () => {
    const bb = await loadBackbone({ layers: ['layer1', 'layer2', 'layer3', 'layer4'], threads: 2 });
    expect(bb.inputSize).toBe(224);
    expect(bb.layers).toEqual(['layer1', 'layer2', 'layer3', 'layer4']);
    const out = await bb.extract(noise(2 * 3 * 224 * 224, 1), 2, 224, 224);
    const shapes = Object.fromEntries(Object.entries(out).map(([k, v]) => [k, [v.channels, v.height, v.width]]));
    expect(shapes).toEqual({ layer1: [64, 56, 56], layer2: [128, 28, 28], layer3: [256, 14, 14], layer4: [512, 7, 7] });
    for (const v of Object.values(out)) {
      expect(v.data.length).toBe(2 * v.channels * v.height * v.width);
      let sq = 0;
      for (const x of v.data) sq += x * x;
      const rms = Math.sqrt(sq / v.data.length);
      expect(rms).toBeGreaterThan(0.3);
      expect(rms).toBeLessThan(5);
    }
    expect(bb.timing.batches).toBe(1);
    expect(bb.timing.images).toBe(2);
    expect(bb.timing.totalMs).toBeGreaterThan(0);
    await bb.dispose();
  });

  test('a batch gives the same features as its images one by one', async () => {
    const bb = await loadBackbone({ layers: ['layer2'] });
    const x = noise(2 * 3 * 64 * 64, 5);
    const both = (await bb.extract(x, 2, 64, 64)).layer2;
    const second = (await bb.extract(x.subarray(3 * 64 * 64), 1, 64, 64)).layer2;
    const half = both.data.length / 2;
    let worst = 0;
    for (let i = 0; i < half; i++) worst = Math.max(worst, Math.abs(both.data[half + i] - second.data[i]));
    expect(worst).toBeLessThan(1e-4);
    await expect(bb.extract(x, 3, 64, 64)).rejects.toMatchObject({
      code: 'ERR_IMIAD_DIMS',
      message: 'Expected length of batch to be n * 3 * height * width (36864) but received 24576 of type number',
    });
    await bb.dispose();
  });

  test('features are local and feed PatchCore\'s patch embedding', async () => {
    const bb = await loadBackbone({ layers: ['layer2', 'layer3'] });
    const size = 128;
    const a = noise(3 * size * size, 21);
    const b = a.slice();
    // A 16 x 16 "defect" in the top-left corner of image b.
    for (let c = 0; c < 3; c++) for (let y = 8; y < 24; y++) for (let x = 8; x < 24; x++) b[(c * size + y) * size + x] += 2;
    const both = new Float32Array(2 * 3 * size * size);
    both.set(a);
    both.set(b, a.length);
    const f = await bb.extract(both, 2, size, size);
    const l2 = f.layer2; // 128 x 16 x 16
    const cells = l2.height * l2.width;
    const change = (cell: number): number => {
      let s = 0;
      for (let c = 0; c < l2.channels; c++) s += (l2.data[(l2.channels + c) * cells + cell] - l2.data[c * cells + cell]) ** 2;
      return s;
    };
    // The defect spans cells 1..2 of the 8-pixel grid; the far corner is outside every receptive field's centre.
    expect(change(2 * l2.width + 2)).toBeGreaterThan(100 * (change(15 * l2.width + 15) + 1e-12));
    const e = await patchEmbedding([f.layer2, f.layer3], { n: 2 });
    expect([e.dims, e.height, e.width, e.embeddings.length]).toEqual([1024, 16, 16, 2 * 256 * 1024]);
    await bb.dispose();
  });

  test('intermediate outputs of a hand-built graph: tensor names, node names and module paths', async () => {
    const file = path.join(tmp, 'tiny.onnx');
    fs.writeFileSync(file, encodeModel(tinyModel()));
    const bb = await loadBackbone({ file, layers: ['block', '/block/conv/Conv', 'relu_out', 'y', 'block.conv'] });
    expect(bb.tensors).toEqual({ block: 'relu_out', '/block/conv/Conv': 'conv_out', relu_out: 'relu_out', y: 'y', 'block.conv': 'conv_out' });
    // x: channel 0 = [1, 2, 3, 4], channel 1 = [4, 3, 2, 1]
    const out = await bb.extract(new Float32Array([1, 2, 3, 4, 4, 3, 2, 1]), 1, 2, 2);
    expect(Array.from(out['/block/conv/Conv'].data)).toEqual([-3, -1, 1, 3, 2, 4, 6, 8]);
    expect(Array.from(out.block.data)).toEqual([0, 0, 1, 3, 2, 4, 6, 8]);
    expect(Array.from(out.y.data)).toEqual([0, 0, 3, 9, 6, 12, 18, 24]);
    await expect(bb.extract(new Float32Array(3 * 3 * 2), 1, 3, 3)).rejects.toMatchObject({ code: 'ERR_IMIAD_DIMS' });
    await bb.dispose();
  });

  test('an unknown layer is ERR_IMIAD_LAYER and lists the candidates', async () => {
    const file = path.join(tmp, 'tiny2.onnx');
    fs.writeFileSync(file, encodeModel(tinyModel()));
    await expect(loadBackbone({ file, layers: ['layer9'] })).rejects.toMatchObject({
      code: 'ERR_IMIAD_LAYER',
      message: "Unknown layer 'layer9': expected a graph output, a node output or a module path; candidates: y, block, block.conv, block.relu, head",
    });
    await expect(loadBackbone({ layers: ['layer5'] })).rejects.toThrow(
      "Unknown layer 'layer5': expected a graph output, a node output or a module path; candidates: layer1, layer2, layer3, layer4, " +
        'conv1, relu, maxpool, layer1.0, layer1.1, layer2.0, layer2.1, layer3.0, layer3.1, layer4.0, layer4.1 ' +
        '(and 38 deeper module paths, e.g. layer4.1.relu_1)',
    );
    await expect(loadBackbone({ layers: [] })).rejects.toThrow('Expected non-empty array of layer names for layers but received Array(0) of type object');
  });
});

const torchReady =
  fs.existsSync('/usr/bin/python3') &&
  spawnSync('/usr/bin/python3', ['-c', 'import torch, torchvision'], { stdio: 'ignore' }).status === 0;
if (!torchReady) {
  // eslint-disable-next-line no-console
  console.log('skipping scripts/export-backbone.py tests: /usr/bin/python3 lacks torch or torchvision');
}
const withTorch = torchReady ? describe : describe.skip;

withTorch('scripts/export-backbone.py --random-weights (Debian torch)', () => {
  const script = path.join(__dirname, '..', 'scripts', 'export-backbone.py');
  const stagesFile = path.join(tmp, 'r18-stages.onnx');
  const classifierFile = path.join(tmp, 'r18-classifier.onnx');

  beforeAll(() => {
    for (const [file, extra] of [[stagesFile, []], [classifierFile, ['--classifier']]] as const) {
      const r = spawnSync('/usr/bin/python3', [script, '--arch', 'resnet18', '--random-weights', '--seed', '3', '--out', file, ...extra], {
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`export failed: ${r.stderr}`);
    }
  });

  test('imiad loads the export, resolves layer2/layer3 by name and by module path, with equal features', async () => {
    const stages = await loadBackbone({ file: stagesFile, layers: ['layer2', 'layer3'] });
    const classifier = await loadBackbone({ file: classifierFile, layers: ['layer2', 'layer3'] });
    expect(stages.tensors).toEqual({ layer2: 'layer2', layer3: 'layer3' });
    expect(classifier.tensors).toEqual({
      layer2: '/layer2/layer2.1/relu_1/Relu_output_0',
      layer3: '/layer3/layer3.1/relu_1/Relu_output_0',
    });
    const x = noise(3 * 224 * 224, 9);
    const a = await stages.extract(x, 1, 224, 224);
    const b = await classifier.extract(x, 1, 224, 224);
    expect([a.layer2.channels, a.layer2.height, a.layer2.width]).toEqual([128, 28, 28]);
    expect([a.layer3.channels, a.layer3.height, a.layer3.width]).toEqual([256, 14, 14]);
    for (const layer of ['layer2', 'layer3']) {
      let worst = 0;
      let scale = 0;
      for (let i = 0; i < a[layer].data.length; i++) {
        worst = Math.max(worst, Math.abs(a[layer].data[i] - b[layer].data[i]));
        scale = Math.max(scale, Math.abs(a[layer].data[i]));
      }
      expect(scale).toBeGreaterThan(0);
      expect(worst).toBeLessThan(1e-4 * scale);
    }
    await stages.dispose();
    await classifier.dispose();
  });
});
