/**
 * The sensor-node state machine under Node with fake platform services
 * (boot, phase 1 / phase 2, commands, deep sleep and wake, waiting, retries,
 * timeouts, storage failures). test/app/sensor-node.xs.test.ts runs the same
 * scenarios inside the XS engine.
 */
import { describe, it, expect } from 'vitest';
import { scenarios } from './scenarios.js';
import { parseCommand, encodeSettings, decodeSettings, encodeReading } from '../../firmware/app/commands.js';
import { ReservedCounter } from '../../firmware/app/reserved-counter.js';
import { MapStorage } from './fakes.js';
import fc from 'fast-check';

const DEV = 'dev-0001';

describe('SensorNode (Node)', () => {
  it('first boot runs phase 1, publishes readings, deep-sleeps; a wake resumes with phase 2', async () => {
    const r = await scenarios.bootSleepWake();
    expect(r.firstBoot.phases).toEqual([1]);
    expect(r.firstBoot.subscriptions).toEqual([`cmd/${DEV}/#`]);
    expect(r.firstBoot.published.map((p) => p.topic)).toEqual([`sensors/${DEV}/temperature`, `sensors/${DEV}/humidity`]);
    expect(JSON.parse(r.firstBoot.published[0].text)).toMatchObject({ u: 'C', n: 0 });
    expect(r.firstBoot.sleepRequests).toEqual([60_000]);
    expect(r.firstBoot.states.slice(0, 7)).toEqual(['boot:cold', 'wifi', 'connecting', 'subscribing', 'publishing', 'listening', 'sleeping:interval']);
    expect(r.firstBoot.closes).toBe(1);
    expect(r.firstBoot.radioOffs).toBe(1);
    expect(r.wake.phases).toEqual([2]);
    expect(r.wake.states[0]).toBe('boot:timer');
    expect(r.wake.published).toBe(2);
    expect(r.third.phases).toEqual([2]);
    // strictly increasing across reboots (blocks skipped, never reused)
    for (let i = 1; i < r.seqs.length; i++) expect(r.seqs[i]).toBeGreaterThan(r.seqs[i - 1]);
    expect(r.seqs).toEqual([0, 1, 32, 33, 64, 65]);
    // one counter-block write per boot + one ticket write, not one per reading
    expect(r.totalWrites).toBe(4);
  });

  it('commands change and persist settings; malformed, unknown and foreign commands are refused', async () => {
    const r = await scenarios.commands();
    expect(r.after.settings).toEqual({ intervalS: 120, sleepMode: 'deep' });
    expect(r.after.stats.commands).toBe(2); // interval 120, sample
    expect(r.after.stats.badCommands).toBe(5);
    expect(r.after.sleepRequests).toEqual([120_000]);
    expect(r.after.published).toBe(4); // the "sample" command published once more before sleeping
    expect(r.rebootSettings).toEqual({ intervalS: 120, sleepMode: 'deep' });
    expect(r.rebootSleep).toEqual([120_000]);
  });

  it('without deep sleep it stays connected, reconnects with phase 2 after a drop, samples on demand', async () => {
    const r = await scenarios.waitMode();
    expect(r.afterFirst).toBe(2);
    expect(r.afterInterval).toBe(4);
    expect(r.afterDrop.phases).toEqual([1, 2]);
    expect(r.afterDrop.published).toBe(6);
    expect(r.afterSample).toBe(8);
    expect(r.afterShorter).toBe(10);
    expect(r.final).toBe('stopped');
    expect(r.sleeps).toBe(0);
    expect(r.closes).toBeGreaterThanOrEqual(1);
  });

  it('Wi-Fi failures back off exponentially with jitter, bounded, then deep-sleep', async () => {
    const r = await scenarios.wifiGivesUp();
    expect(r.slept).toBe(true);
    expect(r.attempts).toBe(4);
    expect(r.opens).toBe(0);
    expect(r.sleepRequests).toEqual([600_000]);
    expect(r.backoffs).toHaveLength(3);
    const caps = [500, 1000, 2000];
    r.backoffs.forEach((ms, i) => {
      expect(ms).toBeGreaterThanOrEqual(caps[i] / 2);
      expect(ms).toBeLessThanOrEqual(caps[i]);
    });
    expect(r.stats.lastError).toBe('CONNECTION_REFUSED');
  });

  it('connect refusals are retried; a connect that never answers times out and the node sleeps', async () => {
    const r = await scenarios.connectRetries();
    expect(r.refused.opens).toBe(3);
    expect(r.refused.phases).toEqual([1]);
    expect(r.refused.failures).toBe(2);
    expect(r.refused.published).toBe(2);
    expect(r.hanging.slept).toBe(true);
    expect(r.hanging.opens).toBe(4);
    expect(r.hanging.lastError).toBe('TIMEOUT');
    expect(r.hanging.sleepRequests).toEqual([600_000]);
    expect(r.hanging.armedTimers).toBe(0);
  });

  it('a sensor fault skips a round but keeps the session', async () => {
    const r = await scenarios.sensorFailure();
    expect(r.first).toEqual({ published: 0, opens: 1, sensorErrors: 1 });
    expect(r.second).toEqual({ published: 2, opens: 1, failures: 0 });
  });

  it('a failing flash does not stop reporting', async () => {
    const r = await scenarios.storageFailure();
    expect(r.settings.intervalS).toBe(15);
    expect(r.published).toBeGreaterThanOrEqual(4);
    expect(r.state).toBe('stopped');
  });
});

describe('SensorNode with the real secure link: wiped flash (docs/protocol.md §5.5)', () => {
  it('comes back without an operator: one refused attempt (counter hint), then phase 1 past the used counters; the recovered state survives the next sleep', async () => {
    const r = await scenarios.wipedFlashRecovers();
    expect([r.first.stats.phase1, r.wake.stats.phase2]).toEqual([1, 1]);
    expect(r.wake.counter).toBe(32); // the wake skipped to the next counter block
    expect(r.wiped.stats).toMatchObject({ phase1: 1, phase2: 0, failures: 1, published: 2 });
    expect(r.wiped.counter).toBe(33); // the first value past the hint: nothing below it was ever accepted again
    expect(r.wiped.readings).toBe(r.wake.readings + 2);
    expect(r.after.stats).toMatchObject({ phase2: 1, failures: 0 });
    expect(r.broker).toEqual({ phase1: 2, phase2: 2, hints: 1, refused: 0 });
  });
});

describe('commands and settings codecs', () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  it('parses the documented commands', () => {
    expect(parseCommand(DEV, `cmd/${DEV}/interval`, enc(' 300 '))).toEqual({ kind: 'interval', seconds: 300 });
    expect(parseCommand(DEV, `cmd/${DEV}/sleep`, enc('wait'))).toEqual({ kind: 'sleep', mode: 'wait' });
    expect(parseCommand(DEV, `cmd/${DEV}/sample`, enc(''))).toEqual({ kind: 'sample' });
  });
  it('refuses bad commands with typed errors', () => {
    const code = (f: () => unknown) => {
      try {
        f();
        return 'ok';
      } catch (e: any) {
        return e.code;
      }
    };
    expect(code(() => parseCommand(DEV, `cmd/${DEV}/interval`, enc('86401')))).toBe('MALFORMED');
    expect(code(() => parseCommand(DEV, `cmd/${DEV}/interval`, enc('-5')))).toBe('MALFORMED');
    expect(code(() => parseCommand(DEV, `cmd/${DEV}/nope`, enc('')))).toBe('UNKNOWN_TYPE');
    expect(code(() => parseCommand(DEV, `cmd/x/interval`, enc('60')))).toBe('PROTOCOL_VIOLATION');
    expect(code(() => parseCommand(DEV, `cmd/${DEV}/interval`, new Uint8Array(65)))).toBe('OVERSIZE');
    expect(code(() => parseCommand(DEV, `cmd/${DEV}/interval`, new Uint8Array([0xff])))).toBe('INVALID_UTF8');
  });
  it('never throws anything but MqsecError on arbitrary input (fuzz)', () => {
    fc.assert(
      fc.property(fc.constantFrom('interval', 'sleep', 'sample', 'x', ''), fc.uint8Array({ maxLength: 80 }), (name, payload) => {
        try {
          parseCommand(DEV, `cmd/${DEV}/${name}`, payload);
        } catch (e: any) {
          expect(e.name).toBe('MqsecError');
        }
      }),
      { numRuns: 500 },
    );
  });
  it('settings round-trip; corrupt blobs fall back to defaults', () => {
    fc.assert(
      fc.property(fc.integer({ min: 5, max: 86_400 }), fc.boolean(), (intervalS, deep) => {
        const s = { intervalS, sleepMode: deep ? ('deep' as const) : ('wait' as const) };
        expect(decodeSettings(encodeSettings(s))).toEqual(s);
      }),
    );
    fc.assert(fc.property(fc.uint8Array({ maxLength: 10 }), (b) => {
      const s = decodeSettings(b);
      if (s) expect(s.intervalS).toBeGreaterThanOrEqual(5);
    }));
  });
  it('readings encode as compact JSON and refuse non-finite values', () => {
    expect(new TextDecoder().decode(encodeReading({ kind: 't', value: 21.5, unit: 'C' }, 7))).toBe('{"v":21.5,"n":7,"u":"C"}');
    expect(() => encodeReading({ kind: 't', value: NaN }, 1)).toThrow(/MALFORMED/);
  });
});

describe('ReservedCounter', () => {
  it('writes flash once per block and never reuses a value across restarts', async () => {
    const storage = new MapStorage();
    const seen: number[] = [];
    for (let boot = 0; boot < 5; boot++) {
      const c = new ReservedCounter(storage, 'ctr', 32);
      for (let i = 0; i < 40; i++) seen.push(await c.take());
    }
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]);
    expect(storage.writes).toBe(10); // 2 blocks per boot of 40 values, instead of 200 writes
  });
  it('refuses a corrupt stored value instead of restarting at zero', async () => {
    const storage = new MapStorage();
    await storage.put('ctr', new Uint8Array(3));
    await expect(new ReservedCounter(storage, 'ctr').take()).rejects.toMatchObject({ code: 'STORAGE' });
  });
});
