import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import {
  cudaBuildCommand,
  cpuFallbackNotice,
  cudaAddonPath,
  driverMissingReason,
  kernelAddon,
  probeCuda,
  probeCudaUncached,
  resolveDevice,
  testLoadCudaAddon,
} from '../bindings/device';
import { cpuAddonPath, packageRoot } from '../bindings/load';
import { greedyCoreset, KnnIndex, knnSearch } from '../lib/index';

const root = packageRoot();
const builtAddon = path.join(root, 'build-cuda', 'Release', 'imiad_cuda.node');
const probe = probeCuda();

// The tests of the fallback need a machine where CUDA is not usable; the GPU-vs-CPU tests need one where it is.
// Whichever set cannot run here is skipped with the reason printed.
const noGpuTest = probe.usable ? test.skip : test;
const gpuTest = probe.usable ? test : test.skip;
if (probe.usable) {
  console.log(`CUDA fallback tests skipped: a usable GPU is present (${probe.device?.name})`);
} else {
  console.log(`GPU-vs-CPU comparison tests skipped: ${probe.reason}`);
}

// test/cuda/emulated-addon.sh (and a GPU machine's check) set IMIAD_CUDA_EXPECT_DEVICE: there a device that is not
// usable is a failure, not a reason to skip the GPU-vs-CPU tests.
(process.env.IMIAD_CUDA_EXPECT_DEVICE ? test : test.skip)('IMIAD_CUDA_EXPECT_DEVICE: the CUDA device is usable', () => {
  expect(probe.reason ?? '').toBe('');
  expect(probe.usable).toBe(true);
});

/** Runs a script in a fresh node process (its own probe cache) against the compiled dist/ tree. */
function runNode(script: string, env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', script], { cwd: root, env: { ...process.env, ...env }, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The reason this machine has no CUDA, worked out from the same facts the probe reads. */
function expectedReason(addonPath: string): string {
  if (!fs.existsSync(addonPath)) {
    return `the CUDA addon is not built (${addonPath} is missing; build it with: ${cudaBuildCommand(root, root)})`;
  }
  return 'no NVIDIA kernel driver is loaded (/proc/driver/nvidia/version is missing)';
}

describe('device resolution without a usable GPU', () => {
  test("'cpu' always resolves to the CPU, without probing", () => {
    expect(resolveDevice('cpu')).toBe('cpu');
  });

  noGpuTest("'cuda' throws ERR_IMIAD_CUDA_UNAVAILABLE with the reason", () => {
    const expected = `CUDA was requested (device: 'cuda') but is unavailable: ${expectedReason(cudaAddonPath())}`;
    expect(() => resolveDevice('cuda')).toThrow(expected);
    try {
      resolveDevice('cuda');
    } catch (err) {
      expect((err as { code?: string }).code).toBe('ERR_IMIAD_CUDA_UNAVAILABLE');
    }
    expect(() => kernelAddon('cuda')).toThrow(expected);
  });

  noGpuTest("'auto' falls back to the CPU with a single notice per process", () => {
    const script = `
      const d = require('./dist/bindings/device');
      const a = d.resolveDevice('auto');
      const b = d.resolveDevice('auto');
      const k = d.kernelAddon('auto');
      process.stdout.write([a, b, k.backend, k.addon.backend].join(' '));`;
    const r = runNode(script);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('cpu cpu cpu cpu');
    expect(r.stderr).toBe(cpuFallbackNotice(expectedReason(cudaAddonPath())));
    expect(r.stderr.split('\n').filter((l) => l !== '')).toHaveLength(1);
  });

  noGpuTest('a missing CUDA addon file is the reason given', () => {
    const missing = path.join(os.tmpdir(), `imiad-no-such-dir-${process.pid}`, 'imiad_cuda.node');
    const r = runNode(
      `try { require('./dist/bindings/device').resolveDevice('cuda'); } catch (e) { process.stdout.write(e.code + '|' + e.message); }`,
      { IMIAD_CUDA_ADDON: missing },
    );
    expect(r.stdout).toBe(
      `ERR_IMIAD_CUDA_UNAVAILABLE|CUDA was requested (device: 'cuda') but is unavailable: the CUDA addon is not built (${missing} is missing; build it with: ${cudaBuildCommand(root, root)})`,
    );
  });

  test('a file that is not a loadable addon fails its test-load in the child, not in this process', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-cuda-'));
    const bogus = path.join(dir, 'imiad_cuda.node');
    fs.writeFileSync(bogus, 'not a shared object\n');
    try {
      const { device, reason } = testLoadCudaAddon(bogus);
      expect(device).toBeUndefined();
      expect(reason.startsWith(`the test-load of ${bogus} failed (exit code 1: `)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  noGpuTest('the built CUDA addon loads without a driver and reports why there is no device', () => {
    if (!fs.existsSync(builtAddon)) {
      console.log(`skipped: ${builtAddon} is not built (npm run build:cuda)`);
      return;
    }
    const { device, reason } = testLoadCudaAddon(builtAddon);
    expect(device).toBeDefined();
    expect(device?.available).toBe(false);
    if (driverMissingReason() !== '') {
      expect(device?.reason).toBe('no NVIDIA driver was found (libcuda.so.1 could not be loaded)');
      expect(reason).toBe('no usable CUDA device: no NVIDIA driver was found (libcuda.so.1 could not be loaded)');
    }
    expect(probeCudaUncached(builtAddon).usable).toBe(false);
  });
});

describe('separate CUDA binary', () => {
  test('the CUDA addon is never looked for beside the CPU addon', () => {
    expect(path.dirname(cudaAddonPath())).not.toBe(path.dirname(cpuAddonPath()));
  });

  test('no CUDA addon file lies in build/Release or prebuilds', () => {
    const found: string[] = [];
    const walk = (dir: string): void => {
      if (!fs.existsSync(dir)) return;
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(p);
        else if (entry.name.includes('cuda')) found.push(p);
      }
    };
    walk(path.join(root, 'build', 'Release'));
    walk(path.join(root, 'prebuilds'));
    expect(found).toEqual([]);
  });

  test('the CPU addon does not link the CUDA runtime', () => {
    const binary = fs.readFileSync(cpuAddonPath());
    expect(binary.includes('cudaMalloc')).toBe(false);
    expect(binary.includes('libcudart')).toBe(false);
  });

  test('the built CUDA addon carries the CUDA runtime statically', () => {
    if (!fs.existsSync(builtAddon)) {
      console.log(`skipped: ${builtAddon} is not built (npm run build:cuda)`);
      return;
    }
    const binary = fs.readFileSync(builtAddon);
    expect(binary.includes('cudaMalloc')).toBe(true);
    // Dynamically linked, the file would name the runtime's shared library among its dependencies.
    expect(binary.includes('libcudart.so')).toBe(false);
  });
});

// ---- GPU-vs-CPU: run only where a GPU is usable. ----

function randomMatrix(rows: number, dims: number, seed: number, offset = 0): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(rows * dims);
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = offset + (s / 2 ** 32 - 0.5) * 2;
  }
  return out;
}

// test/cuda/emulated-addon.sh runs this file against an addon whose kernels run on the CPU through an emulation
// of CUDA: the same checks, on shapes such an emulation finishes in seconds.
const emulated = probe.device?.name === 'CPU emulation';

describe('GPU and CPU agree (bit for bit)', () => {
  const knnCases: Array<[number, number, number, number, number]> = emulated
    ? [
        [3000, 64, 10, 1, 0],
        [3000, 68, 10, 9, 0],
        [1500, 37, 10, 64, 0],
        [5000, 64, 5, 9, 300],
        [2000, 16, 4, 1024, 0],
        [3000, 16, 4, 1500, 0],
        // With the emulated 300 MB device: two query tiles (120 queries each) and two bank chunks.
        [33000, 4, 130, 9, 0],
      ]
    : [
        [20000, 1024, 300, 1, 0],
        [20000, 1024, 300, 9, 0],
        [5000, 37, 200, 64, 0],
        [40000, 64, 100, 9, 300],
        [3000, 128, 50, 1024, 0],
        [3000, 16, 20, 1500, 0],
      ];
  gpuTest.each(knnCases)('k-NN: %i x %i bank, %i queries, k = %i, offset %i', async (rows, dims, nq, k, offset) => {
    const bank = randomMatrix(rows, dims, 1, offset);
    const queries = randomMatrix(nq, dims, 2, offset);
    const cpu = await new KnnIndex(bank, { dims, device: 'cpu' }).search(queries, k);
    const gpuIndex = new KnnIndex(bank, { dims, device: 'cuda' });
    expect(gpuIndex.device).toBe('cuda');
    const gpu = await gpuIndex.search(queries, k);
    expect(Array.from(gpu.indices)).toEqual(Array.from(cpu.indices));
    expect(Array.from(gpu.distances)).toEqual(Array.from(cpu.distances));
    const oneShot = await knnSearch(bank, queries, { dims, k, device: 'cuda' });
    expect(Array.from(oneShot.indices)).toEqual(Array.from(cpu.indices));
  });

  const coresetCases: Array<[number, number, number, number]> = emulated
    ? [
        [1000, 40, 60, 0],
        [1500, 64, 40, 16],
        [600, 5, 80, 0],
      ]
    : [
        [5000, 128, 500, 0],
        [20000, 256, 2000, 64],
        [3000, 5, 400, 0],
      ];
  gpuTest.each(coresetCases)('greedy coreset: %i x %i, count %i, projectionDims %i', async (rows, dims, count, projectionDims) => {
    const features = randomMatrix(rows, dims, 3);
    const options = { dims, count, projectionDims, seed: 7 };
    const cpu = await greedyCoreset(features, { ...options, device: 'cpu' });
    const gpu = await greedyCoreset(features, { ...options, device: 'cuda' });
    expect(Array.from(gpu)).toEqual(Array.from(cpu));
  });

  // Only the emulated device has a known, small free memory (test/cuda/emulated-addon.sh: 300,000,000 bytes).
  (emulated ? test : test.skip)("a bank larger than the GPU's memory: 'cuda' says the bytes needed, 'auto' uses the CPU", async () => {
    const dims = 1024;
    const bank = randomMatrix(12500, dims, 6);
    const needed = 12500 * dims * 4 + 12500 * 4 + 256 * 2 ** 20;
    expect(() => new KnnIndex(bank, { dims, device: 'cuda' })).toThrow(
      expect.objectContaining({
        name: 'RangeError',
        code: 'ERR_IMIAD_CUDA_MEMORY',
        message: `A k-NN bank of 12500 rows x 1024 dims needs ${needed} bytes of GPU memory but the device has 300000000 bytes free`,
      }),
    );
    const auto = new KnnIndex(bank, { dims, device: 'auto' });
    expect(auto.device).toBe('cpu');
    const queries = bank.subarray(0, 2 * dims);
    const result = await auto.search(queries, 1);
    expect(Array.from(result.indices)).toEqual([0, 1]);
  });

  gpuTest('a cancelled GPU search rejects with AbortError', async () => {
    const dims = emulated ? 4 : 256;
    const bank = randomMatrix(emulated ? 70000 : 200000, dims, 4);
    const index = new KnnIndex(bank, { dims, device: 'cuda' });
    const controller = new AbortController();
    const pending = index.search(randomMatrix(emulated ? 20 : 20000, dims, 5), 9, { signal: controller.signal });
    setTimeout(() => controller.abort(), 5);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
  });
});
