/**
 * The key service as its own process (`mqsec keyservice`): an MQTT client of
 * the mqsec broker, logged in as an account of the reserved role
 * `keyservice`, speaking the link frames of link.ts. Its store (epochs,
 * sequence allocations, K_ks) is in its own data directory, which the broker
 * never opens (docs/protocol.md §14.2, §14.12).
 *
 * Each process start draws a new instance id and says HELLO with it after
 * every (re)connect: the broker tells a reconnect of the same process (it
 * still holds its delivery answers) from a restarted one (it does not).
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { acquireDirLock, type DirLock } from '../registry/lock.js';
import { KeyServiceAgent } from './agent.js';
import { INSTANCE_LENGTH, KS_IN_TOPIC, KS_OUT_TOPIC, decodeFrame, encodeFrame, type LinkFrame } from './link.js';
import { SqliteKeyServiceStore } from './store.js';

export interface KeyServiceProcessOptions {
  /** mqtt://host:port or mqtts://host:port of the mqsec broker. */
  brokerUrl: string;
  username: string;
  password: string;
  /** CA certificate (PEM) for mqtts:// with a certificate the system does not trust. */
  ca?: Buffer;
  dataDir: string;
  suite: CryptoSuite;
  log: Logger;
  rekeyIntervalMs?: number;
  seqBlock?: number;
}

export interface RunningKeyService {
  agent: KeyServiceAgent;
  client: MqttClient;
  /** Resolves at the first successful login (rejects if the broker refuses the credential). */
  linked: Promise<void>;
  stop(): Promise<void>;
}

export function startKeyServiceProcess(o: KeyServiceProcessOptions): RunningKeyService {
  const store = SqliteKeyServiceStore.open(o.dataDir);
  let lock: DirLock;
  try {
    lock = acquireDirLock(o.dataDir);
  } catch (e) {
    store.close();
    throw e;
  }
  const instance = new Uint8Array(randomBytes(INSTANCE_LENGTH));
  const opts: IClientOptions = {
    username: o.username,
    password: o.password,
    clientId: o.username,
    clean: true,
    reconnectPeriod: 500,
    connectTimeout: 5000,
    // a delivery made while unlinked is for a connection that may be gone: never queued
    queueQoSZero: false,
    ca: o.ca,
  };
  const client = mqtt.connect(o.brokerUrl, opts);
  const send = (f: LinkFrame) => {
    if (!client.connected) return;
    client.publish(KS_OUT_TOPIC, Buffer.from(encodeFrame(f)), { qos: 0 });
  };
  const agent = new KeyServiceAgent({
    suite: o.suite,
    store,
    members: { deliver: (id, gkdel) => send({ type: 'deliver', id, payload: gkdel }) },
    rekeyIntervalMs: o.rekeyIntervalMs,
    seqBlock: o.seqBlock,
    onRekey: (filter, epoch, reason) => o.log.info({ group: filter, epoch, reason }, 'group re-keyed'),
    onRefused: (id, code) => o.log.info({ subject: id, code }, 'group key request refused'),
  });
  let firstLink: (() => void) | undefined;
  let firstFail: ((e: Error) => void) | undefined;
  const linked = new Promise<void>((res, rej) => ((firstLink = res), (firstFail = rej)));
  client.on('connect', () => {
    send({ type: 'hello', instance });
    o.log.info({ broker: o.brokerUrl }, 'key service linked to the broker');
    firstLink?.();
    firstLink = firstFail = undefined;
  });
  client.on('error', (e) => {
    o.log.warn({ err: e.message }, 'broker link error');
    // a refused login does not get better by retrying (5: not authorised, 4: bad credentials)
    const code = (e as { code?: number }).code;
    if (firstFail && (code === 4 || code === 5)) {
      firstFail(new Error(`the broker refused the key service login (CONNACK ${code})`));
      firstLink = firstFail = undefined;
      client.end(true);
    }
  });
  client.on('close', () => o.log.debug('broker link closed'));
  client.on('message', (topic, payload) => {
    if (topic !== KS_IN_TOPIC) return;
    let f: LinkFrame;
    try {
      f = decodeFrame(new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength));
    } catch (e) {
      o.log.warn({ code: isMqsecError(e) ? e.code : String(e) }, 'bad link frame from the broker');
      return;
    }
    switch (f.type) {
      case 'request':
        return agent.request(f.id, f.payload);
      case 'left':
        return agent.left(f.id);
      case 'policy':
        return agent.policy(f.policy);
      case 'rotate':
        return agent.rotate(f.filter);
      default:
        o.log.warn({ type: f.type }, 'unexpected link frame from the broker');
    }
  });
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await new Promise<void>((r) => client.end(false, {}, () => r()));
      agent.close();
      store.close();
      lock.release();
      instance.fill(0);
    })());
  return { agent, client, linked, stop };
}
