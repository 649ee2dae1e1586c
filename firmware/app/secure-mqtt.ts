/**
 * Glue between DeviceSecureSession (firmware/secure) and an MQTT client:
 * the firmware client (firmware/mqtt/client.ts) or, through
 * host-sim/mqttjs-secure.ts, an unmodified MQTT.js. Thin on purpose: every
 * security decision lives in the session; this file only routes events
 * (docs/protocol.md §7.1) and serialises them so a KX2 is never handled
 * before the CONNACK that precedes it.
 */
import { MqsecError, asMqsecError, fail } from '../core/errors.js';
import type { Log } from '../core/platform.js';
import { silentLog } from '../core/platform.js';
import { RESERVED_PREFIX } from '../secure/constants.js';
import type { DeviceSecureSession } from '../secure/device.js';

/** What the glue needs from an MQTT client. The firmware MqttClient satisfies it as is. */
export interface MqttClientLike {
  publish(topic: string, payload: Uint8Array, opts: { qos?: 0 | 1; retain?: boolean; immediate?: boolean }): Promise<void>;
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
}

export interface SecureHooks {
  credentials(): Promise<{ clientId: string; username: string; password: Uint8Array }>;
  onConnect(connack?: { returnCode?: number }): void;
  onMessage(packet: { topic: string; payload: Uint8Array }): void;
  onClose(error?: { returnCode?: number } | unknown): void;
  onResend(msg: { topic: string; payload: Uint8Array }): Uint8Array | null;
}

export class SecureMqttClient {
  readonly hooks: SecureHooks;
  private client: MqttClientLike | undefined;
  private readonly session: DeviceSecureSession;
  private readonly log: Log;
  private chain: Promise<void> = Promise.resolve();
  private readyWaiters: (() => void)[] = [];

  constructor(private readonly opts: SecureMqttOptions) {
    this.session = opts.session;
    this.log = opts.log ?? silentLog;
    this.hooks = {
      credentials: async () => {
        await this.chain; // a pending close/CONNACK is applied first
        const c = await this.session.connectCredentials();
        return { clientId: c.clientId, username: c.username, password: c.password };
      },
      onConnect: (connack) => this.enqueue(() => this.connected(connack?.returnCode ?? 0)),
      onMessage: (packet) => this.enqueue(() => this.incoming(packet.topic, packet.payload)),
      onClose: (error) => this.enqueue(() => this.closed(error)),
      onResend: (msg) => this.session.resealForResend(msg.topic, msg.payload),
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
    return this.session.state === 'ready';
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
    return client.publish(topic, this.session.seal(topic, plaintext), { qos: opts.qos ?? 0, retain: opts.retain ?? false });
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

  private async incoming(topic: string, payload: Uint8Array): Promise<void> {
    const r = await this.session.handleIncoming(topic, payload);
    if (r.kind === 'handshake') {
      const client = this.client ?? fail('BAD_STATE', 'no MQTT client attached');
      // KX3 goes out ahead of anything queued: the broker accepts nothing else until it has it.
      await client.publish(r.reply.topic, r.reply.payload, { qos: 0, immediate: true });
      this.becameReady(1);
    } else if (r.kind === 'confirmed') this.becameReady(2);
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
  }
}
