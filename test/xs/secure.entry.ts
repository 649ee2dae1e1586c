/**
 * firmware/secure inside the real XS engine: the test vectors, a device whose
 * state machine lives in XS driven against a Node-side ServerHandshake, and
 * timings for the report (not asserted).
 */
import { exposeToHost, hostRandom } from './guest.js';
import { fromHex } from '../../firmware/core/bytes.js';
import { MqsecError } from '../../firmware/core/errors.js';
import type { Storage } from '../../firmware/core/platform.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';
import { computeVectors, type VectorInputs } from '../vectors/compute.js';
import { computeGroupVectors, type GroupVectorInputs } from '../vectors/group-compute.js';
import { GroupKeyring, deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { splitKeysScenario } from '../secure/split-keys.js';

declare const performance: { now(): number };

class MapStorage implements Storage {
  readonly data = new Map<string, Uint8Array>();
  failPuts = 0;
  async get(k: string) {
    const v = this.data.get(k);
    return v ? v.slice() : undefined;
  }
  async put(k: string, v: Uint8Array) {
    if (this.failPuts > 0) {
      this.failPuts--;
      throw new MqsecError('STORAGE', 'injected');
    }
    this.data.set(k, v.slice());
  }
  async delete(k: string) {
    this.data.delete(k);
  }
}

const suite = createNobleSuite(hostRandom);
const fixed = (priv: Uint8Array) => createNobleSuite({ fill: (b) => b.set(priv.subarray(0, b.length)) });
let device: DeviceSecureSession | undefined;
let storage = new MapStorage();

let ring: GroupKeyring | undefined;

function attempt<T>(f: () => T): T | { code: string } {
  try {
    return f();
  } catch (e) {
    return { code: codeOf(e) };
  }
}

function codeOf(e: unknown): string {
  return e instanceof MqsecError ? e.code : `foreign ${String(e)}`;
}

/** A device and a server both in XS: phase 1, a graceful "restart" of the server through exportGrace/importGrace, phase 2, resends. */
async function graceRestart(): Promise<string[]> {
  let now = 1_700_000_000_000;
  const clock = { now: () => now };
  const key = new Uint8Array(32).fill(6);
  const store = new MemoryTicketStore();
  const mkServer = () => new ServerHandshake({ suite, clock, lookupDevice: () => ({ deviceKey: key, status: 'active' }), ticketStore: store, graceMs: 10_000 });
  const dev = new DeviceSecureSession({ suite, devId: 'xsgrace1', deviceKey: key, storage: new MapStorage() });
  const connect = async (server: ServerHandshake) => {
    const c = await dev.connectCredentials();
    const r = await server.acceptConnect(c.clientId, c.username, c.password);
    await dev.onConnack(0);
    if (r.kind === 'phase2') {
      if ((await dev.handleIncoming(r.reply.topic, r.reply.payload)).kind !== 'confirmed') throw new Error('no confirmation');
      return r.session;
    }
    if (r.kind !== 'phase1') throw new Error('not mqsec');
    const h = await dev.handleIncoming(r.reply.topic, r.reply.payload);
    if (h.kind !== 'handshake') throw new Error('no KX3');
    return server.completePhase1(r.pending, h.reply.payload);
  };
  const T = 'sensors/xsgrace1/t';
  const before = mkServer();
  const first = await connect(before);
  const delivered = dev.seal(T, new Uint8Array([1]));
  const inFlight = dev.seal(T, new Uint8Array([2]));
  const tooLate = dev.seal(T, new Uint8Array([3]));
  first.open(T, delivered);
  dev.onConnectionLost();
  first.close();
  const records = before.exportGrace();
  const after = mkServer();
  now += 3000;
  const out = [`restored ${after.importGrace(records)}`];
  const second = await connect(after);
  const attempt = (env: Uint8Array) => {
    try {
      second.open(T, env);
      return 'ok';
    } catch (e) {
      return codeOf(e);
    }
  };
  out.push(`phase ${second.phase}`, attempt(delivered), attempt(inFlight), attempt(inFlight));
  now += 7000;
  out.push(attempt(tooLate));
  return out;
}

exposeToHost({
  graceRestart,
  splitKeys: () => splitKeysScenario(suite),
  engine: () => ({ hasProcess: typeof (globalThis as any).process !== 'undefined', hasBuffer: typeof (globalThis as any).Buffer !== 'undefined' }),
  vectors: (inputs: VectorInputs) => computeVectors(fixed, inputs),
  groupVectors: (inputs: GroupVectorInputs) => computeGroupVectors(suite, inputs),

  // A group-key member in XS (§14.7); the Node test plays the key service and the other members.
  ringCreate: (id: string, keyHex: string) => {
    ring = new GroupKeyring({ suite, id, keyServiceKey: deriveKeyServiceKey(suite, fromHex(keyHex), id) });
    return true;
  },
  ringRequest: () => ring!.request(),
  ringAccept: (payload: Uint8Array) => attempt(() => ring!.acceptDelivery(payload)),
  ringSeal: (topic: string, pt: Uint8Array) => attempt(() => ring!.seal(topic, pt)),
  ringOpen: (topic: string, genv: Uint8Array) => attempt(() => ring!.open(topic, genv)),
  ringLost: () => ring!.onConnectionLost(),
  /** Seals n envelopes, then tells whether the writer now wants its next range (§14.4). */
  ringSealMany: (topic: string, n: number) => {
    for (let i = 0; i < n; i++) {
      const r = attempt(() => ring!.seal(topic, new Uint8Array(1)));
      if (!(r instanceof Uint8Array)) return { sealed: i, stopped: r, wantsRange: ring!.wantsRange };
    }
    return { sealed: n, wantsRange: ring!.wantsRange };
  },
  devWrap: (topic: string, genv: Uint8Array) => attempt(() => device!.wrapChannel(topic, genv)),

  // A device in XS; the Node test plays the broker.
  /** Flash wiped (or a new board with the same key): the next devCreate starts from nothing. */
  devWipe: () => {
    storage = new MapStorage();
    return true;
  },
  devCreate: (devId: string, keyHex: string, keepStorage: boolean) => {
    if (!keepStorage) storage = new MapStorage();
    device = new DeviceSecureSession({ suite, devId, deviceKey: fromHex(keyHex), storage, counterBlock: 4 });
    return true;
  },
  devCredentials: async () => {
    try {
      return await device!.connectCredentials();
    } catch (e) {
      return { code: codeOf(e) };
    }
  },
  devConnack: async (rc: number) => {
    await device!.onConnack(rc);
    return device!.state;
  },
  devIncoming: async (topic: string, payload: Uint8Array) => {
    const r = await device!.handleIncoming(topic, payload);
    if (r.kind === 'dropped') return { kind: r.kind, code: r.error.code };
    if (r.kind === 'handshake') return { kind: r.kind, topic: r.reply.topic, payload: r.reply.payload };
    if (r.kind === 'message') return { kind: r.kind, payload: r.payload };
    if (r.kind === 'counter-hint') return { kind: r.kind, counter: r.counter };
    return { kind: r.kind };
  },
  devSeal: (topic: string, pt: Uint8Array) => {
    try {
      return device!.seal(topic, pt);
    } catch (e) {
      return { code: codeOf(e) };
    }
  },
  devLost: () => {
    device!.onConnectionLost();
    return device!.state;
  },
  devFailNextPut: () => {
    storage.failPuts = 1;
    return true;
  },

  /** Timings (ms) of the protocol with both sides in XS: for the report only. */
  bench: async (n: number) => {
    const devId = 'sensor01';
    const key = new Uint8Array(32).fill(1);
    const srvStore = new MemoryTicketStore();
    let t = 1_700_000_000_000;
    const server = new ServerHandshake({ suite, clock: { now: () => t }, lookupDevice: () => ({ deviceKey: key, status: 'active' }), ticketStore: srvStore });
    let devMs1 = 0;
    let all1 = 0;
    for (let i = 0; i < n; i++) {
      const d = new DeviceSecureSession({ suite, devId, deviceKey: key, storage: new MapStorage() });
      await srvStore.resetDevice(devId);
      const t0 = performance.now();
      const c = await d.connectCredentials();
      const t1 = performance.now();
      const r = await server.acceptConnect(c.clientId, c.username, c.password);
      const t2 = performance.now();
      if (r.kind !== 'phase1') throw new Error('phase 1');
      await d.onConnack(0);
      const h = await d.handleIncoming(r.reply.topic, r.reply.payload);
      const t3 = performance.now();
      if (h.kind !== 'handshake') throw new Error('kx3');
      await server.completePhase1(r.pending, h.reply.payload);
      const t4 = performance.now();
      devMs1 += t1 - t0 + (t3 - t2);
      all1 += t4 - t0;
    }
    // phase 2 and seal on one device
    const d = new DeviceSecureSession({ suite, devId, deviceKey: key, storage: new MapStorage() });
    await srvStore.resetDevice(devId);
    const c = await d.connectCredentials();
    const r = await server.acceptConnect(c.clientId, c.username, c.password);
    if (r.kind !== 'phase1') throw new Error('phase 1');
    await d.onConnack(0);
    const h = await d.handleIncoming(r.reply.topic, r.reply.payload);
    if (h.kind !== 'handshake') throw new Error('kx3');
    await server.completePhase1(r.pending, h.reply.payload);
    let devMs2 = 0;
    let all2 = 0;
    for (let i = 0; i < n; i++) {
      d.onConnectionLost();
      const t0 = performance.now();
      const c2 = await d.connectCredentials();
      const t1 = performance.now();
      const r2 = await server.acceptConnect(c2.clientId, c2.username, c2.password);
      const t2 = performance.now();
      if (r2.kind !== 'phase2') throw new Error('phase 2');
      await d.onConnack(0);
      await d.handleIncoming(r2.reply.topic, r2.reply.payload);
      const t3 = performance.now();
      devMs2 += t1 - t0 + (t3 - t2);
      all2 += t3 - t0;
    }
    const pt = new Uint8Array(64);
    const m = n * 20;
    const t0 = performance.now();
    for (let i = 0; i < m; i++) d.seal('sensors/sensor01/temp', pt);
    const sealMs = (performance.now() - t0) / m;
    t += 1;
    return { phase1DeviceMs: devMs1 / n, phase1BothMs: all1 / n, phase2DeviceMs: devMs2 / n, phase2BothMs: all2 / n, seal64Ms: sealMs };
  },
});
