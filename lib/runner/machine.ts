/**
 * The one description of the machine a result was measured on: the results store records machineDescription(), the
 * benchmarks (bench/common.ts machineInfo) record hostDescription() plus their thread count.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { MachineDescription } from './types';

export type HostDescription = Pick<MachineDescription, 'cpu' | 'cores' | 'memoryBytes' | 'node' | 'platform'>;

/** CPU model, logical cores, memory, Node version and platform. */
export function hostDescription(): HostDescription {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryBytes: os.totalmem(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

/** NVIDIA GPU models from the driver's /proc files (no driver library loaded), or undefined. */
function nvidiaGpus(): string | undefined {
  const dir = '/proc/driver/nvidia/gpus';
  try {
    const models = fs.readdirSync(dir).map((bus) => /^Model:\s*(.+)$/m.exec(fs.readFileSync(path.join(dir, bus, 'information'), 'utf8'))?.[1].trim()).filter((m): m is string => !!m);
    return models.length ? models.join(', ') : undefined;
  } catch {
    return undefined;
  }
}

export function machineDescription(): MachineDescription {
  const gpu = nvidiaGpus();
  return {
    ...hostDescription(),
    hostname: os.hostname(),
    ...(gpu ? { gpu } : {}),
  };
}
