/**
 * mqsec load clients: the unmodified MQTT.js client carrying the firmware's
 * DeviceSecureSession (phase 1 at connect: KX1 as the CONNECT password, KX2
 * arrives as a PUBLISH, KX3 goes back as a PUBLISH). Publishers seal every
 * payload; the broker opens it, checks replay and policy, and re-seals it
 * for each subscriber's own session (hop-by-hop). Subscribers are either
 * mqsec devices (they open what the broker re-sealed: both legs encrypted)
 * or a plaintext application account (role `app`), selectable.
 *
 * The clients use the node:crypto suite, so the load generator, not the
 * protocol, stays cheap; the device's own costs are in bench/xs.ts.
 */
import mqtt from 'mqtt';
import { KX_TOPIC } from '../../firmware/secure/index.js';
import { deviceSession, type MqsecDevice } from '../handshake/mqsec.js';
import type { LoadClient, LoadClientFactory } from './load.js';

export async function mqsecDeviceClient(url: string, device: MqsecDevice): Promise<LoadClient> {
  const session = deviceSession(device);
  if (session.hasTicket) await session.forgetTicket(); // throughput clients always run phase 1
  const creds = await session.connectCredentials();
  let onMessage: (topic: string, payload: Uint8Array) => void = () => {};
  let resolveReady!: () => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  // mqtt.connect (not connectAsync): the handlers must be in place before the
  // CONNACK is parsed, because KX2 may arrive in the same TCP segment.
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 0,
    keepalive: 60,
    clientId: creds.clientId,
    username: creds.username,
    password: Buffer.from(creds.password),
  });
  // Events are handled strictly in arrival order: CONNACK before KX2, envelopes by sequence number.
  let chain = Promise.resolve();
  const inOrder = (step: () => Promise<void>) => {
    chain = chain.then(step).catch((e: Error) => rejectReady(e));
  };
  client.on('error', (e) => rejectReady(e));
  client.on('close', () => rejectReady(new Error('connection closed during the handshake')));
  client.on('connect', () => inOrder(() => session.onConnack(0)));
  client.on('message', (topic, payload) => {
    const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.length);
    inOrder(async () => {
      const r = await session.handleIncoming(topic, bytes);
      if (r.kind === 'handshake') {
        client.publish(r.reply.topic, Buffer.from(r.reply.payload), { qos: 0 });
        resolveReady();
      } else if (r.kind === 'message') onMessage(r.topic, r.payload);
      else if (r.kind === 'dropped' && topic === KX_TOPIC) rejectReady(new Error(`KX2 rejected: ${r.error.code}`));
    });
  });
  const timeout = setTimeout(() => rejectReady(new Error('mqsec phase 1 timed out')), 15_000);
  try {
    await ready;
  } catch (e) {
    client.end(true);
    throw e;
  } finally {
    clearTimeout(timeout);
  }
  return {
    publish(topic, payload, qos) {
      const sealed = session.seal(topic, payload);
      client.publish(topic, Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length), { qos }, () => {});
    },
    async subscribe(filter, qos) {
      await client.subscribeAsync(filter, { qos });
    },
    onMessage(cb) {
      onMessage = cb;
    },
    async end() {
      await client.endAsync(true);
      session.onConnectionLost();
    },
  };
}

export interface MqsecFactoryOptions {
  url: string;
  /** Devices: the first `pairs` publish, the next `pairs` subscribe (if subscribers are devices). */
  devices: MqsecDevice[];
  pairs: number;
  /** 'device': subscribers are mqsec devices; 'app': a plaintext application account per subscriber. */
  subscribers: 'device' | 'app';
  app?: { name: string; password: string };
}

export function mqsecFactory(o: MqsecFactoryOptions): LoadClientFactory {
  let n = 0;
  return async (role, i) => {
    if (role === 'pub') return mqsecDeviceClient(o.url, o.devices[i]);
    if (o.subscribers === 'device') return mqsecDeviceClient(o.url, o.devices[o.pairs + i]);
    const { mqttJsClient } = await import('./mqttjs.js');
    return mqttJsClient(o.url, { clientId: `${o.app!.name}/${i}-${++n}`, username: o.app!.name, password: o.app!.password });
  };
}

/** Topic publisher i uses: inside its own `sensors/<devId>/` space (policy). */
export const mqsecTopic = (devices: MqsecDevice[]) => (i: number) => `sensors/${devices[i].id}/bench`;
