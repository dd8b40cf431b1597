/**
 * A private redis-server for the queue tests and benchmark: Debian's binary on a free loopback port (never a fixed
 * or system one), its data in the caller's folder with the append-only file on (so that a restart keeps the
 * queue), stopped afterwards.
 */
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';

export const REDIS_SERVER = process.env.IMIAD_REDIS_SERVER ?? '/usr/bin/redis-server';

/** Why the queue tests cannot run here, or '' when redis-server is present. */
export function redisMissingReason(): string {
  if (!fs.existsSync(REDIS_SERVER)) return `${REDIS_SERVER} is not installed (Debian package redis-server; .ci/run installs it)`;
  const r = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? '' : `${REDIS_SERVER} --version failed: ${r.stderr}`;
}

/** A port the kernel reports free on 127.0.0.1 (a listener on port 0, closed again). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

export class RedisServer {
  private proc: ChildProcess | null = null;
  private log = '';

  constructor(
    readonly port: number,
    readonly dir: string,
    private readonly extra: string[] = [],
  ) {}

  static async start(dir: string, extra: string[] = []): Promise<RedisServer> {
    fs.mkdirSync(dir, { recursive: true });
    const server = new RedisServer(await freePort(), dir, extra);
    await server.startAgain();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts the server (again, on the same port and data folder) and resolves once it accepts connections. */
  startAgain(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', ...this.extra];
    const proc = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start on port ${this.port}:\n${this.log}`)), 20000);
      const onData = (d: Buffer): void => {
        this.log += d.toString();
        if (this.log.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}:\n${this.log}`));
      });
    });
  }

  /** SIGTERM (Redis flushes its append-only file and exits) and waits for the exit. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    this.proc = null;
    this.log = '';
    await new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGTERM');
    });
  }
}
