/** The queue tests' redis-server: the benchmark's helper (bench/helpers/redis-server.ts). */
export { freePort, RedisServer, redisMissingReason, REDIS_SERVER } from '../../bench/helpers/redis-server';
