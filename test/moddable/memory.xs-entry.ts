/**
 * XS side of test/moddable/memory.xs.test.ts: builds the device's secure
 * client inside XS (noble suite, DeviceSecureSession, firmware MQTT client on
 * a loopback transport, SensorNode), completes phase 1 and phase 2 against a
 * ServerHandshake that is then dropped, and keeps only the device objects
 * alive, so the Node side can read XS's live-slot count after a GC. `stock`:
 * the same device on a stock broker (docs/protocol.md §15.11).
 */
import { exposeToHost, hostRandom } from '../xs/guest.js';
import type { Connection, Storage, Transport, TransportEvents } from '../../firmware/core/platform.js';
import { silentLog } from '../../firmware/core/platform.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { x25519 as edwardsX25519 } from '@noble/curves/ed25519.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';
import { MqttClient } from '../../firmware/mqtt/client.js';
import { DeliverySender, GROUP_READER, GROUP_WRITER, GroupKeyring, deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { SensorNode } from '../../firmware/app/sensor-node.js';
import { FakeNetwork, FakeSecureLink, FakeSensor, FakeSleep, ManualTimer, MapStorage } from '../app/fakes.js';
import { StockSecureLink } from '../../firmware/app/stock-link.js';
import type { StockLink } from '../../firmware/app/stock-connector.js';
import { counterBlockFor } from '../../firmware/app/device-link.js';
import { bootPassword } from '../../firmware/secure/stock.js';
import { deriveDeviceKeys } from '../../firmware/secure/key-schedule.js';
import { StockStandIn } from '../stock/stock-stand-in.js';

declare const gc: () => void;

const g = globalThis as any;
const nullTransport: Transport = {
  connect(_e, _events: TransportEvents): Connection {
    return { write() {}, close() {} };
  },
};

/** Bytes held in ArrayBuffers and strings reachable from `root` (XS keeps these in chunks, not slots). */
function chunkBytes(root: unknown): { buffers: number; strings: number; objects: number } {
  const seen = new Set<unknown>();
  const bufs = new Set<ArrayBufferLike>();
  let strings = 0;
  let objects = 0;
  const stack: unknown[] = [root];
  while (stack.length) {
    const v = stack.pop();
    if (typeof v === 'string') {
      strings += v.length;
      continue;
    }
    if ((typeof v !== 'object' && typeof v !== 'function') || v === null || seen.has(v)) continue;
    seen.add(v);
    objects++;
    if (ArrayBuffer.isView(v)) {
      bufs.add((v as Uint8Array).buffer);
      continue;
    }
    if (v instanceof Map) for (const [k, x] of v) stack.push(k, x);
    if (v instanceof Set) for (const x of v) stack.push(x);
    for (const k of Reflect.ownKeys(v as object)) {
      const d = Object.getOwnPropertyDescriptor(v as object, k);
      if (d && 'value' in d) stack.push(d.value);
    }
  }
  let buffers = 0;
  for (const b of bufs) buffers += b.byteLength;
  return { buffers, strings, objects };
}

/** Phase 1 between a fresh device session and a ServerHandshake, both in XS, without a network. */
async function phase1Handshake(suite: CryptoSuite, devId: string, key: Uint8Array, storage: Storage) {
  const server = new ServerHandshake({ suite, clock: { now: () => 1_700_000_000_000 }, lookupDevice: () => ({ deviceKey: key, status: 'active' }), ticketStore: new MemoryTicketStore() });
  const session = new DeviceSecureSession({ suite, devId, deviceKey: key, storage });
  const c = await session.connectCredentials();
  const r = await server.acceptConnect(c.clientId, c.username, c.password);
  if (r.kind !== 'phase1') throw new Error('expected phase 1');
  await session.onConnack(0);
  const h = await session.handleIncoming(r.reply.topic, r.reply.payload);
  if (h.kind !== 'handshake') throw new Error('expected KX3');
  const srv = await server.completePhase1(r.pending, h.reply.payload);
  return { server, session, srv, kx1: c.password.length };
}

exposeToHost({
  gc: () => {
    gc();
    return true;
  },
  /**
   * The platform services and crypto suite a device has anyway (baseline).
   * `edwards`: public keys from @noble/curves/ed25519's x25519 instead (cached
   * Edwards base-point tables), the comparison that explains firmware/crypto/x25519.ts.
   */
  platform: (kind: 'device' | 'edwards') => {
    const suite = createNobleSuite(hostRandom);
    const withTables: CryptoSuite = {
      ...suite,
      dhKeyPair() {
        const privateKey = suite.randomBytes(32);
        return { privateKey, publicKey: edwardsX25519.getPublicKey(privateKey) };
      },
    };
    g.__keep = { suite: kind === 'edwards' ? withTables : suite, storage: new MapStorage() };
    return true;
  },
  /** Phase 1 + a sealed message; keeps the device session, its MQTT client and the app. */
  phase1: async () => {
    const keep = g.__keep;
    const devId = 'sensor01';
    const key = new Uint8Array(32).fill(3);
    const { server, session, kx1, srv } = await phase1Handshake(keep.suite, devId, key, keep.storage as Storage);
    const timer = new ManualTimer();
    const client = new MqttClient(
      { transport: nullTransport, timer, clock: { now: () => timer.now }, random: hostRandom, log: silentLog },
      { endpoint: { host: '127.0.0.1', port: 1883 }, credentials: () => session.connectCredentials(), reconnect: false },
    );
    const node = new SensorNode({ devId, link: new FakeSecureLink(keep.storage), network: new FakeNetwork(), sensor: new FakeSensor(), sleep: new FakeSleep(true), storage: keep.storage, timer, random: hostRandom });
    const sealed = session.seal('sensors/sensor01/temperature', new Uint8Array(24));
    srv.open('sensors/sensor01/temperature', sealed);
    keep.session = session;
    keep.client = client;
    keep.node = node;
    g.__server = server; // dropped by dropServer() after phase 2
    return { kx1, sealed: sealed.length };
  },
  /** The same handshake with nothing kept: shows one-time (module-level, lazily built) allocations. */
  warmup: async () => {
    const { session, srv } = await phase1Handshake(g.__keep.suite, 'warm0001', new Uint8Array(32).fill(4), new MapStorage());
    srv.open('t/x', session.seal('t/x', new Uint8Array(24)));
    return true;
  },
  phase2: async () => {
    const keep = g.__keep;
    const session = keep.session as DeviceSecureSession;
    session.onConnectionLost();
    const c = await session.connectCredentials();
    const r = await (g.__server as ServerHandshake).acceptConnect(c.clientId, c.username, c.password);
    if (r.kind !== 'phase2') throw new Error('expected phase 2');
    await session.onConnack(0);
    if ((await session.handleIncoming(r.reply.topic, r.reply.payload)).kind !== 'confirmed') throw new Error('confirmation refused');
    const sealed = session.seal('sensors/sensor01/temperature', new Uint8Array(24));
    r.session.open('sensors/sensor01/temperature', sealed);
    return { resume: c.password.length };
  },
  /**
   * End to end (§14) on top of phase 2: the device's keyring with its two
   * groups (writer of its readings group, reader of its commands group with
   * three app writers), one reading sealed and a command from each app opened
   * (per-writer keys and replay windows derived). The key-service side and
   * the apps' keyrings are dropped; only the device's keyring is kept.
   */
  e2e: () => {
    const keep = g.__keep;
    const suite = keep.suite as CryptoSuite;
    const devId = 'sensor01';
    const ks = deriveKeyServiceKey(suite, new Uint8Array(32).fill(3), devId);
    const keyring = new GroupKeyring({ suite, id: devId, keyServiceKey: ks });
    const apps = ['ops', 'backend', 'dashboard'];
    const readings = 'sensors/sensor01/#';
    const commands = 'cmd/sensor01/#';
    const gkR = suite.randomBytes(32);
    const gkC = suite.randomBytes(32);
    const sender = DeliverySender.answer(suite, deriveKeyServiceKey(suite, new Uint8Array(32).fill(3), devId), devId, keyring.request());
    keyring.acceptDelivery(
      sender.seal({
        seqBase: 0,
        seqLimit: 4096,
        groups: [
          { filter: readings, flags: GROUP_WRITER, epoch: 1, groupKey: gkR.slice(), writers: [devId] },
          { filter: commands, flags: GROUP_READER, epoch: 1, groupKey: gkC.slice(), writers: apps },
        ],
      }),
    );
    const sealed = keyring.seal('sensors/sensor01/temperature', new Uint8Array(24));
    const wire = (keep.session as DeviceSecureSession).wrapChannel('sensors/sensor01/temperature', sealed);
    let opened = 0;
    for (const app of apps) {
      const ak = deriveKeyServiceKey(suite, new Uint8Array(32).fill(7), app);
      const ring = new GroupKeyring({ suite, id: app, keyServiceKey: ak });
      const s = DeliverySender.answer(suite, ak, app, ring.request());
      ring.acceptDelivery(s.seal({ seqBase: 0, seqLimit: 16, groups: [{ filter: commands, flags: GROUP_WRITER, epoch: 1, groupKey: gkC.slice(), writers: apps }] }));
      keyring.open('cmd/sensor01/interval', ring.seal('cmd/sensor01/interval', new Uint8Array(4)));
      opened++;
    }
    keep.keyring = keyring;
    return { wire: wire.length, opened };
  },
  /**
   * §15: the same device on a stock broker: the sensor node on StockSecureLink
   * (connector, outbox), the session with its ticket and the keyring with two
   * groups, after phase 1 over PUBLISH, phase 2, the key delivery and one
   * reading, against the in-memory stock broker + key service. The broker's
   * side is then dropped: the link's connection and opener are swapped for
   * null ones (as the mqsec figures keep their client on a null transport),
   * and a firmware MQTT client on a null transport stands for the live
   * connection. `kept` false: the same with nothing kept (one-time caches).
   */
  stock: async (kept: boolean) => {
    const keep = g.__keep;
    const suite = keep.suite as CryptoSuite;
    const devId = kept ? 'sensor01' : 'warm0001';
    const key = new Uint8Array(32).fill(kept ? 3 : 4);
    const storage = kept ? (keep.storage as MapStorage) : new MapStorage();
    const standIn = new StockStandIn(suite, new Map([[devId, key]]), [
      { filter: `sensors/${devId}/#`, writers: [devId], readers: [] },
      { filter: `cmd/${devId}/#`, writers: ['ops', 'backend', 'dashboard'], readers: [devId] },
    ]);
    const timer = new ManualTimer();
    const k = deriveDeviceKeys(suite, key, devId);
    const session = new DeviceSecureSession({ suite, devId, deviceKey: key, storage, counterBlock: counterBlockFor('stock') });
    const keyring = new GroupKeyring({ suite, id: devId, keyServiceKey: deriveKeyServiceKey(suite, key, devId) });
    const options = { id: devId, session, keyring, bootPassword: bootPassword(suite, k.authKey, devId), open: standIn.open, timer };
    const link = new StockSecureLink(options);
    const opened = await link.open({ onMessage() {}, onDown() {} });
    await link.publish(`sensors/${devId}/temperature`, new Uint8Array(24), 1);
    if (!kept) return true;
    const nullLink: StockLink = { sessionPresent: true, subscribe: async () => [1], publish: async () => {}, close: async () => {} };
    const nullOpen = async (): Promise<StockLink> => nullLink;
    const connector = (link as any).connector;
    connector.link = nullLink;
    connector.o.open = nullOpen;
    options.open = nullOpen;
    const client = new MqttClient(
      { transport: nullTransport, timer, clock: { now: () => timer.now }, random: hostRandom, log: silentLog },
      { endpoint: { host: '127.0.0.1', port: 1883 }, cleanSession: false, credentials: async () => ({ clientId: devId }), reconnect: false },
    );
    const node = new SensorNode({ devId, link, network: new FakeNetwork(), sensor: new FakeSensor(), sleep: new FakeSleep(true), storage, timer, random: hostRandom });
    keep.stock = { link, client, node };
    return { phase: opened.phase, sent: standIn.wire.length };
  },
  dropServer: () => {
    g.__server = undefined;
    return true;
  },
  probe: (what: string) => {
    const suite = g.__keep.suite;
    const k = new Uint8Array(32).fill(5);
    if (what === 'dh') suite.dhKeyPair();
    if (what === 'dh2') suite.dh(k, suite.dhKeyPair().publicKey);
    if (what === 'hash') suite.hash(k);
    if (what === 'hmac') suite.hmac(k, k);
    if (what === 'hkdf') suite.hkdfExpand(suite.hkdfExtract(k, k), k, 32);
    if (what === 'aead') suite.aeadOpen(k, new Uint8Array(12), suite.aeadSeal(k, new Uint8Array(12), k, k), k);
    return true;
  },
  chunks: (what: string) => chunkBytes(g.__keep[what]),
});
