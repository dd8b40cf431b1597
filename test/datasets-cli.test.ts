/** `imiad synth` and `imiad datasets inspect` through the command line program (in process). */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { runCli } from './helpers/cli';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const run = runCli;

describe('imiad synth + datasets inspect', () => {
  it('agree for a generated MVTec AD tree, as JSON and as a table', async () => {
    const root = path.join(tmp, 'mvtec');
    const synth = await run(['synth', '--layout', 'mvtec', '--out', root, '--size', '40', '--train', '3', '--test', '4', '--json']);
    expect(synth.code).toBe(0);
    const inspect = await run(['datasets', 'inspect', '--dataset', 'mvtec', '--root', root, '--json']);
    expect(inspect.code).toBe(0);
    expect(JSON.parse(inspect.stdout)).toEqual(JSON.parse(synth.stdout));
    expect(JSON.parse(inspect.stdout).woven).toEqual({
      train_normal: 3,
      train_anomaly: 0,
      validation_normal: 0,
      test_normal: 2,
      test_anomaly: 2,
      defect_types: ['crack', 'hole'],
      min_size: [40, 40],
      max_size: [40, 40],
    });
    const table = await run(['datasets', 'inspect', '--dataset', 'mvtec', '--root', root]);
    expect(table.stdout.split('\n')[0]).toBe('category  train normal  train anomaly  val normal  test normal  test anomaly  defect types  min size  max size');
    expect(table.stdout).toContain('woven: crack, hole');
  });

  it('exits with 2 and one clear line on bad input', async () => {
    const missing = path.join(tmp, 'nothing-here');
    const r = await run(['datasets', 'inspect', '--dataset', 'btad', '--root', missing]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`imiad: Missing folder ${missing} (dataset root)\n`);
    const bad = await run(['datasets', 'inspect', '--dataset', 'coco', '--root', tmp]);
    expect(bad.stderr).toBe("imiad: Unknown dataset 'coco' (one of mvtec, mpdd, loco, btad, mtd, visa, dagm, folder)\n");
    const layout = await run(['synth', '--layout', 'kitti', '--out', path.join(tmp, 'k')]);
    expect(layout.code).toBe(2);
    expect(layout.stderr).toBe('imiad: Expected one of mvtec, mpdd, loco, btad, mtd, visa, dagm for --layout but received kitti of type string\n');
    const size = await run(['synth', '--layout', 'dagm', '--out', path.join(tmp, 'd'), '--size', 'big']);
    expect(size.stderr).toBe('imiad: Expected non-negative integer for --size but received big of type string\n');
  });

  it('inspects the folder layout from flags', async () => {
    const root = path.join(tmp, 'mvtec');
    const r = await run([
      'datasets',
      'inspect',
      '--dataset',
      'folder',
      '--root',
      root,
      '--normal',
      'disc/train/good',
      '--anomaly',
      'disc/test/hole',
      '--masks',
      'disc/ground_truth/hole',
      '--json',
    ]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).mvtec).toMatchObject({ train_normal: 2, test_normal: 1, test_anomaly: 1, defect_types: ['anomaly'] });
  });
});
