/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: '<rootDir>/test/environment.js',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  testTimeout: 120000,
  maxWorkers: 2,
  globalSetup: '<rootDir>/test/global-setup.js',
};
