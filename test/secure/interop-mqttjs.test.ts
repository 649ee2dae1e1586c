/**
 * Interop through real MQTT: an unmodified MQTT.js 5 client (via
 * host-sim/mqttjs-secure.ts) against a minimal mqsec server built here from
 * ServerHandshake/ServerSession on an in-process Aedes over 127.0.0.1 TCP.
 * Checks phase 1, phase 2, the text form, hop-by-hop re-encryption to a
 * second device, and the real on-the-wire byte budgets.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import net from 'node:net';
import { Aedes } from 'aedes';
import { utf8Encode, utf8Decode } from '../../firmware/core/utf8.js';
import { KX_TOPIC, RESERVED_PREFIX } from '../../firmware/secure/constants.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { ServerHandshake, connackCodeFor, type PendingPhase1, type ServerSession } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { connectSecureMqttJs } from '../../host-sim/mqttjs-secure.js';
import { MemoryStorage, deviceKeyFor } from './helpers.js';
import { randomFillSync } from 'node:crypto';

interface Conn {
  socket: net.Socket;
  pending?: PendingPhase1;
  session?: ServerSession;
  kx2?: { topic: string; payload: Uint8Array };
}

const DEVICES = ['sensor01', 'sensor02', 'sensor03', 'sensor04'];
let aedes: Aedes;
let server: net.Server;
let url: string;
const conns = new Map<string, Conn>();
const sockets: net.Socket[] = [];
const established: string[] = [];
/** KX2 / confirmation payloads the server itself sends: the only $mqsec/ packets authorizeForward lets through. */
const ownKx2 = new WeakSet<object>();

beforeAll(async () => {
  const handshake = new ServerHandshake({
    suite: createNodeCryptoSuite(),
    clock: { now: () => Date.now() },
    lookupDevice: (id) => (DEVICES.includes(id) ? { deviceKey: deviceKeyFor(id), status: 'active' } : undefined),
    ticketStore: new MemoryTicketStore(),
  });
  const pendingSockets: net.Socket[] = [];
  aedes = await Aedes.createBroker({
    authenticate(client: any, username: any, password: any, cb: any) {
      const socket = pendingSockets.shift()!;
      handshake.acceptConnect(client.id, username, password).then(
        (r) => {
          const c: Conn = { socket };
          conns.set(client.id, c);
          if (r.kind === 'phase1') {
            c.pending = r.pending;
            c.kx2 = r.reply;
          } else if (r.kind === 'phase2') {
            c.session = r.session;
            c.kx2 = r.reply; // the resume confirmation (§6.4), sent right after CONNACK like KX2
            established.push(`${client.id}:2`);
          } else return cb(Object.assign(new Error('not mqsec'), { returnCode: 4 }), false);
          cb(null, true);
        },
        (e) => cb(Object.assign(new Error(e.message), { returnCode: connackCodeFor(e) }), false),
      );
    },
    authorizePublish(client: any, packet: any, cb: any) {
      const c = conns.get(client.id);
      if (!c) return cb(new Error('no connection'));
      if (packet.topic === KX_TOPIC) {
        if (!c.pending) return cb(new Error('unexpected KX3'));
        const p = c.pending;
        c.pending = undefined;
        handshake.completePhase1(p, new Uint8Array(packet.payload)).then(
          (s) => {
            c.session = s;
            established.push(`${client.id}:1`);
            cb(null); // routed to nobody: authorizeForward drops $mqsec/ topics
          },
          (e) => cb(e),
        );
        return;
      }
      if (!c.session) return cb(new Error('no session yet'));
      try {
        packet.payload = Buffer.from(c.session.open(packet.topic, new Uint8Array(packet.payload)));
        cb(null);
      } catch (e) {
        cb(e);
      }
    },
    authorizeSubscribe(client: any, sub: any, cb: any) {
      cb(sub.topic.startsWith(RESERVED_PREFIX) ? new Error('reserved') : null, sub);
    },
    authorizeForward(client: any, packet: any) {
      if (packet.topic.startsWith(RESERVED_PREFIX)) return ownKx2.has(packet.payload) ? packet : null;
      const s = conns.get(client.id)?.session;
      if (!s) return null;
      // hop-by-hop: re-seal for this subscriber's own session
      return { ...packet, payload: Buffer.from(s.seal(packet.topic, new Uint8Array(packet.payload))) };
    },
  } as any);
  aedes.on('clientReady', (client: any) => {
    const c = conns.get(client.id);
    if (c?.kx2) {
      const { topic, payload } = c.kx2;
      c.kx2 = undefined;
      const buf = Buffer.from(payload);
      ownKx2.add(buf);
      client.publish({ cmd: 'publish', topic, payload: buf, qos: 0, retain: false, dup: false }, () => {});
    }
  });
  server = net.createServer((socket) => {
    sockets.push(socket);
    pendingSockets.push(socket);
    aedes.handle(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  await new Promise<void>((r) => aedes.close(() => r()));
});

function newSession(devId: string, storage = new MemoryStorage()) {
  return new DeviceSecureSession({ suite: createNobleSuite({ fill: (b) => void randomFillSync(b) }), devId, deviceKey: deviceKeyFor(devId), storage });
}

async function until(f: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !f(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!f()) throw new Error('condition not reached');
}

const wireBytes = (id: string) => {
  const s = conns.get(id)!.socket;
  return s.bytesRead + s.bytesWritten;
};

describe('unmodified MQTT.js client against an mqsec server on Aedes', () => {
  it('phase 1, sealed traffic re-encrypted hop by hop, phase 2 on reconnect; real byte counts', async () => {
    const sub = await connectSecureMqttJs(url, newSession('sensor02'));
    const got: string[] = [];
    sub.onMessage((t, p) => got.push(`${t}=${utf8Decode(p)}`));
    await sub.subscribe('sensors/#', 1);

    const pub = await connectSecureMqttJs(url, newSession('sensor01'));
    expect(pub.lastPhase).toBe(1);
    await until(() => established.includes('sensor01:1'));
    const phase1Bytes = wireBytes('sensor01');
    expect(phase1Bytes).toBeLessThanOrEqual(256);
    expect(phase1Bytes).toBe(181);

    await pub.publish('sensors/sensor01/t', utf8Encode('21.5'), { qos: 1 });
    await until(() => got.length === 1);
    expect(got).toEqual(['sensors/sensor01/t=21.5']);

    await pub.reconnect();
    expect(pub.lastPhase).toBe(2);
    const phase2Bytes = wireBytes('sensor01');
    expect(phase2Bytes).toBeLessThanOrEqual(100);
    expect(phase2Bytes).toBe(96); // CONNECT 56 + CONNACK 4 + confirmation PUBLISH 36
    await pub.publish('sensors/sensor01/t', utf8Encode('22.0'), { qos: 1 });
    await until(() => got.length === 2);
    expect(got[1]).toBe('sensors/sensor01/t=22.0');
    // the server saw ciphertext on the wire only: 4 B payload + 18 B envelope
    await pub.end();
    await sub.end();
  });

  it('text-form passwords (string API) work for phase 1 and phase 2', async () => {
    const c = await connectSecureMqttJs(url, newSession('sensor03'), { textPassword: true });
    expect(c.lastPhase).toBe(1);
    await until(() => established.includes('sensor03:1')); // the broker has KX3, so it has the ticket
    await c.reconnect();
    expect(c.lastPhase).toBe(2);
    const echo: string[] = [];
    c.onMessage((t, p) => echo.push(utf8Decode(p)));
    await c.subscribe('echo/sensor03', 0);
    await c.publish('echo/sensor03', utf8Encode('hello'), { qos: 0 });
    await until(() => echo.length === 1);
    expect(echo).toEqual(['hello']);
    await c.end();
  });

  it('a link drop before the broker saw KX3 falls back to phase 1 on reconnect', async () => {
    const storage = new MemoryStorage();
    const session = newSession('sensor04', storage);
    const c = await connectSecureMqttJs(url, session);
    c.client.stream.destroy(); // immediately: KX3 may or may not have reached the broker
    await c.reconnect();
    expect([1, 2]).toContain(c.lastPhase);
    const echo: string[] = [];
    c.onMessage((t, p) => echo.push(utf8Decode(p)));
    await c.subscribe('echo/sensor04', 0);
    await c.publish('echo/sensor04', utf8Encode('after drop'), { qos: 0 });
    await until(() => echo.length === 1);
    await c.end();
  });

  it('a client with a wrong device key is refused with CONNACK 4', async () => {
    const bad = new DeviceSecureSession({ suite: createNobleSuite({ fill: (b) => void randomFillSync(b) }), devId: 'sensor01', deviceKey: deviceKeyFor('nope'), storage: new MemoryStorage() });
    await expect(connectSecureMqttJs(url, bad)).rejects.toMatchObject({ code: 4 });
  });
});
