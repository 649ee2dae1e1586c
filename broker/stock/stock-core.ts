/**
 * What every stock-broker flavour of the key service shares (docs/protocol.md
 * §15): the MQTT link to the broker, phase 1 over PUBLISH (§15.2), the RC
 * request of a device whose session lost its subscription (§15.3), group-key
 * requests (§14.6), and per-principal ordering. A flavour adds how the broker
 * learns of credentials and policy: dynamic-security objects for Mosquitto
 * (mosquitto-key-service.ts), answers to HTTP checks for RabbitMQ and other
 * brokers with an HTTP hook (http-auth-key-service.ts).
 */
import mqtt, { type MqttClient } from 'mqtt';
import { asMqsecError } from '../../firmware/core/errors.js';
import type { Log } from '../../firmware/core/platform.js';
import { silentLog } from '../../firmware/core/platform.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { MSG_KX1, MSG_RESUME } from '../../firmware/secure/constants.js';
import { MSG_GKREQ } from '../../firmware/secure/group.js';
import { resumeTag, type DeviceKeys } from '../../firmware/secure/key-schedule.js';
import { buildResume, buildResumeBody } from '../../firmware/secure/messages.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { downTopic, idOfUpTopic, isUpMessage } from '../../firmware/secure/stock.js';
import type { TicketStore } from '../../firmware/secure/ticket-store.js';
import { KeyService } from '../keyservice/key-service.js';
import { computeMembership } from '../keyservice/membership.js';
import type { KeyServiceStore } from '../keyservice/store.js';
import type { Principal, Role } from '../policy/policy.js';

export const UP_FILTER = 'mqsec/up/+';

export interface PrincipalSource {
  /** Active principals (devices and app principals holding a 32-byte key) with their roles. */
  principals(): Principal[];
  roles(): Role[];
  /** K_auth and K_psk of an active principal (§4.1; the caller wipes them), or undefined. */
  handshakeKeys(id: string): DeviceKeys | undefined;
  /** K_ks of an active principal (§14.2), or undefined. */
  memberKey(id: string): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  status(id: string): 'active' | 'revoked' | undefined;
}

export interface StockOptions {
  /** mqtt://host:port of the broker. */
  url: string;
  suite: CryptoSuite;
  source: PrincipalSource;
  tickets: TicketStore;
  keyStore: KeyServiceStore;
  clientId?: string;
  log?: Log;
  now?: () => number;
  /** Ticket lifetime (§6.2). Default 7 days. */
  ticketLifetimeMs?: number;
}

export interface StockCounters {
  phase1: number;
  phase2: number;
  hints: number;
  replaysKicked: number;
  rotations: number;
  dynsecRequests: number;
  refused: number;
}

/** A finished phase 1 (§15.2): the ticket is stored; the flavour makes its first token usable before KX2 leaves. */
export interface Phase1Done {
  id: string;
  sid: Uint8Array;
  /** K_tok of the new ticket (wiped after the hook returns). */
  authKey: Uint8Array;
  /** The counter the device's first phase-2 CONNECT will carry. */
  counter: number;
}

export interface StockFlavour {
  /** Called before KX2 is published. */
  phase1Done(d: Phase1Done): Promise<void>;
  /** RC of the principal's accepted connection, if any (sent again on request, §15.3). */
  currentRc(id: string): Uint8Array | undefined;
  /** Messages on topics other than the up topics (broker log, control responses). */
  other?(topic: string, payload: Buffer): void;
}

export class StockCore {
  client: MqttClient | undefined;
  readonly log: Log;
  readonly hs: ServerHandshake;
  readonly keyService: KeyService;
  readonly counters: StockCounters = { phase1: 0, phase2: 0, hints: 0, replaysKicked: 0, rotations: 0, dynsecRequests: 0, refused: 0 };
  private readonly queues = new Map<string, Promise<void>>();
  private readonly now: () => number;
  /** Set by keepConnected(); cleared by disconnect() (a deliberate close is not followed by a reconnect). */
  private relink: (() => void) | undefined;

  constructor(
    private readonly o: StockOptions,
    private readonly flavour: StockFlavour,
  ) {
    this.log = o.log ?? silentLog;
    this.now = o.now ?? (() => Date.now());
    this.hs = new ServerHandshake({
      suite: o.suite,
      clock: { now: this.now },
      ticketStore: o.tickets,
      ticketLifetimeMs: o.ticketLifetimeMs,
      lookupDevice: (id) => {
        const status = o.source.status(id);
        if (!status) return undefined;
        const keys = o.source.handshakeKeys(id);
        if (!keys) return { keys: { authKey: new Uint8Array(32), pskKey: new Uint8Array(32) }, status: 'revoked' };
        return { keys, status };
      },
    });
    this.keyService = new KeyService({
      suite: o.suite,
      store: o.keyStore,
      now: this.now,
      memberKey: (id) => o.source.memberKey(id),
      send: (id, payload) => this.publish(downTopic(id), payload, 1),
    });
  }

  async connect(username: string, password: string, extraTopics: string[] = []): Promise<void> {
    const c = mqtt.connect(this.o.url, {
      protocolVersion: 4,
      clientId: this.o.clientId ?? 'mqsec-keyservice',
      username,
      password,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    await new Promise<void>((resolve, reject) => {
      c.once('connect', () => resolve());
      c.once('error', reject);
      c.once('close', () => reject(new Error('broker closed the key service connection')));
    });
    c.removeAllListeners('error');
    c.on('error', (e) => this.log.warn('key service broker link', { message: e.message }));
    c.on('message', (topic, payload) => this.onMessage(topic, payload));
    this.client = c;
    if (extraTopics.length) await c.subscribeAsync(extraTopics, { qos: 0 });
  }

  async listenUp(): Promise<void> {
    await this.client?.subscribeAsync(UP_FILTER, { qos: 0 });
  }

  /**
   * After start-up: when the broker drops the link (a broker restart, a
   * network cut), connect again with backoff (0.2 s doubling to 5 s) and run
   * `reconnected` (the flavour re-subscribes and repairs what it missed
   * meanwhile). Without it the key service would stay deaf after the broker's
   * first restart.
   */
  keepConnected(username: string, password: string, extraTopics: string[], reconnected: () => Promise<void>): void {
    const watch = (c: MqttClient) =>
      c.once('close', () => {
        if (this.client !== c || !this.relink) return;
        this.client = undefined;
        this.relink();
      });
    this.relink = () => {
      void (async () => {
        for (let delay = 200; this.relink; delay = Math.min(delay * 2, 5000)) {
          await new Promise((r) => setTimeout(r, delay));
          if (!this.relink) return;
          try {
            await this.connect(username, password, extraTopics);
            watch(this.client!);
            await reconnected();
            this.log.info('key service linked to the broker again');
            return;
          } catch (e) {
            this.log.warn('key service cannot reach the broker yet', { message: asMqsecError(e).message });
            const c = this.client;
            this.client = undefined;
            if (c) await c.endAsync(true).catch(() => undefined);
          }
        }
      })();
    };
    if (this.client) watch(this.client);
  }

  async disconnect(): Promise<void> {
    this.relink = undefined;
    const c = this.client;
    this.client = undefined;
    if (c) await c.endAsync(true).catch(() => undefined);
  }

  publish(topic: string, payload: Uint8Array, qos: 0 | 1): void {
    this.client?.publish(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), { qos });
  }

  /** Group membership from the current policy (§14.1); re-keys what changed. */
  updateMembership(): void {
    // the key service applies it in turn (its store is asynchronous); a failure is logged, the next change re-applies all
    this.keyService.update(computeMembership(this.o.source.principals(), this.o.source.roles())).catch((e: unknown) =>
      this.log.warn('group membership not applied', { code: asMqsecError(e).code }),
    );
  }

  /** Per-principal order: a connect, its disconnect and its messages are handled one after the other. */
  serial(id: string, op: () => Promise<void>): Promise<void> {
    const prev = this.queues.get(id) ?? Promise.resolve();
    const next = prev.then(op).catch((e) => this.log.warn('key service', { id, code: asMqsecError(e).code, message: asMqsecError(e).message }));
    this.queues.set(id, next);
    void next.then(() => {
      if (this.queues.get(id) === next) this.queues.delete(id);
    });
    return next;
  }

  /** RESUME (§6.1) for a ticket and counter: what the device will send as its password. */
  token(id: string, sid: Uint8Array, authKey: Uint8Array, counter: number): Uint8Array {
    const body = buildResumeBody(sid, counter);
    return buildResume(body, resumeTag(this.o.suite, authKey, id, body));
  }

  close(): void {
    this.keyService.close();
  }

  private onMessage(topic: string, payload: Buffer): void {
    const id = idOfUpTopic(topic);
    if (id === undefined) {
      this.flavour.other?.(topic, payload);
      return;
    }
    const bytes = new Uint8Array(payload);
    // only the holder of one of this id's credentials can publish here (broker ACL, §15.6)
    if (isUpMessage(bytes) || bytes[0] === MSG_RESUME) void this.serial(id, () => this.onUp(id, bytes));
  }

  private async onUp(id: string, payload: Uint8Array): Promise<void> {
    if (payload[0] === MSG_KX1) return this.onKx1(id, payload);
    if (payload[0] === MSG_GKREQ) {
      try {
        this.publish(downTopic(id), await this.keyService.handleRequest(id, payload), 1);
      } catch (e) {
        this.counters.refused++;
        this.log.warn('group key request refused', { id, code: asMqsecError(e).code });
      }
      return;
    }
    if (payload[0] === MSG_RESUME) {
      // §15.3: a device whose session had no subscription asks for the RC of its accepted connection again
      const rc = this.flavour.currentRc(id);
      if (rc) this.publish(downTopic(id), rc, 1);
    }
    // KX3 is not needed: the phase-2 CONNECT with the first token is the device's key confirmation (§15.2).
  }

  /** §15.2: phase 1 over PUBLISH; the flavour makes the first token usable before KX2 leaves. */
  private async onKx1(id: string, kx1: Uint8Array): Promise<void> {
    let r;
    try {
      r = await this.hs.acceptConnect(id, id, kx1);
    } catch (e) {
      this.counters.refused++;
      this.log.warn('KX1 refused', { id, code: asMqsecError(e).code });
      return;
    }
    if (r.kind === 'counter-hint') {
      this.counters.hints++;
      this.publish(downTopic(id), r.reply.payload, 0);
      return;
    }
    if (r.kind !== 'phase1') return;
    const { secrets } = r.pending.take();
    const counter = r.pending.counter;
    try {
      const sid = secrets.sid.slice();
      await this.o.tickets.putTicket({
        devId: id,
        sid,
        suite: this.o.suite.id,
        authKey: secrets.ticketAuthKey.slice(),
        chainStart: counter + 1,
        chainIndex: counter + 1,
        chainKey: secrets.chainKey.slice(),
        expiresAt: this.now() + (this.o.ticketLifetimeMs ?? 7 * 24 * 3600 * 1000),
      });
      await this.flavour.phase1Done({ id, sid, authKey: secrets.ticketAuthKey, counter: counter + 1 });
      this.counters.phase1++;
      this.publish(downTopic(id), r.reply.payload, 0);
    } finally {
      for (const k of [secrets.confirmDeviceKey, secrets.confirmServerKey, secrets.ticketAuthKey, secrets.chainKey, secrets.trafficSecret]) k.fill(0);
    }
  }
}
