/**
 * The training device of the trained detectors (`device: 'auto' | 'cpu' | 'cuda'`, CLI `--device`), as the kernels
 * resolve theirs (bindings/device.ts; the command line's --device sets the default of both): CUDA when the training addon was built against a CUDA-enabled libtorch
 * (`LIBTORCH=... npm run build:train`) and libtorch sees a GPU; 'auto' otherwise falls back to the CPU with the
 * usual one-line notice (once per process); 'cuda' without it is ERR_IMIAD_CUDA_UNAVAILABLE.
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
  return trainAddon().cudaAvailable ? null : 'the training addon was built against a libtorch without CUDA or sees no GPU';
}

/** The device a trained detector's network lives on. */
export function resolveTrainDevice(device: Device): 'cpu' | 'cuda' {
  if (device === 'cpu') return 'cpu';
  const reason = trainCudaMissingReason();
  if (reason === null) return 'cuda';
  if (device === 'cuda') throw cudaUnavailableError(reason);
  if (!noticeShown && !deviceNoticeSilenced()) {
    noticeShown = true;
    process.stderr.write(cpuFallbackNotice(reason));
  }
  return 'cpu';
}
