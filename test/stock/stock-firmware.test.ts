/**
 * The device side of protocol §15 (firmware/secure/stock.ts and the
 * `broker.flavour` of the device config) under Node and inside the real XS
 * engine: same names, same bootstrap password, same routing, same refusals.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromHex } from '../../firmware/core/bytes.js';
import { parseDeviceConfig } from '../../firmware/app/device-config.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { GK_TOPIC } from '../../firmware/secure/group.js';
import { bootPassword, bootUsername, downTopic, idOfUpTopic, isUpMessage, protocolTopicOfDown, upTopic } from '../../firmware/secure/stock.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { startXs, type XsWorker } from '../xs/harness.js';

const suite = createNodeCryptoSuite();
const KEY = fromHex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');

let xs: XsWorker;
beforeAll(async () => {
  xs = await startXs(new URL('../xs/entries/stock.entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});

describe('stock-broker device side (§15)', () => {
  it('names and the bootstrap password agree between Node and XS', async () => {
    const pw = bootPassword(suite, KEY, 'sensor01');
    // "~" + base64url of 16 bytes, no padding
    expect(pw).toMatch(/^~[A-Za-z0-9_-]{22}$/);
    expect(bootPassword(suite, KEY, 'sensor02')).not.toBe(pw);
    expect(await xs.call('bootPassword', KEY, 'sensor01')).toEqual({ ok: pw });
    expect(await xs.call('names', 'sensor01')).toEqual({ ok: { up: upTopic('sensor01'), down: downTopic('sensor01'), boot: bootUsername('sensor01') } });
    expect([upTopic('sensor01'), downTopic('sensor01'), bootUsername('sensor01')]).toEqual(['mqsec/up/sensor01', 'mqsec/down/sensor01', 'boot@sensor01']);
    expect((await xs.call('bootPassword', new Uint8Array(31), 'sensor01')).code).toBe('BAD_KEY');
    expect((await xs.call('names', 'x'.repeat(24))).code).toBe('MALFORMED');
  });

  it('down messages route to the protocol topic their header byte names; up topics parse strictly', async () => {
    const cases: [number[], string | null][] = [
      [[0x12], KX_TOPIC],
      [[0x17], KX_TOPIC],
      [[0x18], KX_TOPIC],
      [[0x16], GK_TOPIC],
      [[0x11], null],
      [[0x13], null],
      [[0x15], null],
      [[0x21], null],
      [[], null],
    ];
    for (const [bytes, want] of cases) {
      expect(protocolTopicOfDown(new Uint8Array(bytes)) ?? null).toBe(want);
      expect(await xs.call('route', new Uint8Array(bytes))).toBe(want);
    }
    for (const [bytes, want] of [[[0x11], true], [[0x13], true], [[0x15], true], [[0x12], false], [[0x16], false], [[], false]] as const) {
      expect(isUpMessage(new Uint8Array(bytes))).toBe(want);
      expect(await xs.call('isUp', new Uint8Array(bytes))).toBe(want);
    }
    for (const [t, want] of [['mqsec/up/s1', 's1'], ['mqsec/up/', null], ['mqsec/up/a/b', null], ['mqsec/up/+', null], ['mqsec/down/s1', null], ['mqsec/up/' + 'x'.repeat(24), null]] as const) {
      expect(idOfUpTopic(t) ?? null).toBe(want);
      expect(await xs.call('idOfUpTopic', t)).toBe(want);
    }
  });

  it('the device config names the flavour; anything but mqsec or stock is refused', async () => {
    const base = { id: 'sensor01', key: '00'.repeat(32), broker: { host: 'h', port: 1883 } };
    expect(parseDeviceConfig({ ...base, broker: { ...base.broker, flavour: 'stock' } }).broker).toEqual({ host: 'h', port: 1883, flavour: 'stock' });
    expect(parseDeviceConfig({ ...base, broker: { ...base.broker, flavour: 'mqsec' } }).broker).toEqual({ host: 'h', port: 1883 });
    expect(parseDeviceConfig(base).broker).toEqual({ host: 'h', port: 1883 });
    expect(() => parseDeviceConfig({ ...base, broker: { ...base.broker, flavour: 'emqx' } })).toThrow(/flavour/);
    expect(await xs.call('config', { ...base, broker: { ...base.broker, flavour: 'stock' } })).toEqual({ ok: { ...base, broker: { host: 'h', port: 1883, flavour: 'stock' } } });
    expect((await xs.call('config', { ...base, broker: { ...base.broker, flavour: 1 } })).code).toBe('MALFORMED');
  });
});
