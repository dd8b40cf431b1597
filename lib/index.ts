/** imiad's public API. */
export { version } from './version';
export type { Device } from '../bindings/validate';
export { hasCode, type ImiadError } from '../bindings/errors';
export * from './metrics';
