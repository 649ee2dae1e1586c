import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // xsnap workers, brokers and child processes: forks isolate them best.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // 2-core CI machines: keep parallelism modest so socket tests stay deterministic.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
