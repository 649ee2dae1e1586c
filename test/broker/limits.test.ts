import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { FrameGuard } from '../../broker/limits/frame-guard.js';
import { RateLimiter } from '../../broker/limits/rate-limit.js';

const connect = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'c', keepalive: 30 } as mqttPacket.IConnectPacket);
const publish = (n: number) =>
  mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(n), qos: 0, retain: false, dup: false });

function chunks(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let last = 0;
  for (const p of points) {
    out.push(buf.subarray(last, p));
    last = p;
  }
  out.push(buf.subarray(last));
  return out.filter((c) => c.length > 0);
}

describe('FrameGuard (pre-parse limits)', () => {
  it('accepts a valid stream however it is split, and knows packet boundaries', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(2000), { maxLength: 8 }), fc.array(fc.nat(300), { maxLength: 6 }), (sizes, cuts) => {
        const stream = Buffer.concat([connect, ...sizes.map(publish)]);
        const g = new FrameGuard(4096);
        for (const c of chunks(stream, cuts)) expect(g.feed(c)).toEqual({ ok: true });
        expect(g.packetsSeen).toBe(1 + sizes.length);
        expect(g.midPacket).toBe(false);
      }),
    );
  });

  it('refuses a packet over the limit as soon as its length is known (never waits for the body)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1025, max: 268_435_455 }), (len) => {
        const g = new FrameGuard(1024);
        expect(g.feed(connect).ok).toBe(true);
        const header = [0x30];
        let x = len;
        do {
          let b = x % 128;
          x = Math.floor(x / 128);
          if (x > 0) b |= 0x80;
          header.push(b);
        } while (x > 0);
        expect(g.feed(Uint8Array.from(header))).toEqual({ ok: false, reason: 'oversize' });
      }),
    );
  });

  it.each<[string, number[], string]>([
    ['publish first', [0x30, 0x00], 'first-not-connect'],
    ['reserved type 0', [0x00, 0x00], 'reserved-type'],
    ['reserved type 15', [0xf0, 0x00], 'reserved-type'],
    ['five-byte length', [0x10, 0x80, 0x80, 0x80, 0x80, 0x01], 'malformed-length'],
  ])('%s', (_n, bytes, reason) => {
    expect(new FrameGuard(1 << 28).feed(Uint8Array.from(bytes))).toEqual({ ok: false, reason });
  });

  it('a second CONNECT is a violation; a verdict sticks', () => {
    const g = new FrameGuard(4096);
    expect(g.feed(connect).ok).toBe(true);
    expect(g.feed(connect)).toEqual({ ok: false, reason: 'second-connect' });
    expect(g.feed(publish(1)).ok).toBe(false);
  });

  it('never throws and stays bounded on arbitrary bytes (fuzz)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 20 }), (parts) => {
        const g = new FrameGuard(256);
        for (const p of parts) {
          const v = g.feed(p);
          expect(typeof v.ok).toBe('boolean');
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('RateLimiter', () => {
  it('allows the burst, then the rate; keys are independent and bounded', () => {
    let t = 0;
    const rl = new RateLimiter({ ratePerSec: 2, burst: 3, maxKeys: 4, now: () => t });
    expect([1, 2, 3, 4].map(() => rl.take('a'))).toEqual([true, true, true, false]);
    expect(rl.take('b')).toBe(true);
    t += 500; // one token back
    expect(rl.take('a')).toBe(true);
    expect(rl.take('a')).toBe(false);
    for (let i = 0; i < 10; i++) rl.take(`k${i}`);
    expect(rl.size).toBeLessThanOrEqual(4);
  });
});
