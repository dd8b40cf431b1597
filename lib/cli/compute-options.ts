/**
 * `--device` and `--quiet`, the same on every command that computes (run, evaluate, predict, grid, demo, synth):
 * --device sets the device of every kernel call that names none (auto | cpu | cuda; cuda without a usable GPU is an
 * error naming the reason); --quiet prints no progress bars, no CPU fallback notice and no informational lines, only
 * results and errors.
 */
import type { Command } from 'commander';

import { silenceDeviceNotice } from '../../bindings/device';
import { setDefaultDevice } from '../../bindings/validate';
import type { Device } from '../../bindings/validate';
import { setQuiet } from './progress';

export interface ComputeFlags {
  device?: string;
  quiet?: boolean;
}

export const DEVICE_HELP = 'where the k-NN and coreset kernels and the trained detectors run: auto|cpu|cuda (default auto)';
export const QUIET_HELP = 'no progress bars or notices; only results and errors';

export function addComputeOptions(cmd: Command): Command {
  return cmd.option('--device <device>', DEVICE_HELP).option('--quiet', QUIET_HELP);
}

/** Applies the flags for this process; call first in the command's action (a bad --device throws). */
export function applyComputeOptions(flags: object): void {
  const opts = flags as ComputeFlags;
  setDefaultDevice((opts.device ?? 'auto') as Device);
  setQuiet(opts.quiet === true);
  silenceDeviceNotice(opts.quiet === true);
}
