/**
 * The trainable ResNet-18's weights come from the ONNX backbone (lib/backbone/resnet-weights.ts into
 * native/train/resnet18.h): the libtorch forward equals ONNX Runtime's forward of the same file at layer1..layer4,
 * for imiad's default backbone (BatchNorm folded, no biases), for a graph with BatchNormalization nodes (epsilon
 * 1e-3, a conv bias), and for a torchvision resnet18 exported by PyTorch with random weights and random BN
 * statistics (folded by the exporter into biased convs; skipped, saying why, without /usr/bin/python3's torch and
 * torchvision). A graph that is not a ResNet-18 gets an error naming what is missing.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { trainAddonPath, trainingAvailable, TrainModel } from '../bindings/train/train';
import { buildBackboneModel, defaultBackboneFile } from '../lib/backbone/builder';
import { encodeModel, floatAttribute, floatTensor, type ModelProto, type NodeProto } from '../lib/backbone/onnx-proto';
import { resnet18Weights, type ResNetWeights } from '../lib/backbone/resnet-weights';
import { loadBackbone } from '../lib/backbone/session';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-resnet-weights-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) {
  process.stdout.write(`test/resnet-weights.test.ts: skipping the libtorch comparisons: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
}
const withAddon = available ? test : test.skip;

const torchReady =
  fs.existsSync('/usr/bin/python3') && spawnSync('/usr/bin/python3', ['-c', 'import torch, torchvision'], { stdio: 'ignore' }).status === 0;
if (!torchReady) process.stdout.write('test/resnet-weights.test.ts: skipping the torchvision export: /usr/bin/python3 lacks torch or torchvision\n');
const withTorch = available && torchReady ? test : test.skip;

function noise(length: number, seed: number, scale = Math.sqrt(12), offset = 0): Float32Array {
  const out = new Float32Array(length);
  let s = seed >>> 0;
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s >>> 8) / 16777216 - 0.5) * scale + offset;
  }
  return out;
}

const LAYERS = ['layer1', 'layer2', 'layer3', 'layer4'];

/** Max |libtorch - ONNX Runtime| over each layer, and the layer's max |ONNX Runtime|, on a random batch. */
async function compare(file: string, weights: ResNetWeights, n: number, size: number): Promise<Array<{ worst: number; scale: number }>> {
  const images = noise(n * 3 * size * size, 11);
  const backbone = await loadBackbone({ file, layers: LAYERS, threads: 1 });
  const reference = await backbone.extract(images, n, size, size);
  await backbone.dispose();
  const model = new TrainModel({ kind: 'resnet18', channels: [], seed: 0, threads: 1, lr: 0, weights });
  const out = await model.forward({ data: images, shape: [n, 3, size, size] });
  expect(out.names).toEqual(LAYERS);
  return LAYERS.map((layer, i) => {
    const r = reference[layer];
    expect(out.shapes[i]).toEqual([n, r.channels, r.height, r.width]);
    let worst = 0;
    let scale = 0;
    for (let k = 0; k < r.data.length; k++) {
      worst = Math.max(worst, Math.abs(out.arrays[i][k] - r.data[k]));
      scale = Math.max(scale, Math.abs(r.data[k]));
    }
    return { worst, scale };
  });
}

function expectClose(results: Array<{ worst: number; scale: number }>): void {
  for (const { worst, scale } of results) {
    expect(scale).toBeGreaterThan(0.1);
    expect(worst).toBeLessThanOrEqual(1e-4 * Math.max(1, scale));
  }
}

/** The default backbone with a BatchNormalization (random, epsilon 1e-3) after every Conv and a bias on conv1. */
function withBatchNorm(model: ModelProto): ModelProto {
  const g = model.graph;
  const weightDims = new Map(g.initializer.map((t) => [t.name, t.dims]));
  const nodes: NodeProto[] = [];
  const initializer = [...g.initializer];
  let seed = 100;
  for (const n of g.node) {
    if (n.opType !== 'Conv') {
      nodes.push(n);
      continue;
    }
    const channels = weightDims.get(n.input[1])![0];
    const conv = { ...n, input: [...n.input], output: [`${n.output[0]}_conv`] };
    if (n.name === '/conv1/Conv') {
      initializer.push(floatTensor('conv1.bias', [channels], noise(channels, seed++, 0.4)));
      conv.input.push('conv1.bias');
    }
    nodes.push(conv);
    const names = ['scale', 'B', 'mean', 'var'].map((role) => `${n.name}/bn/${role}`);
    initializer.push(floatTensor(names[0], [channels], noise(channels, seed++, 1, 1)));
    initializer.push(floatTensor(names[1], [channels], noise(channels, seed++, 0.4)));
    initializer.push(floatTensor(names[2], [channels], noise(channels, seed++, 0.4)));
    initializer.push(floatTensor(names[3], [channels], noise(channels, seed++, 1, 1)));
    nodes.push({
      name: `${n.name}/bn`,
      opType: 'BatchNormalization',
      domain: '',
      input: [conv.output[0], ...names],
      output: [n.output[0]],
      attribute: [floatAttribute('epsilon', 1e-3), floatAttribute('momentum', 0.9)],
    });
  }
  return { ...model, graph: { ...g, node: nodes, initializer } };
}

describe('ResNet-18 weights from an ONNX file', () => {
  test("the default backbone's convs and identity BatchNorms under torchvision's names", async () => {
    const file = defaultBackboneFile({ dir: tmp });
    const w = await resnet18Weights(file);
    // 20 convs, each with its BN's 4 tensors.
    expect(w.size).toBe(100);
    expect(w.get('conv1.weight')!.shape).toEqual([64, 3, 7, 7]);
    expect(w.get('layer2.0.downsample.0.weight')!.shape).toEqual([128, 64, 1, 1]);
    expect(w.get('layer4.1.conv2.weight')!.shape).toEqual([512, 512, 3, 3]);
    expect(w.has('layer1.0.downsample.0.weight')).toBe(false);
    const bn = w.get('layer3.1.bn2.running_var')!;
    expect(bn.shape).toEqual([256]);
    expect(bn.data.every((v) => Math.abs(v - (1 - 1e-5)) < 1e-7)).toBe(true);
    expect(w.get('layer3.1.bn2.bias')!.data.every((v) => v === 0)).toBe(true);
    const upTo3 = await resnet18Weights(file, { upToLayer: 3 });
    expect([...upTo3.keys()].some((k) => k.startsWith('layer4'))).toBe(false);
    expect(upTo3.size).toBe(100 - 5 * 4 - 5);
  });

  test('a graph that is not a ResNet-18 is refused, naming what is missing', async () => {
    const wide = defaultBackboneFile({ dir: tmp, shape: 'wide_resnet50_2' });
    await expect(resnet18Weights(wide)).rejects.toMatchObject({
      code: 'ERR_IMIAD_LAYOUT',
      message: `The backbone ${wide} is not a ResNet-18 (torchvision's resnet18 graph): layer1.0.conv1 is missing (expected a 3x3 Conv reading '/maxpool/MaxPool_output_0'; the Convs reading it have kernels 1x1, 1x1)`,
    });
    // Cut after layer3: enough for upToLayer 3, not for 4.
    const full = buildBackboneModel();
    const cut = full.graph.node.findIndex((n) => n.name.startsWith('/layer4/'));
    const truncated = path.join(tmp, 'to-layer3.onnx');
    fs.writeFileSync(truncated, encodeModel({ ...full, graph: { ...full.graph, node: full.graph.node.slice(0, cut), output: [] } }));
    await expect(resnet18Weights(truncated, { upToLayer: 3 })).resolves.toBeInstanceOf(Map);
    await expect(resnet18Weights(truncated)).rejects.toThrow(
      "is not a ResNet-18 (torchvision's resnet18 graph): layer4.0.conv1 is missing (expected a 3x3 Conv reading 'layer3'; nothing reads it)",
    );
    await expect(resnet18Weights(path.join(tmp, 'absent.onnx'))).rejects.toMatchObject({ code: 'ERR_IMIAD_FILE' });
    await expect(resnet18Weights(truncated, { upToLayer: 5 })).rejects.toThrow('Expected integer between 1 and 4 for upToLayer but received 5 of type number');
  });

  withAddon("libtorch's forward equals ONNX Runtime's at layer1..layer4: the default backbone", async () => {
    const file = defaultBackboneFile({ dir: tmp });
    expectClose(await compare(file, await resnet18Weights(file), 2, 64));
  });

  withAddon('... a graph with BatchNormalization nodes (epsilon 1e-3) and a conv bias', async () => {
    const file = path.join(tmp, 'with-bn.onnx');
    fs.writeFileSync(file, encodeModel(withBatchNorm(buildBackboneModel({ seed: 5 }))));
    const w = await resnet18Weights(file);
    expect(w.size).toBe(100);
    expectClose(await compare(file, w, 2, 64));
  });

  withTorch("... a torchvision resnet18 exported by PyTorch (random weights and BN statistics, folded into biased convs)", async () => {
    const file = path.join(tmp, 'torchvision-r18.onnx');
    const script = [
      'import sys, torch, torchvision',
      'torch.manual_seed(7)',
      'net = torchvision.models.resnet18(weights=None)',
      'with torch.no_grad():',
      '    for m in net.modules():',
      '        if isinstance(m, torch.nn.BatchNorm2d):',
      '            m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2)',
      '            m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 1.5)',
      'net.eval()',
      'class Stages(torch.nn.Module):',
      '    def __init__(self, n):',
      '        super().__init__(); self.n = n',
      '    def forward(self, x):',
      '        n = self.n; x = n.maxpool(n.relu(n.bn1(n.conv1(x)))); out = []',
      '        for l in [n.layer1, n.layer2, n.layer3, n.layer4]:',
      '            x = l(x); out.append(x)',
      '        return tuple(out)',
      'dyn = {"input": {0: "b", 2: "h", 3: "w"}}',
      'with torch.no_grad():',
      '    torch.onnx.export(Stages(net), torch.randn(1, 3, 64, 64), sys.argv[1], input_names=["input"],',
      '        output_names=["layer1", "layer2", "layer3", "layer4"], dynamic_axes=dyn, opset_version=13)',
    ].join('\n');
    const r = spawnSync('/usr/bin/python3', ['-c', script, file], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`the torchvision export failed: ${r.stderr}`);
    const w = await resnet18Weights(file);
    expect(w.size).toBe(100);
    // Folded: every BN carries the conv's bias, which the random statistics make nonzero.
    expect(w.get('layer2.0.bn1.bias')!.data.some((v) => Math.abs(v) > 1e-3)).toBe(true);
    expectClose(await compare(file, w, 2, 64));
  });

  withAddon('the libtorch network names every weight it lacks, and a misshapen one', () => {
    const make = (weights: ResNetWeights, upToLayer = 4): TrainModel =>
      new TrainModel({ kind: 'resnet18', channels: [], seed: 0, threads: 1, lr: 0, weights, extra: { upToLayer: [upToLayer] } });
    return resnet18Weights(defaultBackboneFile({ dir: tmp })).then((w) => {
      const missing = new Map(w);
      missing.delete('layer4.1.bn2.running_var');
      missing.delete('conv1.weight');
      expect(() => make(missing)).toThrow('The ResNet-18 weights lack 2 tensor(s): conv1.weight, layer4.1.bn2.running_var');
      // Up to layer 3, layer4's tensors are not needed (and are ignored when present).
      expect(make(new Map([...w].filter(([k]) => !k.startsWith('layer4') && k !== 'conv1.weight').concat([['conv1.weight', w.get('conv1.weight')!]])), 3).parameterCount).toBe(2782784);
      const bad = new Map(w);
      bad.set('layer1.0.conv1.weight', { data: new Float32Array(64 * 64 * 9), shape: [64, 64, 9] });
      expect(() => make(bad)).toThrow('Expected ResNet-18\'s [64, 64, 3, 3] for layer1.0.conv1.weight but the weights hold [64, 64, 9]');
      expect(make(w).parameterCount).toBe(11176512);
    });
  });
});
