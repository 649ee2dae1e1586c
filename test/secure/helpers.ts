/**
 * Test fixtures for the secure protocol: in-memory storage with failure
 * injection, a manual clock, deterministic randomness, and a driver that runs
 * the handshake between a DeviceSecureSession and a ServerHandshake without
 * a network (the interop tests use real MQTT).
 */
import { createPrivateKey, createPublicKey, diffieHellman } from 'node:crypto';
import { sha256 } from '@noble/hashes/sha2.js';
import { fail } from '../../firmware/core/errors.js';
import { concatBytes, u32be } from '../../firmware/core/bytes.js';
import type { Clock, Random, Storage } from '../../firmware/core/platform.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { DeviceSecureSession, type DeviceSessionOptions } from '../../firmware/secure/device.js';
import { ServerHandshake, connackCodeFor, type ServerHandshakeOptions, type ServerSession, type DeviceRecord } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';
import { utf8Encode } from '../../firmware/core/utf8.js';

/** Deterministic "randomness": SHA-256(seed | counter) blocks. Only for tests and vectors. */
export function seededRandom(seed: string): Random {
  let ctr = 0;
  let pool = new Uint8Array(0);
  const s = utf8Encode(seed);
  return {
    fill(b: Uint8Array) {
      let o = 0;
      while (o < b.length) {
        if (pool.length === 0) pool = sha256(concatBytes(s, u32be(ctr++)));
        const n = Math.min(pool.length, b.length - o);
        b.set(pool.subarray(0, n), o);
        pool = pool.subarray(n);
        o += n;
      }
    },
  };
}

export class ManualClock implements Clock {
  constructor(public t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Atomic-put storage (like NVS) whose next operations can be made to fail. */
export class MemoryStorage implements Storage {
  readonly data = new Map<string, Uint8Array>();
  puts = 0;
  failPuts = 0;
  failGets = 0;
  async get(key: string): Promise<Uint8Array | undefined> {
    if (this.failGets > 0) {
      this.failGets--;
      fail('STORAGE', 'injected get failure');
    }
    const v = this.data.get(key);
    return v ? v.slice() : undefined;
  }
  async put(key: string, value: Uint8Array): Promise<void> {
    if (this.failPuts > 0) {
      this.failPuts--;
      fail('STORAGE', 'injected put failure');
    }
    this.puts++;
    this.data.set(key, value.slice());
  }
  async delete(key: string): Promise<void> {
    this.data.delete(key);
  }
}

export const DEV_ID = 'sensor01';

export function deviceKeyFor(devId: string): Uint8Array {
  return sha256(utf8Encode(`test device key ${devId}`));
}

export interface World {
  suiteDevice: CryptoSuite;
  suiteServer: CryptoSuite;
  clock: ManualClock;
  storage: MemoryStorage;
  store: MemoryTicketStore;
  devices: Map<string, DeviceRecord>;
  server: ServerHandshake;
  device: DeviceSecureSession;
  newDevice(opts?: Partial<DeviceSessionOptions>): DeviceSecureSession;
  newServer(opts?: Partial<ServerHandshakeOptions>): ServerHandshake;
}

export function makeWorld(opts: { seed?: string; device?: Partial<DeviceSessionOptions>; server?: Partial<ServerHandshakeOptions>; devId?: string } = {}): World {
  const seed = opts.seed ?? 'world';
  const devId = opts.devId ?? DEV_ID;
  const suiteDevice = createNobleSuite(seededRandom(`${seed}/device`));
  const suiteServer = createNodeCryptoSuite(seededRandom(`${seed}/server`));
  const clock = new ManualClock();
  const storage = new MemoryStorage();
  const store = new MemoryTicketStore();
  const devices = new Map<string, DeviceRecord>([[devId, { deviceKey: deviceKeyFor(devId), status: 'active' }]]);
  const w: World = {
    suiteDevice,
    suiteServer,
    clock,
    storage,
    store,
    devices,
    server: undefined as unknown as ServerHandshake,
    device: undefined as unknown as DeviceSecureSession,
    newDevice: (o = {}) =>
      new DeviceSecureSession({ suite: suiteDevice, devId, deviceKey: deviceKeyFor(devId), storage, ...opts.device, ...o }),
    newServer: (o = {}) =>
      new ServerHandshake({ suite: suiteServer, clock, lookupDevice: (id) => devices.get(id), ticketStore: store, ...opts.server, ...o }),
  };
  w.server = w.newServer();
  w.device = w.newDevice();
  return w;
}

/** MQTT CONNACK code the broker sends for an mqsec error (bad user name or password). */
export const REFUSED = 4;

/** A KX1 was answered with a counter hint (§5.5): `counter` is what the device accepted (-1: it refused it). */
export class CounterHinted extends Error {
  constructor(readonly counter: number) {
    super(`counter hint ${counter}`);
  }
}

/** Runs one full connect (phase 1 or 2) between device and server; returns the server session. */
export async function connect(
  device: DeviceSecureSession,
  server: ServerHandshake,
): Promise<{ session: ServerSession; phase: 1 | 2; bytes: { connectPassword: number; kx2: number; kx3: number; confirm: number } }> {
  const cred = await device.connectCredentials();
  let res;
  try {
    res = await server.acceptConnect(cred.clientId, cred.username, cred.password);
  } catch (e) {
    await device.onConnack(connackCodeFor(e));
    throw e;
  }
  await device.onConnack(0);
  if (res.kind === 'phase2') {
    // §6.4: the broker's confirmation gives the device its keys
    const c = await device.handleIncoming(res.reply.topic, res.reply.payload);
    if (c.kind !== 'confirmed') throw (c as { error?: Error }).error ?? new Error(`resume confirmation: ${c.kind}`);
    return { session: res.session, phase: 2, bytes: { connectPassword: cred.password.length, kx2: 0, kx3: 0, confirm: res.reply.payload.length } };
  }
  if (res.kind === 'counter-hint') {
    const h = await device.handleIncoming(res.reply.topic, res.reply.payload);
    device.onConnectionLost();
    throw new CounterHinted(h.kind === 'counter-hint' ? h.counter : -1);
  }
  if (res.kind !== 'phase1') throw new Error('not mqsec');
  const r = await device.handleIncoming(res.reply.topic, res.reply.payload);
  if (r.kind !== 'handshake') throw (r as any).error ?? new Error('no handshake reply');
  const session = await server.completePhase1(res.pending, r.reply.payload);
  return { session, phase: 1, bytes: { connectPassword: cred.password.length, kx2: res.reply.payload.length, kx3: r.reply.payload.length, confirm: 0 } };
}

/** Connects, falling back to phase 1 once when phase 2 is refused (what the glue does). */
export async function connectWithFallback(device: DeviceSecureSession, server: ServerHandshake) {
  try {
    return await connect(device, server);
  } catch (e) {
    device.onConnectionLost();
    return await connect(device, server);
  }
}

/** Checks both directions work under the current keys. */
export async function exchange(device: DeviceSecureSession, session: ServerSession, topic = 'sensors/sensor01/t'): Promise<void> {
  const up = utf8Encode(`up ${Math.random()}`);
  const got = session.open(topic, device.seal(topic, up));
  if (!eq(got, up)) throw new Error('uplink mismatch');
  const down = utf8Encode(`down ${Math.random()}`);
  const r = await device.handleIncoming(topic, session.seal(topic, down));
  if (r.kind !== 'message' || !eq(r.payload, down)) throw new Error(`downlink failed: ${r.kind === 'dropped' ? r.error.code : r.kind}`);
}

export function eq(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Small-order / non-canonical u-coordinates whose shared secret is all zero (RFC 7748 §6.1, cr.yp.to/ecdh.html). */
export const LOW_ORDER_POINTS = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
];


/** X25519 through OpenSSL (node:crypto), an implementation independent of mqsec's and noble's. Throws when OpenSSL refuses an all-zero result. */
export function opensslX25519(priv: Uint8Array, pub: Uint8Array): Uint8Array {
  const privateKey = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), priv]), format: 'der', type: 'pkcs8' });
  const publicKey = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), pub]), format: 'der', type: 'spki' });
  return new Uint8Array(diffieHellman({ privateKey, publicKey }));
}
