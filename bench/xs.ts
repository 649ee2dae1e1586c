/**
 * Device-side cost of mqsec inside the real XS engine (Moddable's JavaScript
 * engine, via the xsnap worker of the XS test harness) and under Node, with
 * the same code (bench/xs/device-work.ts) and the same portable noble suite.
 * The broker's half of each exchange runs on the host and is not timed.
 *
 * XS here is a desktop build of the engine: it shows the engine's cost
 * relative to Node on the same CPU, not an ESP32's absolute speed (see
 * bench/RESULTS.md for running it on a board).
 */
import { randomBytes } from 'node:crypto';
import { createNobleSuite } from '../firmware/crypto/noble.js';
import { MemoryStorage } from '../firmware/core/memory-storage.js';
import { MemoryTicketStore, SEQ_LIMIT, ServerHandshake, buildEnvelope, type ServerSession } from '../firmware/secure/index.js';
import { createNodeCryptoSuite } from '../platform-node/crypto-suite.js';
import { DeviceWork, type Timed } from './xs/device-work.js';
import { median } from './net.js';

export interface DeviceFigures {
  phase1_device: number;
  phase2_device: number;
  seal_64B: number;
  open_64B: number;
}

/** The calls DeviceWork offers, async so one driver serves XS (RPC) and Node (direct). */
interface DeviceDriver {
  forgetTicket(): Promise<void>;
  connect(): Promise<Timed<{ password: Uint8Array; phase: number }>>;
  kx2(topic: string, payload: Uint8Array): Promise<Timed<{ topic: string; payload: Uint8Array }>>;
  confirm(topic: string, payload: Uint8Array): Promise<Timed<true>>;
  sealMany(topic: string, plaintext: Uint8Array, count: number): Promise<Timed<Uint8Array[]>>;
  openMany(topic: string, envelopes: Uint8Array[]): Promise<Timed<number>>;
  connectionLost(): Promise<void>;
}

export interface DeviceWorkOptions {
  /** Handshakes of each phase (medians are reported). */
  runs: number;
  /** Seals/opens per run (means per run, medians over runs). */
  messages: number;
}

const TOPIC = 'sensors/bench/t';
const XS_BATCH = 16;

async function drive(driver: DeviceDriver, devId: string, deviceKey: Uint8Array, o: DeviceWorkOptions): Promise<DeviceFigures> {
  const server = new ServerHandshake({
    suite: createNodeCryptoSuite(),
    clock: { now: () => Date.now() },
    lookupDevice: (id) => (id === devId ? { deviceKey, status: 'active' as const } : undefined),
    ticketStore: new MemoryTicketStore(),
  });
  const p1: number[] = [];
  const p2: number[] = [];
  const seal: number[] = [];
  const open: number[] = [];
  const plaintext = new Uint8Array(randomBytes(64));
  for (let run = 0; run < o.runs; run++) {
    // phase 1
    await driver.forgetTicket();
    const c1 = await driver.connect();
    if (c1.value.phase !== 1) throw new Error('expected a phase-1 connect');
    const a1 = await server.acceptConnect(devId, devId, c1.value.password);
    if (a1.kind !== 'phase1') throw new Error(`broker did not start phase 1 (${a1.kind})`);
    const kx3 = await driver.kx2(a1.reply.topic, a1.reply.payload);
    const s1 = await server.completePhase1(a1.pending, kx3.value.payload);
    s1.close();
    p1.push(c1.ms + kx3.ms);
    await driver.connectionLost();

    // phase 2
    const c2 = await driver.connect();
    if (c2.value.phase !== 2) throw new Error('expected a phase-2 connect');
    const a2 = await server.acceptConnect(devId, devId, c2.value.password);
    if (a2.kind !== 'phase2') throw new Error(`broker did not resume (${a2.kind})`);
    const cf = await driver.confirm(a2.reply.topic, a2.reply.payload);
    p2.push(c2.ms + cf.ms);
    const session: ServerSession = a2.session;

    // seal (device -> broker), checked by the broker
    const sealed = await driver.sealMany(TOPIC, plaintext, o.messages);
    for (const e of sealed.value) session.open(TOPIC, e);
    seal.push(sealed.ms);

    // open (broker -> device)
    const envelopes = Array.from({ length: o.messages }, () => session.seal(TOPIC, plaintext));
    const opened = await driver.openMany(TOPIC, envelopes);
    if (opened.value !== o.messages) throw new Error(`device opened ${opened.value} of ${o.messages} envelopes`);
    open.push(opened.ms);
    session.close();
    await driver.connectionLost();
  }
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { phase1_device: r(median(p1)), phase2_device: r(median(p2)), seal_64B: r(median(seal)), open_64B: r(median(open)) };
}

/**
 * Envelope overhead of a 64-byte payload (sealed length - 64), for the first
 * message of a connection (1-byte sequence varint) and for the last one a
 * connection may send (sequence 2^21 - 1: 3-byte varint; reconnect rekeys).
 */
export async function measureEnvelopeOverhead(): Promise<{ first: number; worst: number }> {
  const devId = 'benchenv';
  const deviceKey = new Uint8Array(randomBytes(32));
  const suite = createNobleSuite({ fill: (b) => void b.set(randomBytes(b.length)) });
  const w = new DeviceWork({ suite, storage: new MemoryStorage(), clock: { now: () => performance.now() }, devId, deviceKey });
  const server = new ServerHandshake({
    suite: createNodeCryptoSuite(),
    clock: { now: () => Date.now() },
    lookupDevice: (id) => (id === devId ? { deviceKey, status: 'active' as const } : undefined),
    ticketStore: new MemoryTicketStore(),
  });
  const c1 = await w.connect();
  const a1 = await server.acceptConnect(devId, devId, c1.value.password);
  if (a1.kind !== 'phase1') throw new Error('no phase 1');
  const kx3 = await w.kx2(a1.reply.topic, a1.reply.payload);
  await server.completePhase1(a1.pending, kx3.value.payload);
  const first = w.sealMany(TOPIC, new Uint8Array(64), 1).value[0].length - 64;
  // the same framing with the largest sequence number a connection may use
  const worst = buildEnvelope(0, SEQ_LIMIT - 1, new Uint8Array(64 + 16)).length - 64;
  return { first, worst };
}

export async function measureDeviceWorkNode(o: DeviceWorkOptions): Promise<DeviceFigures> {
  const devId = 'benchnode';
  const deviceKey = new Uint8Array(randomBytes(32));
  const suite = createNobleSuite({ fill: (b) => void b.set(randomBytes(b.length)) });
  const w = new DeviceWork({ suite, storage: new MemoryStorage(), clock: { now: () => performance.now() }, devId, deviceKey });
  // warm up the JIT the way a long-running device process would be
  await drive(asDriver(w), devId, deviceKey, { runs: 2, messages: o.messages });
  const w2 = new DeviceWork({ suite, storage: new MemoryStorage(), clock: { now: () => performance.now() }, devId: 'benchnode2', deviceKey });
  return drive(asDriver(w2), 'benchnode2', deviceKey, o);
}

function asDriver(w: DeviceWork): DeviceDriver {
  return {
    forgetTicket: () => w.forgetTicket(),
    connect: () => w.connect(),
    kx2: (t, p) => w.kx2(t, p),
    confirm: (t, p) => w.confirm(t, p),
    sealMany: async (t, p, n) => w.sealMany(t, p, n),
    openMany: (t, e) => w.openMany(t, e),
    connectionLost: async () => w.connectionLost(),
  };
}

export async function measureDeviceWorkXs(o: DeviceWorkOptions): Promise<DeviceFigures> {
  // the harness pulls in SES shims: load it only when XS is measured
  const { startXs } = await import('../test/xs/harness.js');
  const xs = await startXs(new URL('./xs/device-work.xs-entry.ts', import.meta.url));
  try {
    const devId = 'benchxs';
    const deviceKey = new Uint8Array(randomBytes(32));
    await xs.call('init', devId, deviceKey);
    const driver: DeviceDriver = {
      forgetTicket: () => xs.call('forgetTicket'),
      connect: () => xs.call('connect'),
      kx2: (t, p) => xs.call('kx2', t, p),
      confirm: (t, p) => xs.call('confirm', t, p),
      // The harness's command channel overflows XS's stack on messages of a few KB: batch.
      sealMany: async (t, p, n) => {
        const value: Uint8Array[] = [];
        let total = 0;
        for (let done = 0; done < n; done += XS_BATCH) {
          const k = Math.min(XS_BATCH, n - done);
          const r = await xs.call<Timed<Uint8Array[]>>('sealMany', t, p, k);
          value.push(...r.value);
          total += r.ms * k;
        }
        return { value, ms: total / n };
      },
      openMany: async (t, e) => {
        let value = 0;
        let total = 0;
        for (let done = 0; done < e.length; done += XS_BATCH) {
          const batch = e.slice(done, done + XS_BATCH);
          const r = await xs.call<Timed<number>>('openMany', t, batch);
          value += r.value;
          total += r.ms * batch.length;
        }
        return { value, ms: total / e.length };
      },
      connectionLost: () => xs.call('connectionLost'),
    };
    return await drive(driver, devId, deviceKey, o);
  } finally {
    await xs.close();
  }
}
