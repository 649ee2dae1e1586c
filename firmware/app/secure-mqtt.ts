/**
 * Glue between DeviceSecureSession (firmware/secure) and an MQTT client:
 * the firmware client (firmware/mqtt/client.ts) or, through
 * host-sim/mqttjs-secure.ts, an unmodified MQTT.js. Thin on purpose: every
 * security decision lives in the session; this file only routes events
 * (docs/protocol.md §7.1) and serialises them so a KX2 is never handled
 * before the CONNACK that precedes it.
 *
 * End-to-end topics (§14), when the glue is given the member's GroupKeyring:
 * after the session is up (KX3 sent in phase 1, the broker's confirmation
 * verified in phase 2) it sends a GKREQ on `$mqsec/gk` and reports ready only
 * once the key service's answer (GKDEL) opened, so nothing is published before
 * the device knows each topic's mode. **The mode of a topic is learnt from the
 * deliveries**: a topic inside a group the device holds a key for is `e2e`
 * (the key service lists every group a member reads or writes, §14.6, and the
 * broker's per-rule mode and the key service's groups come from the same
 * policy), every other topic is `hop` (§8). Readings on an e2e topic are
 * sealed under the group key (§14.4) plus this connection's channel trailer
 * (§14.5); commands on an e2e topic are opened with the group's per-writer
 * replay windows (§14.7). Later GKDELs on the same answer are re-key pushes
 * and are applied as they come; an envelope of an epoch the device lacks makes
 * it ask again (one request outstanding at a time).
 */
import { MqsecError, asMqsecError, fail } from '../core/errors.js';
import type { Log } from '../core/platform.js';
import { silentLog } from '../core/platform.js';
import { KX_TOPIC, RESERVED_PREFIX } from '../secure/constants.js';
import type { DeviceSecureSession } from '../secure/device.js';
import { CHANNEL_TRAILER_LENGTH, GK_TOPIC, type GroupKeyring } from '../secure/group.js';

/** What the glue needs from an MQTT client. The firmware MqttClient satisfies it as is. */
export interface MqttClientLike {
  /** `e2e`: the payload is a group envelope with a channel trailer (§14.5), for the link's outbox; MQTT clients ignore it. */
  publish(topic: string, payload: Uint8Array, opts: { qos?: 0 | 1; retain?: boolean; immediate?: boolean; e2e?: boolean; plaintext?: Uint8Array }): Promise<void>;
  subscribe(filter: string, qos?: 0 | 1): Promise<unknown>;
  /** Firmware client with holdAfterConnect: lets queued traffic go once keys are in place. */
  release?(): void;
}

export interface SecureMqttOptions {
  session: DeviceSecureSession;
  log?: Log;
  onMessage?(topic: string, payload: Uint8Array): void;
  onReady?(phase: 1 | 2): void;
  onError?(error: MqsecError): void;
  /**
   * The member's group keys (§14). Without it the device knows only hop by
   * hop (a broker without a key service, or a device not configured for it).
   */
  keyring?: GroupKeyring;
  /** A group key delivery that changed keys (re-key push, §14.3): the filters. */
  onKeys?(filters: string[]): void;
}

/** Protection mode of a topic as this device sees it (§14.1). */
export type TopicMode = 'e2e' | 'hop';

export interface GlueStats {
  /** Messages sealed end to end / hop by hop. */
  e2eSealed: number;
  hopSealed: number;
  /** End-to-end messages opened, and refused by the receiver checks of §14.7 (REPLAY, DECRYPT_FAILED, ...). */
  e2eOpened: number;
  e2eDropped: number;
  /** GKREQs sent and GKDELs applied (the first of a connection and later pushes). */
  keyRequests: number;
  keyDeliveries: number;
}

export interface SecureHooks {
  credentials(): Promise<{ clientId: string; username: string; password: Uint8Array }>;
  onConnect(connack?: { returnCode?: number }): void;
  onMessage(packet: { topic: string; payload: Uint8Array }): void;
  onClose(error?: { returnCode?: number } | unknown): void;
  /** `e2e` and `plaintext` as given to publish (e2e undefined: judged by the topic's current mode). */
  onResend(msg: { topic: string; payload: Uint8Array; e2e?: boolean; plaintext?: Uint8Array }): Uint8Array | null;
}

export class SecureMqttClient {
  readonly hooks: SecureHooks;
  private client: MqttClientLike | undefined;
  private readonly session: DeviceSecureSession;
  private readonly log: Log;
  private chain: Promise<void> = Promise.resolve();
  private readyWaiters: (() => void)[] = [];
  private readonly keyring: GroupKeyring | undefined;
  /** The session is up and waits for the first key delivery of this connection (§14.6). */
  private awaitingKeys: 1 | 2 | 0 = 0;
  /** This connection has had its key delivery. */
  private keysUp = false;
  /** A GKREQ is out and not yet answered (at most one at a time). */
  private requestOut = false;
  readonly stats: GlueStats = { e2eSealed: 0, hopSealed: 0, e2eOpened: 0, e2eDropped: 0, keyRequests: 0, keyDeliveries: 0 };

  constructor(private readonly opts: SecureMqttOptions) {
    this.session = opts.session;
    this.log = opts.log ?? silentLog;
    this.keyring = opts.keyring;
    this.hooks = {
      credentials: async () => {
        await this.chain; // a pending close/CONNACK is applied first
        const c = await this.session.connectCredentials();
        return { clientId: c.clientId, username: c.username, password: c.password };
      },
      onConnect: (connack) => this.enqueue(() => this.connected(connack?.returnCode ?? 0)),
      onMessage: (packet) => this.enqueue(() => this.incoming(packet.topic, packet.payload)),
      onClose: (error) => this.enqueue(() => this.closed(error)),
      onResend: (msg) => this.resendPayload(msg.topic, msg.payload, msg.e2e, msg.plaintext),
    };
  }

  /** Resolves when every event delivered so far has been applied to the session. */
  settled(): Promise<void> {
    return this.chain;
  }

  attach(client: MqttClientLike): void {
    this.client = client;
  }

  get ready(): boolean {
    return this.session.state === 'ready' && (!this.keyring || this.keysUp);
  }

  /** §14.1: e2e when the topic is inside a group this device holds a key for, else hop. */
  modeOf(topic: string): TopicMode {
    return this.keyring && this.keyring.covers(topic) ? 'e2e' : 'hop';
  }

  /** Resolves once the current connection has keys (after the broker's confirmation in phase 2, after KX2 in phase 1). */
  whenReady(): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Seals and publishes. Waits for keys; `$mqsec/` topics are the protocol's own. */
  async publish(topic: string, plaintext: Uint8Array, opts: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
    if (topic.startsWith(RESERVED_PREFIX)) fail('NOT_AUTHORIZED', 'reserved topic');
    await this.whenReady();
    const client = this.client ?? fail('BAD_STATE', 'no MQTT client attached');
    const kr = this.keyring;
    if (kr && kr.covers(topic)) {
      // §14.4 + §14.5: NONCE_EXHAUSTED here (sequence range used up) means: reconnect for a new range.
      // The trailer is made right before the write: it is valid on this connection only.
      const wire = this.session.wrapChannel(topic, kr.seal(topic, plaintext));
      this.stats.e2eSealed++;
      const qos = opts.qos ?? 0;
      // the outbox keeps the plaintext of an e2e QoS 1 message: resealed if its epoch is gone before it is acknowledged
      const sent = client.publish(topic, wire, { qos, retain: opts.retain ?? false, e2e: true, plaintext: qos === 1 ? plaintext.slice() : undefined });
      // §14.4: three quarters of the range used: ask for the next one on this connection, go on sealing meanwhile
      if (kr.wantsRange && !this.requestOut) this.enqueue(() => this.requestKeys());
      return sent;
    }
    const env = this.session.seal(topic, plaintext);
    this.stats.hopSealed++;
    return client.publish(topic, env, { qos: opts.qos ?? 0, retain: opts.retain ?? false });
  }

  /**
   * QoS 1 resend on a new connection. Hop by hop: §8.5 (resend as is, or
   * re-sealed). End to end (§14.5): the group envelope is kept (a copy that had
   * arrived is dropped by the readers' replay windows) and gets this
   * connection's trailer, as long as readers can still open it (current or
   * previous epoch of its group, which re-opening it checks). An envelope of
   * an older epoch is sealed afresh under the current one from the kept
   * plaintext (readers may then see it twice if the first copy had arrived:
   * QoS 1 is at least once). A message of a topic whose mode changed cannot be
   * sent as it was and is dropped (throws; the outbox counts it).
   */
  private resendPayload(topic: string, payload: Uint8Array, e2e: boolean | undefined, plaintext?: Uint8Array): Uint8Array | null {
    const kr = this.keyring;
    const covered = !!kr && kr.covers(topic);
    const wasE2e = e2e ?? covered;
    if (!wasE2e) {
      if (covered) fail('UNKNOWN_SESSION', 'topic became end to end since this message was sealed');
      return this.session.resealForResend(topic, payload);
    }
    if (!kr || !covered) fail('UNKNOWN_SESSION', 'no group key for this topic any more');
    if (payload.length <= CHANNEL_TRAILER_LENGTH) fail('TRUNCATED', 'queued message shorter than its trailer');
    const genv = payload.subarray(0, payload.length - CHANNEL_TRAILER_LENGTH);
    const pt = kr.reopenOwn(topic, genv);
    if (pt) {
      pt.fill(0);
      return this.session.wrapChannel(topic, genv.slice());
    }
    if (!plaintext) fail('UNKNOWN_SESSION', 'group epoch of the queued message is gone');
    this.stats.e2eSealed++;
    return this.session.wrapChannel(topic, kr.seal(topic, plaintext));
  }

  subscribe(filter: string, qos: 0 | 1 = 0): Promise<unknown> {
    if (filter.startsWith(RESERVED_PREFIX)) return Promise.reject(new MqsecError('NOT_AUTHORIZED', 'reserved topic'));
    const client = this.client ?? fail('BAD_STATE', 'no MQTT client attached');
    return client.subscribe(filter, qos);
  }

  private enqueue(op: () => Promise<void> | void): void {
    this.chain = this.chain.then(op).catch((e) => this.report(asMqsecError(e)));
  }

  private report(e: MqsecError): void {
    this.log.warn('mqsec glue', { code: e.code });
    this.opts.onError?.(e);
  }

  private async connected(returnCode: number): Promise<void> {
    // Keys come later: with KX2 in phase 1, with the broker's confirmation in phase 2 (§6.4).
    await this.session.onConnack(returnCode);
  }

  private becameReady(phase: 1 | 2): void {
    this.client?.release?.();
    const w = this.readyWaiters;
    this.readyWaiters = [];
    for (const f of w) f();
    this.opts.onReady?.(phase);
  }

  /** Session keys are in place: ready now, or (with a keyring) once the key service answered. */
  private async sessionUp(phase: 1 | 2): Promise<void> {
    if (!this.keyring) return this.becameReady(phase);
    this.awaitingKeys = phase;
    await this.requestKeys();
  }

  /** §14.6: GKREQ with a fresh member nonce, ahead of anything queued. */
  private async requestKeys(): Promise<void> {
    const kr = this.keyring;
    const client = this.client;
    if (!kr || !client || this.session.state !== 'ready') return;
    this.requestOut = true;
    this.stats.keyRequests++;
    await client.publish(GK_TOPIC, kr.request(), { qos: 0, immediate: true });
  }

  private keyDelivery(payload: Uint8Array): void {
    const kr = this.keyring ?? fail('UNKNOWN_TYPE', 'key delivery without a keyring');
    // BAD_STATE (no request out), DECRYPT_FAILED (not for our latest request, forged), REPLAY, MALFORMED, BAD_KEY
    const changed = kr.acceptDelivery(payload);
    this.stats.keyDeliveries++;
    this.requestOut = false;
    if (changed.length) {
      this.log.info('group keys', { groups: changed.length });
      try {
        this.opts.onKeys?.(changed);
      } catch {
        // an observer's bug must not stop key handling
      }
    }
    if (this.awaitingKeys) {
      const phase = this.awaitingKeys;
      this.awaitingKeys = 0;
      this.keysUp = true;
      this.becameReady(phase);
    }
  }

  /** §14.7: opens an end-to-end message; a failed check is a typed drop that changes no state. */
  private async openGroupMessage(topic: string, payload: Uint8Array): Promise<void> {
    const kr = this.keyring!;
    let m;
    try {
      m = kr.open(topic, payload);
    } catch (e) {
      const err = asMqsecError(e);
      this.stats.e2eDropped++;
      // an epoch this device lacks: the keys moved on and the push was missed, ask again (§14.6)
      if (err.code === 'UNKNOWN_SESSION' && this.keysUp && !this.requestOut) await this.requestKeys();
      throw err;
    }
    this.stats.e2eOpened++;
    this.opts.onMessage?.(topic, m.plaintext);
  }

  private async incoming(topic: string, payload: Uint8Array): Promise<void> {
    if (this.keyring && topic === GK_TOPIC) return this.keyDelivery(payload);
    if (this.keyring && topic !== KX_TOPIC && this.keyring.covers(topic)) return this.openGroupMessage(topic, payload);
    const r = await this.session.handleIncoming(topic, payload);
    if (r.kind === 'handshake') {
      const client = this.client ?? fail('BAD_STATE', 'no MQTT client attached');
      // KX3 goes out ahead of anything queued: the broker accepts nothing else until it has it.
      await client.publish(r.reply.topic, r.reply.payload, { qos: 0, immediate: true });
      await this.sessionUp(1);
    } else if (r.kind === 'confirmed') await this.sessionUp(2);
    else if (r.kind === 'message') this.opts.onMessage?.(r.topic, r.payload);
    else if (r.kind === 'counter-hint') {
      // §5.5: this connection gets no session (the broker closes it); the next connect uses a fresh counter.
      this.report(new MqsecError('REPLAY', 'device counter was behind the broker: moved past it, reconnect'));
    } else this.report(r.error);
  }

  private async closed(error: unknown): Promise<void> {
    const rc = error && typeof (error as { returnCode?: unknown }).returnCode === 'number' ? (error as { returnCode: number }).returnCode : undefined;
    if (rc !== undefined && this.session.state === 'awaiting-connack') await this.session.onConnack(rc);
    this.session.onConnectionLost();
    // the delivery answer dies with the connection; group keys stay until the next delivery replaces them
    this.keyring?.onConnectionLost();
    this.keysUp = false;
    this.awaitingKeys = 0;
    this.requestOut = false;
  }
}
