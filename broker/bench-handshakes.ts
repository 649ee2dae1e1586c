/**
 * Quick measurement of the broker's handshake rates on this machine:
 *
 *   npx tsx broker/bench-handshakes.ts [--n 400] [--json]
 *
 * 1. broker-side cost: ServerHandshake (node:crypto suite) on the SQLite
 *    ticket store, timing only the broker's calls (acceptConnect,
 *    completePhase1); device-side work is done outside the timed sections.
 * 2. end to end: sequential MQTT.js connects to a real broker on loopback
 *    (phase 1 = CONNECT/KX2/KX3, phase 2 = CONNECT with a resume token),
 *    including the client, so it is a lower bound of the broker's rate.
 * Not a test: numbers depend on the machine; bench/ holds the full benchmarks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import { MemoryStorage } from '../firmware/core/memory-storage.js';
import { DeviceSecureSession, ServerHandshake } from '../firmware/secure/index.js';
import { createNodeCryptoSuite } from '../platform-node/crypto-suite.js';
import { SqliteRegistry } from './registry/registry.js';
import { RegistryTicketStore } from './registry/ticket-store.js';
import { startBroker } from './server.js';

export interface HandshakeRates {
  n: number;
  brokerPhase1PerSec: number;
  brokerPhase2PerSec: number;
  e2ePhase1PerSec: number;
  e2ePhase2PerSec: number;
}

const STATE_KEY = 'mqsecstate';

function device(devId: string, key: Uint8Array): DeviceSecureSession {
  return new DeviceSecureSession({ suite: createNodeCryptoSuite(), devId, deviceKey: key, storage: new MemoryStorage(), storageKey: STATE_KEY });
}

async function brokerSide(n: number): Promise<{ p1: number; p2: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'mqsec-bench-'));
  const registry = SqliteRegistry.open(dir);
  try {
    const { key } = await registry.addDevice('bench1', 'sensor');
    const server = new ServerHandshake({
      suite: createNodeCryptoSuite(),
      clock: { now: () => Date.now() },
      ticketStore: new RegistryTicketStore(registry),
      lookupDevice: async (id) => {
        const k = await registry.handshakeKeys(id);
        return k && { keys: { authKey: k.authKey, pskKey: k.pskKey }, status: 'active' as const };
      },
    });
    const dev = device('bench1', key);
    let p1 = 0;
    let p2 = 0;
    for (let i = 0; i < n; i++) {
      await dev.forgetTicket();
      const c = await dev.connectCredentials();
      let t = performance.now();
      const r = await server.acceptConnect(c.clientId, c.username, c.password);
      p1 += performance.now() - t;
      if (r.kind !== 'phase1') throw new Error('expected phase 1');
      await dev.onConnack(0);
      const hs = await dev.handleIncoming(r.reply.topic, r.reply.payload);
      if (hs.kind !== 'handshake') throw new Error('KX2 refused');
      t = performance.now();
      (await server.completePhase1(r.pending, hs.reply.payload)).close();
      p1 += performance.now() - t;
      dev.onConnectionLost();
    }
    for (let i = 0; i < n; i++) {
      const c = await dev.connectCredentials();
      const t = performance.now();
      const r = await server.acceptConnect(c.clientId, c.username, c.password);
      p2 += performance.now() - t;
      if (r.kind !== 'phase2') throw new Error('expected phase 2');
      r.session.close();
      await dev.onConnack(0);
      dev.onConnectionLost();
    }
    return { p1: (n * 1000) / p1, p2: (n * 1000) / p2 };
  } finally {
    await registry.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function endToEnd(n: number): Promise<{ p1: number; p2: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'mqsec-bench-'));
  const broker = await startBroker({
    dataDir: dir,
    port: 0,
    logLevel: 'silent',
    limits: { phase1PerDevice: { ratePerSec: 1e6, burst: 1e6 }, phase1PerAddress: { ratePerSec: 1e6, burst: 1e6 }, authPerAddress: { ratePerSec: 1e6, burst: 1e6 } },
  });
  try {
    const { key } = await broker.registry.addDevice('bench2', 'sensor');
    const dev = device('bench2', key);
    const once = async (phase: 1 | 2): Promise<number> => {
      if (phase === 1) await dev.forgetTicket();
      const t = performance.now();
      const c = await dev.connectCredentials();
      const client = mqtt.connect({ host: broker.host, port: broker.port, clientId: c.clientId, username: c.username, password: Buffer.from(c.password) as unknown as string, reconnectPeriod: 0, keepalive: 30 });
      await new Promise<void>((resolve, reject) => {
        client.once('error', reject);
        client.once('connect', async () => {
          await dev.onConnack(0);
        });
        client.on('message', async (topic, payload) => {
          const r = await dev.handleIncoming(topic, new Uint8Array(payload));
          if (r.kind === 'confirmed') resolve(); // phase 2 is ready once the broker's confirmation verified (§6.4)
          else if (r.kind === 'handshake') {
            client.publish(r.reply.topic, Buffer.from(r.reply.payload), { qos: 0 });
            // a QoS 1 round trip proves the broker finished phase 1 (it answers after KX3)
            await client.publishAsync('sensors/bench2/x', Buffer.from(dev.seal('sensors/bench2/x', new Uint8Array(1))), { qos: 1 });
            resolve();
          }
        });
      });
      const dt = performance.now() - t;
      await client.endAsync();
      dev.onConnectionLost();
      return dt;
    };
    let p1 = 0;
    let p2 = 0;
    for (let i = 0; i < n; i++) p1 += await once(1);
    for (let i = 0; i < n; i++) p2 += await once(2);
    return { p1: (n * 1000) / p1, p2: (n * 1000) / p2 };
  } finally {
    await broker.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function measureHandshakes(n = 400): Promise<HandshakeRates> {
  const b = await brokerSide(n);
  const e = await endToEnd(Math.max(50, Math.floor(n / 4)));
  return { n, brokerPhase1PerSec: b.p1, brokerPhase2PerSec: b.p2, e2ePhase1PerSec: e.p1, e2ePhase2PerSec: e.p2 };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const nArg = process.argv.indexOf('--n');
  const n = nArg > 0 ? Number(process.argv[nArg + 1]) : 400;
  const r = await measureHandshakes(n);
  if (process.argv.includes('--json')) console.log(JSON.stringify(r));
  else {
    const f = (x: number) => x.toFixed(0).padStart(8);
    console.log(`handshakes per second (n=${r.n}; end to end n=${Math.max(50, Math.floor(n / 4))})`);
    console.log(`                               phase 1   phase 2`);
    console.log(`broker side (handshake+SQLite) ${f(r.brokerPhase1PerSec)}  ${f(r.brokerPhase2PerSec)}`);
    console.log(`end to end, sequential MQTT.js ${f(r.e2ePhase1PerSec)}  ${f(r.e2ePhase2PerSec)}`);
  }
}
