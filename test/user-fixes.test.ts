/**
 * What a user of the package meets (issue #17): the CUDA build advice works where it is printed, datasets inspect
 * reports what run would reject and exits 2, a category without training images is named with its folder, --device
 * and --quiet on the computing commands, and the preinstall step that keeps a registry-only install compiler- and
 * download-free (scripts/preinstall.js; the packed tarball itself is installed by scripts/check-package.sh in CI).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { runCli } from './helpers/cli';
import { cudaBuildCommand, probeCudaUncached } from '../bindings/device';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-user-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const repo = path.join(__dirname, '..');

describe('the CUDA notice gives a build command that works where it is printed', () => {
  it('npm run build:cuda in a checkout, cmake-js through npx in an installed package', () => {
    const checkout = path.join(tmp, 'checkout');
    fs.mkdirSync(path.join(checkout, 'node_modules', 'cmake-js'), { recursive: true });
    expect(cudaBuildCommand(checkout, checkout)).toBe('npm run build:cuda');
    expect(cudaBuildCommand(checkout, tmp)).toBe(`cd ${checkout} && npm run build:cuda`);
    const installed = path.join(tmp, 'my project', 'node_modules', 'imiad');
    fs.mkdirSync(installed, { recursive: true });
    expect(cudaBuildCommand(installed, path.join(tmp, 'my project'))).toBe(`cd "${installed}" && npx cmake-js compile --out build-cuda --CDIMIAD_CUDA=ON`);
    const missing = path.join(tmp, 'none', 'imiad_cuda.node');
    expect(probeCudaUncached(missing).reason).toBe(`the CUDA addon is not built (${missing} is missing; build it with: ${cudaBuildCommand()})`);
  });
});

describe('imiad datasets inspect validates what imiad run would reject', () => {
  it('exits 2 listing a truncated PNG and a mask of the wrong size, after the table', async () => {
    const root = path.join(tmp, 'broken');
    expect((await runCli(['synth', '--layout', 'mvtec', '--out', root, '--categories', '1', '--size', '32', '--train', '3', '--test', '4'])).code).toBe(0);
    const ok = await runCli(['datasets', 'inspect', '--dataset', 'mvtec', '--root', root, '--quiet']);
    expect(ok.code).toBe(0);
    expect(ok.stderr).toBe('');
    const png = path.join(root, 'woven', 'train', 'good', '001.png');
    const bytes = fs.readFileSync(png);
    fs.writeFileSync(png, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const defect = fs.readdirSync(path.join(root, 'woven', 'ground_truth'))[0];
    const mask = path.join(root, 'woven', 'ground_truth', defect, '000_mask.png');
    const sharp = (await import('sharp')).default;
    await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 0, g: 0, b: 0 } } }).png().toFile(mask);
    const r = await runCli(['datasets', 'inspect', '--dataset', 'mvtec', '--root', root, '--quiet']);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain('woven');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines[0]).toBe('imiad: 2 problems that imiad run would reject:');
    expect(lines[1]).toMatch(new RegExp(`^  Cannot decode image ${png.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    expect(lines[2]).toBe(`  Mask ${mask} is 16x16 but its image ${path.join(root, 'woven', 'test', defect, '000.png')} is 32x32`);
  });
});

describe('imiad run names the folder of a category without normal training images', () => {
  it('before fitting', async () => {
    const root = path.join(tmp, 'notrain');
    expect((await runCli(['synth', '--layout', 'mvtec', '--out', root, '--categories', '1', '--size', '32', '--train', '2', '--test', '4'])).code).toBe(0);
    for (const f of fs.readdirSync(path.join(root, 'woven', 'train', 'good'))) fs.rmSync(path.join(root, 'woven', 'train', 'good', f));
    const r = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'padim', '--image-size', '32', '--quiet']);
    expect(r.code).toBe(2);
    // The setting's split sees it first, and names the experiment and the category's folder.
    expect(r.stderr).toBe(
      `imiad: mvtec/woven padim {"imageSize":32,"cropSize":32} vanilla seed 0: Category woven (${path.join(root, 'woven')}) has no normal training images\n`,
    );
  });
});

describe('--device and --quiet', () => {
  const root = path.join(tmp, 'small');
  beforeAll(async () => {
    expect((await runCli(['synth', '--layout', 'mvtec', '--out', root, '--categories', '1', '--size', '32', '--train', '3', '--test', '4'])).code).toBe(0);
  });

  it('every computing command has both', async () => {
    for (const command of [['run'], ['evaluate'], ['predict'], ['grid'], ['demo'], ['synth'], ['datasets', 'inspect']]) {
      const help = await runCli([...command, '--help']);
      expect(help.stdout).toContain('--device <device>');
      expect(help.stdout).toContain('--quiet');
    }
  });

  it('a bad --device is an argument error; --quiet leaves stderr empty', async () => {
    const bad = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'dne', '--image-size', '32', '--device', 'gpu']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe("imiad: Expected one of 'auto', 'cpu', 'cuda' for --device but received gpu of type string\n");
    const quiet = await runCli(['run', '--dataset', 'mvtec', '--root', root, '--method', 'patchcore', '--image-size', '32', '--quiet']);
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toBe('');
    expect(quiet.stdout).toContain('image AUROC');
  });
});

const linuxX64 = process.platform === 'linux' && process.arch === 'x64';
(linuxX64 ? describe : describe.skip)('scripts/preinstall.js (runs before every dependency install script)', () => {
  function project(name: string): { dir: string; ort: string; sqlite: string; imiad: string } {
    const dir = path.join(tmp, name);
    const imiad = path.join(dir, 'node_modules', 'imiad');
    const ort = path.join(dir, 'node_modules', 'onnxruntime-node');
    const sqlite = path.join(dir, 'node_modules', 'better-sqlite3');
    fs.mkdirSync(path.join(imiad, 'scripts'), { recursive: true });
    fs.copyFileSync(path.join(repo, 'scripts', 'preinstall.js'), path.join(imiad, 'scripts', 'preinstall.js'));
    fs.mkdirSync(path.join(imiad, 'prebuilds', 'linux-x64'), { recursive: true });
    fs.writeFileSync(path.join(imiad, 'prebuilds', 'linux-x64', `better-sqlite3-v9.9.9-node-v${process.versions.modules}-linux-x64.tar.gz`), 'tarball');
    fs.mkdirSync(path.join(ort, 'bin', 'napi-v6', 'linux', 'x64'), { recursive: true });
    fs.writeFileSync(path.join(ort, 'package.json'), '{"name":"onnxruntime-node","version":"1.30.0"}');
    fs.mkdirSync(sqlite, { recursive: true });
    fs.writeFileSync(path.join(sqlite, 'package.json'), '{"name":"better-sqlite3","version":"9.9.9"}');
    return { dir, ort, sqlite, imiad };
  }
  const cleanEnv = (): NodeJS.ProcessEnv => {
    const env = { ...process.env };
    for (const k of Object.keys(env)) if (/onnxruntime_node_install/i.test(k)) delete env[k];
    return env;
  };

  it('seeds better-sqlite3\'s local prebuild and keeps onnxruntime-node from downloading its CUDA provider', () => {
    const p = project('plain');
    const r = spawnSync(process.execPath, [path.join(p.imiad, 'scripts', 'preinstall.js')], { cwd: p.imiad, env: cleanEnv(), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(fs.readFileSync(path.join(p.sqlite, 'prebuilds', `better-sqlite3-v9.9.9-node-v${process.versions.modules}-linux-x64.tar.gz`), 'utf8')).toBe('tarball');
    for (const f of ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so']) {
      expect(fs.readFileSync(path.join(p.ort, 'bin', 'napi-v6', 'linux', 'x64', f), 'utf8')).toMatch(/^Not a library: imiad installed onnxruntime-node for the CPU only/);
    }
  });

  it('leaves onnxruntime-node alone when the user asked for its CUDA provider', () => {
    const p = project('cuda');
    const r = spawnSync(process.execPath, [path.join(p.imiad, 'scripts', 'preinstall.js')], {
      cwd: p.imiad,
      env: { ...cleanEnv(), npm_config_onnxruntime_node_install: 'cuda12' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(fs.readdirSync(path.join(p.ort, 'bin', 'napi-v6', 'linux', 'x64'))).toEqual([]);
  });
});
