/**
 * A one-line progress display for long work on the command line: label, bar, done/total, rate and ETA.
 * Writes to stderr only when it is a TTY (or IMIAD_PROGRESS=1), so piped JSON output stays clean.
 */

export interface Progress {
  /** `detail` (e.g. '2 running') is shown after the counts until the next update. */
  update(done: number, total?: number, detail?: string): void;
  tick(n?: number): void;
  done(message?: string): void;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '--';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

let quiet = false;

/** --quiet: no progress display and no informational lines (info() prints nothing). */
export function setQuiet(value: boolean): void {
  quiet = value;
}

/** An informational line on stderr (paths written, what was skipped), unless --quiet. */
export function info(line: string): void {
  if (!quiet) process.stderr.write(`${line}\n`);
}

export function progress(label: string, total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  const enabled = !quiet && (stream.isTTY === true || process.env.IMIAD_PROGRESS === '1');
  const start = Date.now();
  let current = 0;
  let lastDraw = 0;
  let detail = '';
  const draw = (force = false): void => {
    if (!enabled) return;
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    const width = 24;
    const frac = total > 0 ? Math.min(1, current / total) : 0;
    const filled = Math.round(frac * width);
    const elapsed = (now - start) / 1000;
    const rate = elapsed > 0 ? current / elapsed : 0;
    const eta = rate > 0 ? (total - current) / rate : Infinity;
    const line = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${current}/${total}${detail ? ` ${detail}` : ''} ${rate.toFixed(1)}/s ETA ${formatSeconds(eta)}`;
    stream.write(`\r${line}\x1b[K`);
  };
  return {
    update(done: number, newTotal?: number, newDetail?: string) {
      current = done;
      if (newDetail !== undefined) detail = newDetail;
      if (newTotal !== undefined) total = newTotal;
      draw();
    },
    tick(n = 1) {
      current += n;
      draw();
    },
    done(message?: string) {
      current = total;
      draw(true);
      if (enabled) stream.write(message ? `\r${label}: ${message}\x1b[K\n` : '\n');
    },
  };
}
