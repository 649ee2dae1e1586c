/**
 * The firmware MQTT client (firmware/mqtt/client.ts) as the connection a
 * StockConnector opens (docs/protocol.md §15): one client per connection,
 * no reconnects of its own (the app's state machine decides), user name,
 * client id and text password as the connector gives them, and the
 * persistent session (clean session 0) of phase 2, whose "session present"
 * tells the connector whether its down-topic subscription survived (§15.3).
 * A refused CONNACK rejects with the error carrying `returnCode`, so the
 * session drops a refused ticket (§6.3).
 */
import { MqsecError } from '../core/errors.js';
import type { Endpoint } from '../core/platform.js';
import { MqttClient, type MqttClientServices } from '../mqtt/client.js';
import type { OpenStockLink, StockLink } from './stock-connector.js';

export interface StockTransportOptions {
  endpoint: Endpoint;
  keepaliveSec?: number;
  connectTimeoutMs?: number;
  maxPacketSize?: number;
}

export function firmwareStockOpener(services: MqttClientServices, o: StockTransportOptions): OpenStockLink {
  return (lo) =>
    new Promise<StockLink>((resolve, reject) => {
      let settled = false;
      const client = new MqttClient(services, {
        endpoint: o.endpoint,
        keepaliveSec: o.keepaliveSec ?? 60,
        connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
        maxPacketSize: o.maxPacketSize ?? 4096,
        cleanSession: lo.cleanSession,
        reconnect: false,
        credentials: async () => ({ clientId: lo.clientId, username: lo.username, password: lo.password }),
        onConnect: (connack) => {
          // CONNACK first: the client hands over PUBLISHes that followed it (a queued RC) only after this returns
          lo.onConnack();
          settled = true;
          resolve({
            sessionPresent: connack.sessionPresent,
            subscribe: (filter, qos) => client.subscribe(filter, qos),
            publish: (topic, payload, qos) => client.publish(topic, payload, { qos }),
            close: () => client.disconnect(),
          });
        },
        onMessage: (p) => lo.onMessage(p.topic, p.payload),
        // An attempt that ends before a transport existed (TCP connect timed out) reports only
        // this error and then closes without onClose: settle on the next tick if it did.
        onError: (e) => {
          if (settled) return;
          const h = services.timer.set(() => {
            services.timer.clear(h);
            if (settled || client.state !== 'closed') return;
            settled = true;
            reject(e);
          }, 0);
        },
        onClose: (error) => {
          if (!settled) {
            settled = true;
            reject(error ?? new MqsecError('CONNECTION_CLOSED', 'closed before CONNACK'));
            return;
          }
          lo.onClose();
        },
      });
      client.start();
    });
}
