/**
 * Prints per-operation timings under Node for the report (docs/protocol.md
 * §13). Nothing here is asserted about speed: speed belongs in bench/.
 */
import { describe, it, expect } from 'vitest';
import { performance } from 'node:perf_hooks';
import { randomFillSync } from 'node:crypto';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';
import { MemoryStorage, deviceKeyFor } from './helpers.js';

const rnd = { fill: (b: Uint8Array) => void randomFillSync(b) };

describe('timings under Node (printed, not asserted)', () => {
  it('phase 1, phase 2 and seal', async () => {
    const n = 30;
    const store = new MemoryTicketStore();
    const key = deviceKeyFor('sensor01');
    const server = new ServerHandshake({ suite: createNodeCryptoSuite(), clock: { now: () => Date.now() }, lookupDevice: () => ({ deviceKey: key, status: 'active' }), ticketStore: store });
    let dev1 = 0;
    let srv1 = 0;
    let d!: DeviceSecureSession;
    for (let i = 0; i < n; i++) {
      d = new DeviceSecureSession({ suite: createNobleSuite(rnd), devId: 'sensor01', deviceKey: key, storage: new MemoryStorage() });
      await store.resetDevice('sensor01');
      const t0 = performance.now();
      const c = await d.connectCredentials();
      const t1 = performance.now();
      const r = await server.acceptConnect(c.clientId, c.username, c.password);
      const t2 = performance.now();
      if (r.kind !== 'phase1') throw new Error();
      await d.onConnack(0);
      const h = await d.handleIncoming(r.reply.topic, r.reply.payload);
      const t3 = performance.now();
      if (h.kind !== 'handshake') throw new Error();
      await server.completePhase1(r.pending, h.reply.payload);
      const t4 = performance.now();
      dev1 += t1 - t0 + (t3 - t2);
      srv1 += t2 - t1 + (t4 - t3);
    }
    let dev2 = 0;
    let srv2 = 0;
    for (let i = 0; i < n; i++) {
      d.onConnectionLost();
      const t0 = performance.now();
      const c = await d.connectCredentials();
      const t1 = performance.now();
      const r = await server.acceptConnect(c.clientId, c.username, c.password);
      const t2 = performance.now();
      if (r.kind !== 'phase2') throw new Error();
      await d.onConnack(0);
      await d.handleIncoming(r.reply.topic, r.reply.payload);
      const t3 = performance.now();
      dev2 += t1 - t0 + (t3 - t2);
      srv2 += t2 - t1;
    }
    const pt = new Uint8Array(64);
    const m = 2000;
    const t0 = performance.now();
    for (let i = 0; i < m; i++) d.seal('sensors/sensor01/temp', pt);
    const seal = (performance.now() - t0) / m;
    const out = {
      phase1DeviceMs_noble: dev1 / n,
      phase1ServerMs_nodeCrypto: srv1 / n,
      phase2DeviceMs_noble: dev2 / n,
      phase2ServerMs_nodeCrypto: srv2 / n,
      seal64Ms_noble: seal,
    };
    console.log(`Node timings (ms): ${JSON.stringify(out)}`);
    expect(out.phase1DeviceMs_noble).toBeGreaterThan(0);
  });
});
