/**
 * docs/protocol.md §12 test vectors (test/vectors/protocol-v1.json): the pure
 * key schedule with both suites, and the real state machines (device and
 * server) with the fixed randomness, must reproduce every byte.
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import { computeVectors, type VectorInputs } from '../vectors/compute.js';
import { ManualClock, MemoryStorage } from './helpers.js';

const file = JSON.parse(readFileSync(new URL('../vectors/protocol-v1.json', import.meta.url), 'utf8')) as {
  vectors: { inputs: VectorInputs; outputs: Record<string, string> }[];
};
const fixed = (priv: Uint8Array) => ({ fill: (b: Uint8Array) => b.set(priv.subarray(0, b.length)) });

describe.each(file.vectors.map((v) => [v.inputs.devId, v] as const))('vector %s', (_id, v) => {
  it('noble suite reproduces every output', () => {
    expect(computeVectors((p) => createNobleSuite(fixed(p)), v.inputs)).toEqual(v.outputs);
  });
  it('node:crypto suite reproduces every output', () => {
    expect(computeVectors((p) => createNodeCryptoSuite(fixed(p)), v.inputs)).toEqual(v.outputs);
  });
  it('the device and server state machines produce the same wire bytes', async () => {
    const i = v.inputs;
    const o = v.outputs;
    const newDevice = async () => {
      const storage = new MemoryStorage();
      if (i.kx1Counter > 0) {
        // a device whose flash says counters below kx1Counter were reserved (§7.3 record, no ticket)
        const rec = new Uint8Array(8);
        rec[0] = 2;
        rec.set([0, 0, (i.kx1Counter >>> 24) & 255, (i.kx1Counter >>> 16) & 255, (i.kx1Counter >>> 8) & 255, i.kx1Counter & 255], 1);
        await storage.put('mqsec.state', rec);
      }
      return new DeviceSecureSession({
        suite: createNobleSuite(fixed(fromHex(i.deviceEphemeralPrivate))),
        devId: i.devId,
        deviceKey: fromHex(i.deviceKey),
        storage,
        counterBlock: i.resumeCounter - i.kx1Counter,
      });
    };
    const device = await newDevice();
    const server = new ServerHandshake({
      suite: createNodeCryptoSuite(fixed(fromHex(i.serverEphemeralPrivate))),
      clock: new ManualClock(),
      lookupDevice: () => ({ deviceKey: fromHex(i.deviceKey), status: 'active' }),
      ticketStore: new MemoryTicketStore(),
    });
    const c1 = await device.connectCredentials();
    expect(toHex(c1.password)).toBe(o.kx1);
    const r1 = await server.acceptConnect(c1.clientId, c1.username, c1.password);
    if (r1.kind !== 'phase1') throw new Error('phase 1 expected');
    expect(toHex(r1.reply.payload)).toBe(o.kx2);
    await device.onConnack(0);
    const h = await device.handleIncoming(r1.reply.topic, r1.reply.payload);
    if (h.kind !== 'handshake') throw new Error('KX3 expected');
    expect(toHex(h.reply.payload)).toBe(o.kx3);
    const s1 = await server.completePhase1(r1.pending, h.reply.payload);
    expect(s1.sidHex).toBe(o.sid);
    expect(toHex(device.seal(i.topic, utf8Encode(i.plaintext)))).toBe(o.phase1EnvelopeUp);
    device.onConnectionLost();
    const c2 = await device.connectCredentials();
    // counters between kx1Counter+1 and resumeCounter-1 are skipped by a reboot in real life; here the block does it
    if (i.resumeCounter === i.kx1Counter + 1) {
      expect(toHex(c2.password)).toBe(o.resume);
      const r2 = await server.acceptConnect(c2.clientId, c2.username, c2.password);
      if (r2.kind !== 'phase2') throw new Error('phase 2 expected');
      // the fixed randomness makes N_s the first bytes of the broker's private key, as the vector says
      expect(toHex(r2.reply.payload)).toBe(o.resumeConfirm);
      await device.onConnack(0);
      expect((await device.handleIncoming(r2.reply.topic, r2.reply.payload)).kind).toBe('confirmed');
      expect(toHex(device.seal(i.topic, utf8Encode(i.plaintext)))).toBe(o.phase2EnvelopeUp);
      // §5.5: the same KX1 again, once the broker holds counter hintCounter: a counter hint, which a
      // device that sent that KX1 (same flash, same ephemeral) accepts
      const again = await server.acceptConnect(c1.clientId, c1.username, c1.password);
      if (again.kind !== 'counter-hint') throw new Error('counter hint expected');
      expect(toHex(again.reply.payload)).toBe(o.counterHint);
      const twin = await newDevice();
      expect(toHex((await twin.connectCredentials()).password)).toBe(o.kx1);
      await twin.onConnack(0);
      expect(await twin.handleIncoming(again.reply.topic, again.reply.payload)).toEqual({ kind: 'counter-hint', counter: i.hintCounter });
    }
  });
});
