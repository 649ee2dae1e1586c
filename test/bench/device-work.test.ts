/**
 * The device-work driver of the benchmark runs the real protocol in both
 * engines: every phase-1 and phase-2 handshake completes against the
 * broker's ServerHandshake, every sealed envelope opens on the other side
 * (drive() throws otherwise). Figures are only checked to be well-formed.
 */
import { describe, expect, it } from 'vitest';
import { measureDeviceWorkNode, measureDeviceWorkXs, measureEnvelopeOverhead, type DeviceFigures } from '../../bench/xs.js';

function wellFormed(f: DeviceFigures): void {
  expect(Object.keys(f)).toEqual(['phase1_device', 'phase2_device', 'seal_64B', 'open_64B']);
  for (const v of Object.values(f)) {
    expect(Number.isFinite(v)).toBe(true);
    expect(v).toBeGreaterThanOrEqual(0);
  }
}

describe('device work', () => {
  it('runs phase 1, phase 2, seal and open under Node', async () => {
    wellFormed(await measureDeviceWorkNode({ runs: 2, messages: 3 }));
  });

  it('runs the same steps inside the XS engine, across the batch size of the command channel', async () => {
    // 20 messages > one 16-envelope batch: exercises the batching in bench/xs.ts
    wellFormed(await measureDeviceWorkXs({ runs: 1, messages: 20 }));
  });

  it('envelope overhead of a 64-byte payload is within the 20-byte budget', async () => {
    const o = await measureEnvelopeOverhead();
    expect(o.first).toBeGreaterThan(16); // at least the AEAD tag plus a header
    expect(o.worst).toBeGreaterThanOrEqual(o.first);
    expect(o.worst).toBeLessThanOrEqual(20);
  });
});
