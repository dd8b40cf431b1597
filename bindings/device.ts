/**
 * Which device a kernel runs on (the `device` option: 'auto' | 'cpu' | 'cuda'), after node-llama-cpp's way with
 * optional GPU binaries: the CUDA addon is a separate file (build-cuda/Release/imiad_cuda.node, built by
 * `npm run build:cuda`, never beside the CPU addon), and it is used only when
 *   1. that file exists,
 *   2. a cheap on-disk check finds the NVIDIA driver (the kernel module's /proc/driver/nvidia/version, or WSL's
 *      /dev/dxg, and the user-space library libcuda.so.1), and
 *   3. a child process loads the addon and its deviceInfo() reports a usable device — so a broken GPU build or
 *      driver can crash only that child, never the host process.
 * The answer is cached per process. 'auto' falls back to the CPU with one notice on stderr per process;
 * 'cuda' without a usable GPU throws ERR_IMIAD_CUDA_UNAVAILABLE with the reason.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { imiadError, type ImiadError } from './errors';
import { cpuAddon, packageRoot } from './load';
import type { Device } from './validate';

/** What the CUDA addon's deviceInfo() reports about CUDA device 0 (CUDA_VISIBLE_DEVICES chooses which GPU). */
export interface CudaDeviceInfo {
  available: boolean;
  /** Why the device is not usable; empty when it is. */
  reason: string;
  deviceCount: number;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
  freeMemory: number;
  driverVersion: number;
  runtimeVersion: number;
}

export interface CudaProbe {
  usable: boolean;
  /** Why CUDA is not used; empty when usable. */
  reason: string;
  addonPath: string;
  device?: CudaDeviceInfo;
}

/** Where the CUDA addon is looked for: $IMIAD_CUDA_ADDON, else build-cuda/Release/imiad_cuda.node in the package. */
export function cudaAddonPath(): string {
  return process.env.IMIAD_CUDA_ADDON || path.join(packageRoot(), 'build-cuda', 'Release', 'imiad_cuda.node');
}

// Folders the dynamic loader commonly finds libcuda.so.1 in (distribution packages, the CUDA compat package,
// NVIDIA's container runtime, WSL).
const DRIVER_LIBRARY_DIRS = [
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/usr/lib64',
  '/usr/lib',
  '/usr/local/nvidia/lib64',
  '/usr/local/cuda/compat',
  '/usr/lib/wsl/lib',
];

/** The cheap on-disk driver check: the reason there is no driver, or '' when one seems present. */
export function driverMissingReason(): string {
  // Only for test/cuda/emulated-addon.sh, whose addon runs the CUDA kernels on the CPU and needs no driver.
  if (process.env.IMIAD_CUDA_SKIP_DRIVER_CHECK === '1') return '';
  if (process.platform !== 'linux') return '';
  if (!fs.existsSync('/proc/driver/nvidia/version') && !fs.existsSync('/dev/dxg')) {
    return 'no NVIDIA kernel driver is loaded (/proc/driver/nvidia/version is missing)';
  }
  const dirs = [...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d !== ''), ...DRIVER_LIBRARY_DIRS];
  if (!dirs.some((d) => fs.existsSync(path.join(d, 'libcuda.so.1')))) {
    return `the NVIDIA driver library libcuda.so.1 was not found (looked in ${dirs.join(', ')})`;
  }
  return '';
}

const TEST_LOAD_TIMEOUT_MS = 60_000;

/**
 * Loads the addon at `addonPath` in a child process and returns its deviceInfo(), or the reason the load failed.
 * Exported for the tests; use probeCuda().
 */
export function testLoadCudaAddon(addonPath: string): { device?: CudaDeviceInfo; reason: string } {
  const script =
    "const addon = require(process.argv[1]); process.stdout.write('\\n' + JSON.stringify(addon.deviceInfo()));";
  const r = spawnSync(process.execPath, ['-e', script, addonPath], {
    encoding: 'utf8',
    timeout: TEST_LOAD_TIMEOUT_MS,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lastLine = (text: string | null): string =>
    (text ?? '')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
      .pop() ?? '';
  if (r.error) return { reason: `the test-load of ${addonPath} did not finish (${r.error.message})` };
  if (r.signal) return { reason: `the test-load of ${addonPath} crashed (${r.signal})` };
  if (r.status !== 0) {
    const detail = lastLine(r.stderr);
    return { reason: `the test-load of ${addonPath} failed (exit code ${r.status}${detail ? `: ${detail}` : ''})` };
  }
  try {
    const device = JSON.parse(lastLine(r.stdout)) as CudaDeviceInfo;
    if (!device.available) return { device, reason: `no usable CUDA device: ${device.reason}` };
    return { device, reason: '' };
  } catch {
    return { reason: `the test-load of ${addonPath} printed no device description` };
  }
}

/**
 * The command that builds the CUDA addon, as it works where it is printed: `npm run build:cuda` in a checkout of
 * imiad (its devDependencies hold cmake-js), prefixed with `cd ROOT &&` when run from elsewhere; in an installed
 * package (no devDependencies) cmake-js through npx, in the package's folder. nvcc and cmake are needed either way.
 */
export function cudaBuildCommand(root = packageRoot(), cwd = process.cwd()): string {
  const checkout = fs.existsSync(path.join(root, 'node_modules', 'cmake-js'));
  const cd = path.resolve(cwd) === path.resolve(root) ? '' : `cd ${/\s/.test(root) ? `"${root}"` : root} && `;
  return checkout ? `${cd}npm run build:cuda` : `${cd}npx cmake-js compile --out build-cuda --CDIMIAD_CUDA=ON`;
}

/** Runs the three checks (file, driver, child test-load) without caching. */
export function probeCudaUncached(addonPath = cudaAddonPath()): CudaProbe {
  if (!fs.existsSync(addonPath)) {
    return { usable: false, addonPath, reason: `the CUDA addon is not built (${addonPath} is missing; build it with: ${cudaBuildCommand()})` };
  }
  const driver = driverMissingReason();
  if (driver !== '') return { usable: false, addonPath, reason: driver };
  const { device, reason } = testLoadCudaAddon(addonPath);
  return { usable: reason === '', addonPath, reason, device };
}

let cachedProbe: CudaProbe | undefined;
let noticeShown = false;

let noticeSilenced = false;

/** --quiet: the CPU fallback notice is not printed (true), or printed again once (false). */
export function silenceDeviceNotice(silenced = true): void {
  noticeSilenced = silenced;
}

/** Whether --quiet silenced the CPU fallback notice (the training addon's device resolution honours it too). */
export function deviceNoticeSilenced(): boolean {
  return noticeSilenced;
}
let cachedAddon: unknown;

/** The cached answer to "can this process use CUDA?" (the checks run once per process). */
export function probeCuda(): CudaProbe {
  if (cachedProbe === undefined) cachedProbe = probeCudaUncached();
  return cachedProbe;
}

/** The error `device: 'cuda'` raises when CUDA is not usable. */
export function cudaUnavailableError(reason: string): ImiadError {
  return imiadError('Error', 'ERR_IMIAD_CUDA_UNAVAILABLE', `CUDA was requested (device: 'cuda') but is unavailable: ${reason}`);
}

/** The one-line notice 'auto' prints (once per process) when it falls back to the CPU. */
export function cpuFallbackNotice(reason: string): string {
  return `imiad: CUDA is unavailable (${reason}); running on the CPU\n`;
}

/** Resolves a `device` option to the backend that runs the kernel. */
export function resolveDevice(device: Device): 'cpu' | 'cuda' {
  if (device === 'cpu') return 'cpu';
  const probe = probeCuda();
  if (probe.usable) return 'cuda';
  if (device === 'cuda') throw cudaUnavailableError(probe.reason);
  if (!noticeShown && !noticeSilenced) {
    noticeShown = true;
    process.stderr.write(cpuFallbackNotice(probe.reason));
  }
  return 'cpu';
}

/** The raw CUDA addon (same export names as the CPU addon's k-NN and coreset, plus deviceInfo). */
export function cudaAddon<T = Record<string, unknown>>(): T {
  const probe = probeCuda();
  if (!probe.usable) throw cudaUnavailableError(probe.reason);
  if (cachedAddon === undefined) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cachedAddon = require(probe.addonPath) as unknown;
  }
  return cachedAddon as T;
}

/**
 * The raw addon a kernel family runs on for a `device` option, and which one it is — the one call the typed
 * wrappers (bindings/knn.ts, bindings/coreset.ts) make to honour `device`. Both addons export the same raw
 * functions with the same arguments.
 */
export function kernelAddon<T = Record<string, unknown>>(device: Device): { backend: 'cpu' | 'cuda'; addon: T } {
  const backend = resolveDevice(device);
  return { backend, addon: backend === 'cuda' ? cudaAddon<T>() : cpuAddon<T>() };
}

/**
 * True when `err` says the GPU lacks the memory for an input (ERR_IMIAD_CUDA_MEMORY): under device 'auto' the
 * wrappers then run the call on the CPU; under 'cuda' the error reaches the caller.
 */
export function isCudaMemoryError(err: unknown): boolean {
  // Duck-typed: an error made by the addon need not be an instance of this realm's Error (jest's vm contexts).
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'ERR_IMIAD_CUDA_MEMORY';
}

/** The largest k the CUDA k-NN serves; the wrapper runs larger k on the CPU. */
export const CUDA_MAX_K = 1024;
