/** Load clients on MQTT.js 5 (the unmodified client), plain TCP or TLS. */
import mqtt, { type IClientOptions } from 'mqtt';
import type { LoadClient, LoadClientFactory } from './load.js';

export function mqttJsClient(url: string, options: IClientOptions): Promise<LoadClient> {
  return mqtt.connectAsync(url, { protocolVersion: 4, clean: true, reconnectPeriod: 0, keepalive: 60, ...options }).then((client) => {
    client.on('error', () => {});
    return {
      publish(topic, payload, qos) {
        client.publish(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.length), { qos }, () => {});
      },
      async subscribe(filter, qos) {
        await client.subscribeAsync(filter, { qos });
      },
      onMessage(cb) {
        client.on('message', (topic, payload) => cb(topic, payload));
      },
      async end() {
        await client.endAsync(true);
      },
    };
  });
}

/** A factory of MQTT.js clients with unique client ids. */
export function mqttJsFactory(url: string, options: IClientOptions = {}): LoadClientFactory {
  let n = 0;
  return (role, i) => mqttJsClient(url, { ...options, clientId: `bench-${role}-${i}-${process.pid}-${++n}` });
}
