/**
 * The training device of the trained detectors (`device: 'auto' | 'cpu' | 'cuda'`, CLI `--device`), as the kernels
 * resolve theirs (bindings/device.ts): CUDA when the training addon was built against a CUDA-enabled libtorch
 * (`LIBTORCH=... npm run build:train`) and libtorch sees a GPU; 'auto' otherwise falls back to the CPU with the
 * usual one-line notice (once per process); 'cuda' without it is ERR_IMIAD_CUDA_UNAVAILABLE.
 */
import { cpuFallbackNotice, cudaUnavailableError } from '../device';
import { invalidType } from '../errors';
import type { Device } from '../validate';
import { trainAddon } from './train';

let noticeShown = false;

/** Checks a `device` parameter ('auto' when absent). */
export function trainDeviceParam(value: unknown): Device {
  if (value === undefined) return 'auto';
  if (value !== 'auto' && value !== 'cpu' && value !== 'cuda') throw invalidType("'auto', 'cpu' or 'cuda'", 'device', value);
  return value;
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
  if (!noticeShown) {
    noticeShown = true;
    process.stderr.write(cpuFallbackNotice(reason));
  }
  return 'cpu';
}
