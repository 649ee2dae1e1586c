/**
 * mqsec through an unmodified MQTT.js 5 client: the password is passed as a
 * Buffer (or as the text form, §3), KX2 arrives through the ordinary
 * 'message' event without any SUBSCRIBE, and every reconnect asks the
 * session for fresh credentials (automatic reconnect is off for that reason:
 * MQTT.js would otherwise replay the one-time password).
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { SecureMqttClient, type MqttClientLike } from '../firmware/app/secure-mqtt.js';
import type { MqsecError } from '../firmware/core/errors.js';
import type { DeviceSecureSession } from '../firmware/secure/device.js';
import { toTextForm } from '../firmware/secure/messages.js';

export interface SecureMqttJsOptions {
  /** Send the password as the "~base64url" string instead of binary. */
  textPassword?: boolean;
  mqtt?: IClientOptions;
  onError?(e: MqsecError): void;
}

export interface SecureMqttJs {
  readonly client: MqttClient;
  readonly secure: SecureMqttClient;
  readonly lastPhase: 1 | 2 | undefined;
  publish(topic: string, payload: Uint8Array, opts?: { qos?: 0 | 1; retain?: boolean }): Promise<void>;
  subscribe(filter: string, qos?: 0 | 1): Promise<unknown>;
  onMessage(cb: (topic: string, payload: Uint8Array) => void): void;
  /** Drops the TCP connection (if up) and connects again with fresh credentials; resolves when ready. */
  reconnect(): Promise<void>;
  end(): Promise<void>;
}

export async function connectSecureMqttJs(url: string, session: DeviceSecureSession, opts: SecureMqttJsOptions = {}): Promise<SecureMqttJs> {
  let onMsg: (topic: string, payload: Uint8Array) => void = () => {};
  let lastPhase: 1 | 2 | undefined;
  let failConnect: ((e: unknown) => void) | undefined;
  const secure = new SecureMqttClient({
    session,
    onMessage: (t, p) => onMsg(t, p),
    onReady: (phase) => (lastPhase = phase),
    onError: opts.onError,
  });
  const like: MqttClientLike = {
    publish: (topic, payload, o) =>
      new Promise((resolve, reject) =>
        client.publish(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), { qos: o.qos ?? 0, retain: o.retain ?? false }, (err) => (err ? reject(err) : resolve())),
      ),
    subscribe: (filter, qos = 0) => client.subscribeAsync(filter, { qos }),
  };
  secure.attach(like);

  const password = (p: Uint8Array): string | Buffer => (opts.textPassword ? toTextForm(p) : Buffer.from(p));
  const first = await secure.hooks.credentials();
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    clean: true,
    keepalive: 60,
    reconnectPeriod: 0,
    ...opts.mqtt,
    clientId: first.clientId,
    username: first.username,
    password: password(first.password) as any,
  });
  let refused: { returnCode: number } | undefined;
  client.on('connect', (connack) => secure.hooks.onConnect({ returnCode: connack.returnCode ?? 0 }));
  client.on('message', (topic, payload) => secure.hooks.onMessage({ topic, payload: new Uint8Array(payload) }));
  client.on('error', (err: any) => {
    if (typeof err?.code === 'number') refused = { returnCode: err.code };
    failConnect?.(err);
  });
  client.on('close', () => {
    secure.hooks.onClose(refused);
    if (refused) failConnect?.(Object.assign(new Error(`connection refused (${refused.returnCode})`), refused));
    refused = undefined;
  });

  const ready = (): Promise<void> =>
    new Promise((resolve, reject) => {
      failConnect = reject;
      secure.whenReady().then(() => {
        failConnect = undefined;
        resolve();
      });
    });

  await ready();
  return {
    client,
    secure,
    get lastPhase() {
      return lastPhase;
    },
    publish: (t, p, o) => secure.publish(t, p, o),
    subscribe: (f, q) => secure.subscribe(f, q),
    onMessage: (cb) => (onMsg = cb),
    async reconnect() {
      if (client.connected) {
        await new Promise<void>((resolve) => {
          client.once('close', () => resolve());
          client.stream.destroy(); // a dropped link, not a clean DISCONNECT
        });
      }
      const attempt = async () => {
        const c = await secure.hooks.credentials();
        client.options.clientId = c.clientId;
        client.options.username = c.username;
        client.options.password = password(c.password) as any;
        const r = ready();
        client.reconnect();
        await r;
      };
      const wasPhase2 = session.hasTicket;
      try {
        await attempt();
      } catch (e) {
        // §7.1: a refused resume (ticket unknown, expired, revoked) means: run phase 1 once.
        if (!wasPhase2) throw e;
        await new Promise<void>((resolve) => (client.connected || client.disconnected ? resolve() : client.once('close', () => resolve())));
        await secure.settled();
        if (session.hasTicket) throw e; // refused for another reason (server unavailable): the caller retries
        await attempt();
      }
    },
    end: () => client.endAsync(),
  };
}
