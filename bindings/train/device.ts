/**
 * The training device of the trained detectors (`device: 'auto' | 'cpu' | 'cuda'`, CLI `--device`), as the kernels
 * resolve theirs (bindings/device.ts; the command line's --device sets the default of both): CUDA when the training addon was built against a CUDA-enabled libtorch
 * (`LIBTORCH=... npm run build:train`) and libtorch sees a GPU; 'cuda' without it is ERR_IMIAD_CUDA_UNAVAILABLE.
 * 'auto' falls back to the CPU: with the usual one-line notice (once per process, not with --quiet) when a CUDA
 * libtorch finds no GPU, silently when the addon was built against a CPU-only libtorch (Debian's libtorch-dev): the
 * CPU is then the only device that build has, so a plain training run prints nothing on stderr.
 */
import { cpuFallbackNotice, cudaUnavailableError, deviceNoticeSilenced } from '../device';
import { type Device, requireDevice } from '../validate';
import { trainAddon } from './train';

let noticeShown = false;

/** Checks a `device` parameter; absent, the process default (the command line's --device, else 'auto'). */
export function trainDeviceParam(value: unknown): Device {
  return requireDevice(value, 'device');
}

/** Why libtorch cannot train on CUDA here, or null when it can. */
export function trainCudaMissingReason(): string | null {
  const addon = trainAddon();
  if (addon.cudaAvailable) return null;
  return addon.cudaBuilt ? "the training addon's libtorch sees no GPU" : 'the training addon was built against a libtorch without CUDA';
}

/** The device a trained detector's network lives on. */
export function resolveTrainDevice(device: Device): 'cpu' | 'cuda' {
  if (device === 'cpu') return 'cpu';
  const reason = trainCudaMissingReason();
  if (reason === null) return 'cuda';
  if (device === 'cuda') throw cudaUnavailableError(reason);
  if (!noticeShown && !deviceNoticeSilenced() && trainAddon().cudaBuilt) {
    noticeShown = true;
    process.stderr.write(cpuFallbackNotice(reason));
  }
  return 'cpu';
}
