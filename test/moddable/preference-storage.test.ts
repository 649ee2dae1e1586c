/**
 * PreferenceStorage (firmware/platform/moddable/preference-storage.ts) against
 * an in-memory NVS model with the real limits: names <= 15, values <= 4000
 * bytes, atomic writes, write counting. Proves the adapter rejects what NVS
 * would reject (with typed errors, before touching flash) and that counter
 * blocks cut flash writes.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { PreferenceStorage } from '../../firmware/platform/moddable/preference-storage.js';
import { ReservedCounter } from '../../firmware/app/reserved-counter.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { NvsModel } from './nvs-model.js';
import { code } from './file-model.js';
import { randomFillSync } from 'node:crypto';


describe('PreferenceStorage limits', () => {
  it('round-trips bytes and hands out copies', async () => {
    const nvs = new NvsModel();
    const s = new PreferenceStorage(nvs);
    const big = new Uint8Array(100).map((_, i) => i);
    await s.put('blob', big.subarray(10, 20)); // a view into a larger buffer: only the view is stored
    const got = await s.get('blob');
    expect(got).toEqual(big.subarray(10, 20));
    got!.fill(0);
    expect(await s.get('blob')).toEqual(big.subarray(10, 20));
    expect(await s.get('missing')).toBeUndefined();
    await s.put('x', new Uint8Array(4000));
    expect((await s.get('x'))!.length).toBe(4000);
  });

  it('refuses over-long or non-ASCII names and oversize values before NVS is touched', async () => {
    const nvs = new NvsModel();
    const s = new PreferenceStorage(nvs);
    expect(await code(s.put('0123456789abcdef', new Uint8Array(1)))).toBe('STORAGE'); // 16 chars
    expect(await code(s.put('0123456789abcde', new Uint8Array(1)))).toBe('ok'); // 15 chars
    expect(await code(s.put('clé', new Uint8Array(1)))).toBe('STORAGE');
    expect(await code(s.put('', new Uint8Array(1)))).toBe('STORAGE');
    expect(await code(s.put('big', new Uint8Array(4001)))).toBe('OVERSIZE');
    expect(await code(s.get('0123456789abcdef'))).toBe('STORAGE');
    expect(nvs.writes).toBe(1);
    expect(() => new PreferenceStorage(nvs, 'a-domain-too-long')).toThrow(/STORAGE/);
  });

  it('maps NVS failures to STORAGE and keeps the old value (atomic write)', async () => {
    const nvs = new NvsModel();
    const s = new PreferenceStorage(nvs);
    await s.put('k', new Uint8Array([1]));
    nvs.failNextSet = true;
    expect(await code(s.put('k', new Uint8Array([2])))).toBe('STORAGE');
    expect(await s.get('k')).toEqual(new Uint8Array([1]));
    nvs.cutPowerOnNextSet = true;
    expect(await code(s.put('k', new Uint8Array([3])))).toBe('STORAGE');
    nvs.reboot();
    expect(await s.get('k')).toEqual(new Uint8Array([1]));
    nvs.set('mqsec', 'str', 'text');
    expect(await code(s.get('str'))).toBe('STORAGE'); // not bytes
  });

  it('deleting a missing key succeeds; clear() empties the domain only', async () => {
    const nvs = new NvsModel();
    const s = new PreferenceStorage(nvs);
    await s.delete('nothing');
    await s.put('a', new Uint8Array([1]));
    await s.put('b', new Uint8Array([2]));
    nvs.set('other', 'a', new ArrayBuffer(1));
    await s.clear();
    expect(s.keys()).toEqual([]);
    expect(nvs.keys('other')).toEqual(['a']);
  });

  it('only ever fails with typed errors, exactly where NVS would (fuzz)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 20 }), fc.integer({ min: 0, max: 4100 }), async (key, len) => {
        const s = new PreferenceStorage(new NvsModel());
        const r = await code(s.put(key, new Uint8Array(len)));
        const validName = key.length >= 1 && key.length <= 15 && /^[A-Za-z0-9_.-]+$/.test(key);
        if (!validName) expect(r).toBe('STORAGE');
        else if (len > 4000) expect(r).toBe('OVERSIZE');
        else {
          expect(r).toBe('ok');
          expect((await s.get(key))!.length).toBe(len);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('flash writes with counter blocks', () => {
  it('ReservedCounter writes NVS once per 32 values, across reboots', async () => {
    const nvs = new NvsModel();
    for (let boot = 0; boot < 3; boot++) {
      const c = new ReservedCounter(new PreferenceStorage(nvs), 'app-seq', 32);
      for (let i = 0; i < 64; i++) await c.take();
    }
    expect(nvs.writesByKey.get('app-seq')).toBe(6); // 192 values, 6 writes
  });

  it('the device secure session writes NVS about once per 32 connects, not per connect', async () => {
    const nvs = new NvsModel();
    const random = { fill: (b: Uint8Array) => void randomFillSync(b) };
    const deviceKey = new Uint8Array(32).fill(7);
    const connects = 100;
    const session = new DeviceSecureSession({ suite: createNobleSuite(random), devId: 'dev-0001', deviceKey, storage: new PreferenceStorage(nvs) });
    for (let i = 0; i < connects; i++) {
      const c = await session.connectCredentials();
      expect(c.phase).toBe(1);
      session.onConnectionLost();
    }
    const writes = [...nvs.writesByKey.values()].reduce((a, b) => a + b, 0);
    expect(writes).toBeLessThanOrEqual(Math.ceil(connects / 32) + 1);
    expect(writes).toBeGreaterThan(0);
    // every value of the record fits NVS's limits
    for (const k of nvs.keys('mqsec')) expect(k.length).toBeLessThanOrEqual(15);
  });
});
