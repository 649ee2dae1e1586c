/**
 * mqsec handshakes against the mqsec broker, at the packet level with the
 * firmware codec and the firmware's DeviceSecureSession (the device code),
 * so the bytes counted are exactly what a device sends.
 *
 * The device session here uses the node:crypto suite: this measures the
 * protocol and the broker, like the TLS baselines whose clients use OpenSSL;
 * the device's own compute cost is measured separately (bench/xs.ts).
 *
 * Ready: phase 1 when KX2 is verified and KX3 written (application data may
 * follow KX3 in the same flight); phase 2 when the broker's confirmation
 * (RC, right behind CONNACK 0, docs/protocol.md §6.4) is verified.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { DeviceSecureSession } from '../../firmware/secure/index.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import type { DialTimes, HandshakeMethod } from './measure.js';
import { expectConnackAccepted, packetSocket } from './wire.js';

export interface MqsecDevice {
  id: string;
  key: Uint8Array;
}

const sessions = new Map<string, DeviceSecureSession>();

/**
 * The one device session of `device` in this process. A device keeps its
 * state (counter, ticket) across connections; a second session with fresh
 * storage would reuse counters and be refused as a replay (rightly).
 */
export function deviceSession(device: MqsecDevice): DeviceSecureSession {
  // keyed by id and key: a re-provisioned device (new registry, new key) starts afresh
  const cacheKey = `${device.id}:${Buffer.from(device.key).toString('hex')}`;
  let s = sessions.get(cacheKey);
  if (!s) {
    s = newDeviceSession(device);
    sessions.set(cacheKey, s);
  }
  return s;
}

function newDeviceSession(device: MqsecDevice): DeviceSecureSession {
  return new DeviceSecureSession({
    suite: createNodeCryptoSuite({ fill: (b) => void b.set(randomBytes(b.length)) }),
    devId: device.id,
    deviceKey: device.key,
    storage: new MemoryStorage(),
    // NVS-safe key ([A-Za-z0-9_-], <= 15 chars) that every Storage accepts
    storageKey: 'mqsec_state',
  });
}

async function dialMqsec(session: DeviceSecureSession, port: number, phase: 1 | 2): Promise<DialTimes> {
  if (phase === 1 && session.hasTicket) await session.forgetTicket();
  const startedAt = performance.now();
  const creds = await session.connectCredentials();
  if (creds.phase !== phase) throw new Error(`device chose phase ${creds.phase}, expected ${phase}`);
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  try {
    const { ps, tcpConnectedAt } = await packetSocket(socket, socket, 'connect');
    ps.send({ type: 'connect', clientId: creds.clientId, cleanSession: true, keepalive: 60, username: creds.username, password: creds.password });
    await expectConnackAccepted(ps);
    await session.onConnack(0);
    if (phase === 1) {
      const kx2 = await ps.next();
      if (kx2.type !== 'publish') throw new Error(`expected KX2, got ${kx2.type}`);
      const r = await session.handleIncoming(kx2.topic, kx2.payload);
      if (r.kind !== 'handshake') throw new Error(`KX2 rejected: ${r.kind === 'dropped' ? r.error.code : r.kind}`);
      ps.send({ type: 'publish', topic: r.reply.topic, payload: r.reply.payload, qos: 0, dup: false, retain: false });
    } else {
      const rc = await ps.next();
      if (rc.type !== 'publish') throw new Error(`expected the resume confirmation, got ${rc.type}`);
      const r = await session.handleIncoming(rc.topic, rc.payload);
      if (r.kind !== 'confirmed') throw new Error(`confirmation rejected: ${r.kind === 'dropped' ? r.error.code : r.kind}`);
    }
    const readyAt = performance.now();
    return {
      startedAt,
      tcpConnectedAt,
      readyAt,
      close: () => {
        ps.close();
        session.onConnectionLost();
      },
    };
  } catch (e) {
    socket.destroy();
    session.onConnectionLost();
    throw e;
  }
}

/** Phase 1 every time (the device forgets its ticket before each connect; not timed). */
export function mqsecPhase1Method(port: number, device: MqsecDevice): HandshakeMethod {
  const session = deviceSession(device);
  return { name: 'mqsec_phase1', port, dial: (p) => dialMqsec(session, p, 1) };
}

/** Phase 2: `prepare` runs one phase 1 for the ticket; every measured connect resumes. */
export function mqsecPhase2Method(port: number, device: MqsecDevice): HandshakeMethod {
  const session = deviceSession(device);
  return {
    name: 'mqsec_phase2',
    port,
    prepare: async () => {
      if (!session.hasTicket) (await dialMqsec(session, port, 1)).close();
      // the broker stores the ticket when KX3 arrives; give it a moment before resuming
      await new Promise((r) => setTimeout(r, 50));
    },
    dial: (p) => dialMqsec(session, p, 2),
  };
}
