/** The one registry of detectors: what createDetector, `imiad run` and the grid read. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { readGridConfig } from '../lib/runner/config';
import { runParams } from '../lib/cli/run';
import { createDetector, findMethod, METHOD_NAMES, METHODS, methodNames, TRAINED_METHODS } from '../lib/methods';

describe('registry', () => {
  test('lists every detector once, in the paper’s order, with its facts', () => {
    expect(methodNames()).toEqual(['patchcore', 'padim', 'spade', 'dne', 'stpm', 'rd4ad', 'cfa', 'cflow', 'csflow', 'fastflow', 'cutpaste', 'devnet', 'dra', 'bgad', 'prn', 'semirest', 'regad', 'draem', 'favae', 'igd', 'gcad']);
    expect([...METHOD_NAMES]).toEqual(methodNames());
    expect([...TRAINED_METHODS]).toEqual(['stpm', 'rd4ad', 'cfa', 'cflow', 'csflow', 'fastflow', 'cutpaste', 'devnet', 'dra', 'bgad', 'prn', 'semirest', 'regad', 'draem', 'favae', 'igd', 'gcad']);
    expect(new Set(methodNames()).size).toBe(METHODS.length);
    expect(findMethod('dne')).toMatchObject({ hasMaps: false, trained: false, continual: 'accumulate' });
    expect(findMethod('padim')).toMatchObject({ continual: 'statistics', imageSize: 256, cropSize: 224, normalisation: 'imagenet' });
    expect(findMethod('stpm')).toMatchObject({ trained: true, continual: 'sequential', cropSize: 256 });
    expect(findMethod('cutpaste')).toMatchObject({ trained: true, hasMaps: false, imageSize: 224, cropSize: 224, continual: 'sequential', normalisation: 'imagenet' });
    // Only the supervised detectors learn from the labelled anomalies (and refuse to run without them).
    expect(METHODS.filter((m) => m.usesLabelledAnomalies).map((m) => m.name)).toEqual(['devnet', 'dra', 'bgad', 'prn', 'semirest']);
    expect(findMethod('draem')).toMatchObject({ trained: true, continual: 'sequential', imageSize: 256, cropSize: 256, normalisation: 'unit', hasMaps: true });
    expect(METHODS.filter((m) => m.normalisation === 'unit').map((m) => m.name)).toEqual(['regad', 'draem', 'favae']);
    expect(findMethod('favae')).toMatchObject({ trained: true, continual: 'sequential', imageSize: 128, cropSize: 128, normalisation: 'unit' });
  });

  test('createDetector builds the entry’s detector; the detector agrees with its entry', () => {
    for (const m of METHODS.filter((e) => !e.trained)) {
      const d = createDetector(m.name, { imageSize: 64, cropSize: 64 });
      expect(d.name).toBe(m.name);
      expect(d.usesLabelledAnomalies).toBe(m.usesLabelledAnomalies);
    }
  });

  test('method-specific options are refused for other methods, naming the methods that take them', () => {
    const base = { dataset: 'mvtec', root: '.', method: 'padim' };
    expect(() => runParams({ ...base, coreset: '0.5' })).toThrow('--coreset applies to --method patchcore, not padim');
    expect(() => runParams({ ...base, reweight: '3' })).toThrow('--reweight applies to --method patchcore, not padim');
    expect(() => runParams({ ...base, epochs: '3' })).toThrow('--epochs applies to the trained methods (stpm, rd4ad, cfa, cflow, csflow, fastflow, cutpaste, devnet, dra, bgad, prn, semirest, regad, draem, favae, igd, gcad), not padim');
    expect(runParams({ ...base, method: 'patchcore', coreset: '0.5', reweight: '3' })).toEqual({ coreset: 0.5, reweight: 3 });
    expect(runParams({ ...base, method: 'stpm', epochs: '3', lr: '0.1' })).toEqual({ epochs: 3, lr: 0.1 });
    expect(() => runParams({ ...base, textureRoot: '/data/dtd' })).toThrow('--texture-root applies to --method prn|semirest|draem, not padim');
    expect(runParams({ ...base, method: 'draem', textureRoot: '/data/dtd', epochs: '3' })).toEqual({ textureRoot: '/data/dtd', epochs: 3 });
  });

  test('the grid refuses a method the registry does not hold', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-registry-'));
    try {
      const file = path.join(dir, 'g.yaml');
      fs.writeFileSync(file, 'datasets: [{ name: mvtec, root: /tmp }]\nmethods: [patchcore, cflowx]\nsettings: [vanilla]\n');
      expect(() => readGridConfig(file)).toThrow(`Grid file ${file}: methods[1] is 'cflowx', expected one of patchcore, padim, spade, dne, stpm, rd4ad, cfa, cflow, csflow, fastflow, cutpaste, devnet, dra, bgad, prn, semirest, regad, draem, favae, igd, gcad`);
      fs.writeFileSync(file, 'datasets: [{ name: mvtec, root: /tmp }]\nmethods: [patchcore, { name: stpm }]\nsettings: [vanilla]\n');
      expect(readGridConfig(file).methods.map((m) => m.name)).toEqual(['patchcore', 'stpm']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
