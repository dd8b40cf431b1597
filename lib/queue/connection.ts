/**
 * The queue's address: `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]` (or `rediss://` for TLS) parsed into ioredis
 * options, and a display form without the password. The URL itself is never printed, logged or stored: every
 * message names the queue by `display`, and IMIAD_QUEUE_PASSWORD can carry the password instead of the URL (a
 * command line is visible to every user of the machine in `ps`).
 */
import type { RedisOptions } from 'ioredis';

import { imiadError } from '../../bindings/errors';

/** The BullMQ queue every coordinator and worker uses unless told otherwise (`--queue-name`). */
export const DEFAULT_QUEUE_NAME = 'imiad-grid';
/** The Redis key prefix of imiad's queues (BullMQ's default is 'bull'). */
export const QUEUE_PREFIX = 'imiad';

export interface QueueAddress {
  /** ioredis options: host, port, db, credentials, TLS, and a reconnect strategy that never gives up. */
  redis: RedisOptions;
  /** `redis://HOST:PORT/DB`, with `***` in place of any credentials: the only form ever shown. */
  display: string;
  name: string;
}

function urlError(expected: string, name: string, shown: string): Error {
  // The message format of bindings/errors.ts, with the value shown redacted.
  return imiadError('TypeError', 'ERR_IMIAD_ARGUMENT', `Expected ${expected} for ${name} but received ${shown} of type string`);
}

/** The URL as it may be shown: scheme, host, port and path, credentials replaced by `***`. */
export function redactQueueUrl(url: string): string {
  // Greedy up to the last '@': a password containing '@' or '/', or a URL without a scheme, is hidden too.
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/i, '$1***@');
}

/**
 * Reconnect delay after the n-th failed attempt: 0.5 s, 1 s, ... up to 5 s, for ever. A worker or coordinator waits
 * for Redis to come back instead of failing (BullMQ's default grows to 20 s between attempts).
 */
export function reconnectDelayMs(attempt: number): number {
  return Math.min(500 * attempt, 5000);
}

export function parseQueueUrl(url: unknown, opts: { name?: string; flag?: string; env?: NodeJS.ProcessEnv } = {}): QueueAddress {
  const flag = opts.flag ?? '--queue';
  const env = opts.env ?? process.env;
  if (typeof url !== 'string' || url === '') throw urlError('a redis:// URL', flag, typeof url === 'string' ? url : String(url));
  const shown = redactQueueUrl(url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw urlError('a redis://HOST:PORT[/DB] URL', flag, shown);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') throw urlError('a redis:// or rediss:// URL', flag, shown);
  if (!parsed.hostname) throw urlError('a redis:// URL with a host', flag, shown);
  const port = parsed.port === '' ? 6379 : Number(parsed.port);
  const username = decodeURIComponent(parsed.username);
  const dbText = parsed.pathname.replace(/^\//, '');
  if (!/^\d*$/.test(dbText) || (dbText !== '' && Number(dbText) > 15)) throw urlError('a database number 0-15 after the port', flag, shown);
  const db = dbText === '' ? 0 : Number(dbText);
  if (parsed.search || parsed.hash) throw urlError('a redis://HOST:PORT[/DB] URL without a query or fragment', flag, shown);
  const password = env.IMIAD_QUEUE_PASSWORD ?? decodeURIComponent(parsed.password);
  const name = opts.name ?? DEFAULT_QUEUE_NAME;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw urlError('a queue name of 1-64 letters, digits, _ . -', '--queue-name', name);
  // IPv6 hosts come bracketed from URL; ioredis wants them bare.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  return {
    redis: {
      host,
      port,
      db,
      ...(username ? { username } : {}),
      ...(password ? { password } : {}),
      ...(parsed.protocol === 'rediss:' ? { tls: { servername: host } } : {}),
      retryStrategy: reconnectDelayMs,
      // Commands wait in ioredis's offline queue while Redis is away, instead of failing after 20 retries.
      maxRetriesPerRequest: null,
    },
    display: `${parsed.protocol}//${username || password ? '***@' : ''}${parsed.hostname}:${port}/${db}`,
    name,
  };
}

/** True for errors that mean "Redis is not reachable right now" (worth waiting for), not a refusal. */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as Error & { code?: unknown }).code;
  if (typeof code === 'string' && ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH'].includes(code)) return true;
  return /Connection is closed|connect ECONNREFUSED|Stream isn't writeable|LOADING/i.test(err.message);
}

/** True for Redis's answers to wrong credentials: waiting will not help. */
export function isAuthError(err: unknown): boolean {
  return err instanceof Error && /^(WRONGPASS|NOAUTH)\b|invalid password|invalid username-password/i.test(err.message);
}

/**
 * Resolves true once Redis at `address` answers a PING with these credentials, false when `signal` stops the wait
 * first. While Redis cannot be reached it waits (reporting the first reason through onLost); wrong credentials
 * throw ERR_IMIAD_QUEUE_AUTH at once. Coordinator and worker call it before they open BullMQ's connections, so a
 * refusal is a clear error rather than an error event of a connection being set up.
 */
export async function waitForRedis(address: QueueAddress, opts: { signal?: AbortSignal; onLost?: (reason: string) => void } = {}): Promise<boolean> {
  if (opts.signal?.aborted) return false;
  // Loaded here, not at the top: ioredis (and BullMQ) take a few hundred ms to load, which every other imiad command
  // would pay.
  const { default: IORedis } = await import('ioredis');
  const client = new IORedis(address.redis);
  let reported = false;
  client.on('error', (err: Error) => {
    if (!reported && !isAuthError(err)) opts.onLost?.(err.message);
    reported = true;
  });
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<false>((resolve) => {
    onAbort = () => resolve(false);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
  const pong = client.ping().then(() => true);
  pong.catch(() => undefined); // settled by the disconnect below when the wait is stopped
  try {
    return await Promise.race([pong, aborted]);
  } catch (err) {
    if (isAuthError(err)) throw authError(address, err as Error);
    throw err;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    // QUIT when connected: ioredis's disconnect() leaves a 2 s timer that holds a finishing process open.
    if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
    else client.disconnect();
  }
}

export function authError(address: QueueAddress, err: Error): Error {
  return imiadError('Error', 'ERR_IMIAD_QUEUE_AUTH', `Redis at ${address.display} refused the credentials: ${err.message}`);
}
