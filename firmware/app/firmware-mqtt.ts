/**
 * The firmware MQTT client (firmware/mqtt/client.ts) as the connectable
 * client of a SecureMqttLink: one connection per link `open`, reconnects
 * left to the app's state machine, the secure glue's hooks wired straight to
 * the client's callbacks (a refused CONNACK reaches the glue's onClose as an
 * error carrying its return code, so a refused phase-2 ticket is dropped),
 * and traffic held after CONNACK until the glue has keys (holdAfterConnect).
 */
import { MqttClient, type MqttClientServices } from '../mqtt/client.js';
import type { Endpoint } from '../core/platform.js';
import type { ConnectableMqttClient, GlueHooks } from './secure-link.js';

export interface FirmwareMqttOptions {
  endpoint: Endpoint;
  keepaliveSec?: number;
  connectTimeoutMs?: number;
  maxPacketSize?: number;
}

export function createFirmwareMqttClient(services: MqttClientServices, o: FirmwareMqttOptions, hooks: GlueHooks): ConnectableMqttClient {
  let closed = false;
  const client = new MqttClient(services, {
    endpoint: o.endpoint,
    keepaliveSec: o.keepaliveSec ?? 60,
    connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
    maxPacketSize: o.maxPacketSize ?? 4096,
    cleanSession: true,
    reconnect: false,
    holdAfterConnect: true,
    credentials: () => hooks.credentials(),
    onConnect: (connack) => hooks.onConnect(connack),
    onMessage: (packet) => hooks.onMessage({ topic: packet.topic, payload: packet.payload }),
    onResend: (msg) => hooks.onResend({ topic: msg.topic, payload: msg.payload }),
    onClose: (error) => {
      if (closed) return;
      closed = true;
      hooks.onClose(error);
    },
  });
  return {
    start: () => client.start(),
    publish: (topic, payload, opts) => client.publish(topic, payload, opts),
    subscribe: (filter, qos) => client.subscribe(filter, qos ?? 0),
    release: () => client.release(),
    disconnect: () => client.disconnect(),
  };
}
