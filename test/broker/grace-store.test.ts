/**
 * broker/grace-store.ts: the record a broker writes at a graceful stop so the
 * QoS 1 grace state (docs/protocol.md §8.5) survives a restart. The codec
 * round-trips and refuses anything malformed with a typed error, never a
 * crash; the broker-level behaviour is in lifecycle.test.ts.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { isMqsecError } from '../../firmware/core/errors.js';
import { decodeRxSnapshot, encodeRxSnapshot } from '../../broker/grace-store.js';

const snapshot = fc.record({
  epoch: fc.integer({ min: 0, max: 255 }),
  key: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  iv: fc.uint8Array({ minLength: 12, maxLength: 12 }),
  highest: fc.integer({ min: -1, max: 0x1fffff }),
  seen: fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => b.map((x) => x & 1)),
});

describe('grace record codec', () => {
  it('round-trips every receive state', () => {
    fc.assert(
      fc.property(snapshot, (s) => {
        expect(decodeRxSnapshot(encodeRxSnapshot(s))).toEqual(s);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses truncated, extended and arbitrary bytes with a typed error', () => {
    fc.assert(
      fc.property(snapshot, fc.integer({ min: 0, max: 300 }), (s, cut) => {
        const enc = encodeRxSnapshot(s);
        const bad = [enc.subarray(0, Math.min(cut, enc.length - 1)), new Uint8Array([...enc, 0])];
        for (const b of bad) {
          let err: unknown;
          try {
            decodeRxSnapshot(b);
          } catch (e) {
            err = e;
          }
          expect(isMqsecError(err)).toBe(true);
        }
      }),
      { numRuns: 200 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (b) => {
        try {
          decodeRxSnapshot(b);
        } catch (e) {
          expect(isMqsecError(e)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});
