/**
 * `--json [FILE]`, the same on every command that prints results: with FILE the JSON is written there (atomically:
 * a temporary file in the same folder, then a rename) and the readable output stays on stdout; without FILE (or
 * with `-`) the JSON alone goes to stdout, so that it can be piped.
 */
import * as fs from 'fs';
import * as path from 'path';

import type { Command } from 'commander';

import { imiadError } from '../../bindings/errors';

/** What commander gives for `--json [file]`: undefined (absent), true (no FILE) or the FILE. */
export type JsonFlag = string | boolean | undefined;

export function addJsonOption(cmd: Command, what: string): Command {
  return cmd.option('--json [file]', `${what} as JSON to FILE; without FILE (or with -) the JSON alone goes to stdout`);
}

/** Whether the JSON goes to stdout (and the readable output is left out). */
export function jsonToStdout(flag: JsonFlag): boolean {
  return flag === true || flag === '-';
}

/** Writes `text` as --json asks; returns the file written, or null for stdout or no --json. */
export function writeJsonOutput(flag: JsonFlag, text: string): string | null {
  if (flag === undefined || flag === false) return null;
  if (jsonToStdout(flag)) {
    process.stdout.write(text);
    return null;
  }
  const file = flag as string;
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot write ${file}: ${(err as Error).message}`);
  }
  return file;
}
