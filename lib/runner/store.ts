/**
 * The results store: one SQLite file (better-sqlite3), one row per experiment keyed by experimentKey(). WAL mode so
 * that the report can read while a grid writes; every row is written by one INSERT OR IGNORE inside a transaction,
 * so a process killed at any moment leaves either the whole row or none, and a repeated experiment is never
 * duplicated. synchronous=NORMAL: in WAL mode a commit survives the process being killed (only a power loss can
 * drop the last commits, which are then simply run again).
 */
import * as fs from 'fs';
import * as path from 'path';

import Database from 'better-sqlite3';

import { imiadError } from '../../bindings/errors';
import type { ResultRow } from './types';

export { machineDescription } from './machine';

export const DEFAULT_STORE = path.join('imiad-results', 'results.db');
// 2: the intervals column (bootstrap intervals); a version-1 store gains it when opened for writing.
const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS experiments (
  key          TEXT PRIMARY KEY,
  code_version TEXT NOT NULL,
  dataset      TEXT NOT NULL,
  category     TEXT NOT NULL,
  method       TEXT NOT NULL,
  setting      TEXT NOT NULL,
  seed         INTEGER NOT NULL,
  config       TEXT NOT NULL,
  metrics      TEXT NOT NULL,
  intervals    TEXT,
  efficiency   TEXT NOT NULL,
  manifest     TEXT NOT NULL,
  continual    TEXT,
  heatmaps     TEXT NOT NULL,
  notes        TEXT NOT NULL,
  machine      TEXT NOT NULL,
  started_at   TEXT NOT NULL,
  finished_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS experiments_by_setting ON experiments (setting, dataset, method);
`;

interface RawRow {
  key: string;
  code_version: string;
  config: string;
  metrics: string;
  /** Absent in stores written before schema version 2. */
  intervals?: string | null;
  efficiency: string;
  manifest: string;
  continual: string | null;
  heatmaps: string;
  notes: string;
  machine: string;
  started_at: string;
  finished_at: string;
}

export class ResultsStore {
  readonly file: string;
  private readonly db: Database.Database;
  private readonly insertStatement: Database.Statement;
  private readonly insertTransaction: (row: ResultRow) => boolean;

  constructor(file: string = DEFAULT_STORE, opts: { readonly?: boolean } = {}) {
    this.file = path.resolve(file);
    try {
      if (opts.readonly) {
        if (!fs.existsSync(this.file)) throw new Error('no such file');
        this.db = new Database(this.file, { readonly: true, fileMustExist: true });
      } else {
        fs.mkdirSync(path.dirname(this.file), { recursive: true });
        this.db = new Database(this.file);
        this.db.pragma('journal_mode = WAL');
        this.db.pragma('synchronous = NORMAL');
      }
      this.db.pragma('busy_timeout = 10000');
      if (!opts.readonly) {
        this.db.exec(SCHEMA);
        const columns = (this.db.prepare('PRAGMA table_info(experiments)').all() as { name: string }[]).map((c) => c.name);
        if (!columns.includes('intervals')) this.db.exec('ALTER TABLE experiments ADD COLUMN intervals TEXT');
        this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
      }
    } catch (err) {
      throw imiadError('Error', 'ERR_IMIAD_FILE', `Cannot open the results store ${this.file}: ${(err as Error).message}`);
    }
    this.insertStatement = opts.readonly
      ? (undefined as unknown as Database.Statement)
      : this.db.prepare(
          `INSERT OR IGNORE INTO experiments (key, code_version, dataset, category, method, setting, seed, config, metrics,
             intervals, efficiency, manifest, continual, heatmaps, notes, machine, started_at, finished_at)
           VALUES (@key, @code_version, @dataset, @category, @method, @setting, @seed, @config, @metrics, @intervals,
             @efficiency, @manifest, @continual, @heatmaps, @notes, @machine, @started_at, @finished_at)`,
        );
    this.insertTransaction = this.db.transaction((row: ResultRow): boolean => {
      const info = this.insertStatement.run({
        key: row.key,
        code_version: row.codeVersion,
        dataset: row.config.dataset,
        category: row.config.category,
        method: row.config.method,
        setting: row.config.setting.name,
        seed: row.config.seed,
        config: JSON.stringify(row.config),
        metrics: JSON.stringify(row.metrics),
        intervals: row.intervals ? JSON.stringify(row.intervals) : null,
        efficiency: JSON.stringify(row.efficiency),
        manifest: JSON.stringify(row.manifest),
        continual: row.continual ? JSON.stringify(row.continual) : null,
        heatmaps: JSON.stringify(row.heatmaps),
        notes: JSON.stringify(row.notes),
        machine: JSON.stringify(row.machine),
        started_at: row.startedAt,
        finished_at: row.finishedAt,
      });
      return info.changes === 1;
    });
  }

  /** Inserts a finished experiment; false when its key is already stored (the row is left as it was). */
  insert(row: ResultRow): boolean {
    return this.insertTransaction(row);
  }

  has(key: string): boolean {
    return this.db.prepare('SELECT 1 FROM experiments WHERE key = ?').get(key) !== undefined;
  }

  keys(): Set<string> {
    return new Set((this.db.prepare('SELECT key FROM experiments').pluck().all() as string[]));
  }

  count(): number {
    return this.db.prepare('SELECT COUNT(*) FROM experiments').pluck().get() as number;
  }

  /** Every row, in insertion order. */
  rows(): ResultRow[] {
    const raw = this.db.prepare('SELECT * FROM experiments ORDER BY rowid').all() as RawRow[];
    return raw.map((r) => ({
      key: r.key,
      codeVersion: r.code_version,
      config: JSON.parse(r.config),
      metrics: JSON.parse(r.metrics),
      intervals: r.intervals ? JSON.parse(r.intervals) : null,
      efficiency: JSON.parse(r.efficiency),
      manifest: JSON.parse(r.manifest),
      continual: r.continual ? JSON.parse(r.continual) : null,
      heatmaps: JSON.parse(r.heatmaps),
      notes: JSON.parse(r.notes),
      machine: JSON.parse(r.machine),
      startedAt: r.started_at,
      finishedAt: r.finished_at,
    }));
  }

  /** The folder next to the store that holds the heatmap PNGs of each experiment (heatmaps/<key>/). */
  heatmapDir(key: string): string {
    return path.join(path.dirname(this.file), 'heatmaps', key);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
