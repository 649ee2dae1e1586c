/**
 * The key service beside a stock Mosquitto 2.0 with its dynamic-security
 * plugin (docs/protocol.md §15): an MQTT client of that broker, which
 *  - mirrors every principal into dynamic security (§15.6): a role from its
 *    policy, a phase-2 client and a bootstrap client;
 *  - runs phase 1 over PUBLISH (§15.2): KX1 on `mqsec/up/ID`, KX2 or HINT
 *    on `mqsec/down/ID`, installing the first phase-2 token as the client's
 *    password before KX2 leaves;
 *  - learns of each connection from the broker's log (§15.4), accepts the
 *    token there (§6.2: counter, chain, broker nonce), sends RC to the
 *    device's persistent session, and replaces the password by the next
 *    token when that connection ends; a second connection on one token is a
 *    replay and is kicked at once;
 *  - answers group-key requests (§14.6) through the embedded KeyService;
 *  - revokes (§15.5): both clients disabled and kicked, tickets deleted,
 *    groups re-keyed.
 * The broker never sees a key: tokens are one-way MACs, KX messages are
 * public values, deliveries are sealed under K_ks.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { toHex } from '../../firmware/core/bytes.js';
import { asMqsecError } from '../../firmware/core/errors.js';
import type { Log } from '../../firmware/core/platform.js';
import { silentLog } from '../../firmware/core/platform.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { MSG_KX1 } from '../../firmware/secure/constants.js';
import { MSG_GKREQ } from '../../firmware/secure/group.js';
import { resumeTag } from '../../firmware/secure/key-schedule.js';
import { buildResume, buildResumeBody, toTextForm } from '../../firmware/secure/messages.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { bootPassword, downTopic, idOfUpTopic, isUpMessage } from '../../firmware/secure/stock.js';
import type { TicketStore } from '../../firmware/secure/ticket-store.js';
import { KeyService } from '../keyservice/key-service.js';
import { computeMembership } from '../keyservice/membership.js';
import type { KeyServiceStore } from '../keyservice/store.js';
import type { Principal, Role } from '../policy/policy.js';
import {
  SERVICE_ROLE,
  createRoleCommands,
  defaultAccessCommand,
  isCleanup,
  principalCommands,
  revokeCommands,
  serviceAcls,
  setPasswordCommand,
  type DynsecCommand,
} from './dynsec.js';
import { parseNoticeLine, parseSubscribeLine, type LogEvent } from './mosquitto-log.js';

const CONTROL = '$CONTROL/dynamic-security/v1';
const CONTROL_RESPONSE = '$CONTROL/dynamic-security/v1/response';
const LOG_NOTICE = '$SYS/broker/log/N';
const LOG_SUBSCRIBE = '$SYS/broker/log/M/subscribe';

export interface PrincipalSource {
  /** Active principals (devices and app principals holding a 32-byte key) with their roles. */
  principals(): Principal[];
  roles(): Role[];
  /** K of an active principal (the caller wipes it), or undefined. */
  principalKey(id: string): Uint8Array | undefined;
  status(id: string): 'active' | 'revoked' | undefined;
}

export interface MosquittoKeyServiceOptions {
  /** mqtt://host:port of the broker. */
  url: string;
  adminUser: string;
  adminPassword: string;
  suite: CryptoSuite;
  source: PrincipalSource;
  tickets: TicketStore;
  keyStore: KeyServiceStore;
  clientId?: string;
  log?: Log;
  now?: () => number;
  /** Time allowed for one dynamic-security request. Default 10 s. */
  controlTimeoutMs?: number;
}

/** Where a principal's phase-2 credential stands (§15.3). */
interface Credential {
  sid: Uint8Array;
  /** Counter of the token installed as the password. */
  counter: number;
  /** A connection with this token was accepted (§6.2); the next one on it is a replay. */
  accepted: boolean;
  /** RC of the accepted connection, sent again if the device subscribes afresh (§15.3). */
  rc?: Uint8Array;
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

export class MosquittoKeyService {
  private client: MqttClient | undefined;
  private readonly log: Log;
  private readonly hs: ServerHandshake;
  readonly keyService: KeyService;
  private readonly creds = new Map<string, Credential>();
  private readonly queues = new Map<string, Promise<void>>();
  private readonly waiting = new Map<string, { resolve(errors: string[]): void; reject(e: Error): void; timer: NodeJS.Timeout; raw?: (r: { error?: string; data?: unknown } | undefined) => void }>();
  private nextCorrelation = 1;
  private known = new Set<string>();
  readonly counters: StockCounters = { phase1: 0, phase2: 0, hints: 0, replaysKicked: 0, rotations: 0, dynsecRequests: 0, refused: 0 };

  constructor(private readonly o: MosquittoKeyServiceOptions) {
    this.log = o.log ?? silentLog;
    const now = o.now ?? (() => Date.now());
    this.hs = new ServerHandshake({
      suite: o.suite,
      clock: { now },
      ticketStore: o.tickets,
      lookupDevice: (id) => {
        const status = o.source.status(id);
        if (!status) return undefined;
        const deviceKey = o.source.principalKey(id);
        if (!deviceKey) return { deviceKey: new Uint8Array(32), status: 'revoked' };
        return { deviceKey, status };
      },
    });
    this.keyService = new KeyService({
      suite: o.suite,
      store: o.keyStore,
      now,
      principalKey: (id) => o.source.principalKey(id),
      send: (id, payload) => this.publish(downTopic(id), payload, 1),
    });
  }

  /** Connects, grants itself its topics, mirrors every principal, and starts listening. */
  async start(): Promise<void> {
    await this.connect();
    // The service's own role. Adding it to the admin client makes the broker drop our connection
    // (dynamic security kicks a client whose roles change), so that is done once and then we reconnect.
    const admin = await this.query({ command: 'getClient', username: this.o.adminUser });
    const roles = ((admin?.data as { client?: { roles?: { rolename?: string }[] } } | undefined)?.client?.roles ?? []).map((r) => r.rolename);
    if (!roles.includes(SERVICE_ROLE)) {
      const c = this.client!;
      const dropped = new Promise<void>((resolve) => c.once('close', () => resolve()));
      this.client = undefined;
      c.publish(CONTROL, JSON.stringify({ commands: [{ command: 'deleteRole', rolename: SERVICE_ROLE }, ...createRoleCommands(SERVICE_ROLE, serviceAcls()), { command: 'addClientRole', username: this.o.adminUser, rolename: SERVICE_ROLE }] }));
      await Promise.race([dropped, new Promise((r) => setTimeout(r, 3000))]);
      await c.endAsync(true).catch(() => undefined);
      await this.connect();
    }
    await this.control([defaultAccessCommand()]);
    await this.syncPolicy();
    const c = this.client!;
    await c.subscribeAsync([LOG_NOTICE, LOG_SUBSCRIBE, 'mqsec/up/+'], { qos: 0 });
  }

  /** Re-reads the principals: every one gets fresh clients and role (§15.6), groups are re-keyed where membership changed. */
  async syncPolicy(): Promise<void> {
    const principals = this.o.source.principals();
    const commands: DynsecCommand[] = [];
    const now = new Set<string>();
    for (const p of principals) {
      now.add(p.id);
      const key = this.o.source.principalKey(p.id);
      if (!key) continue;
      const boot = bootPassword(this.o.suite, key, p.id);
      key.fill(0);
      // a password nobody knows until the first phase 1 installs a token
      commands.push(...principalCommands(p, boot, toHex(this.o.suite.randomBytes(24))));
      this.creds.delete(p.id);
    }
    for (const id of this.known) if (!now.has(id)) commands.push(...revokeCommands(id));
    this.known = now;
    await this.control(commands);
    this.keyService.update(computeMembership(principals, this.o.source.roles()));
  }

  /** §15.5: the principal's clients are disabled (and kicked), its tickets deleted, its groups re-keyed. */
  async revoke(id: string): Promise<void> {
    await this.serial(id, async () => {
      await this.control(revokeCommands(id));
      await this.hs.revokeDevice(id);
      this.creds.delete(id);
      this.known.delete(id);
    });
    this.keyService.update(computeMembership(this.o.source.principals(), this.o.source.roles()));
  }

  /**
   * True when the principal's password is a token no connection has used yet
   * (§15.3): after a disconnect, the moment its next phase-2 CONNECT can
   * succeed. Before that the broker refuses it and the device runs phase 1.
   */
  credentialReady(id: string): boolean {
    const c = this.creds.get(id);
    return !!c && !c.accepted;
  }

  async stop(): Promise<void> {
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new Error('key service stopped'));
    }
    this.waiting.clear();
    this.keyService.close();
    await this.disconnect();
  }

  // ---- broker link --------------------------------------------------------

  private async connect(): Promise<void> {
    const c = mqtt.connect(this.o.url, {
      protocolVersion: 4,
      clientId: this.o.clientId ?? 'mqsec-keyservice',
      username: this.o.adminUser,
      password: this.o.adminPassword,
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
    await c.subscribeAsync(CONTROL_RESPONSE, { qos: 0 });
  }

  private async disconnect(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (c) await c.endAsync(true).catch(() => undefined);
  }

  private publish(topic: string, payload: Uint8Array, qos: 0 | 1): void {
    this.client?.publish(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), { qos });
  }

  /**
   * One dynamic-security request; resolves with the error strings of the
   * commands that failed (cleanup commands excepted), rejects on timeout or
   * unless `tolerate` any failure.
   */
  private control(commands: DynsecCommand[], tolerate = false): Promise<string[]> {
    if (commands.length === 0) return Promise.resolve([]);
    const c = this.client;
    if (!c) return Promise.reject(new Error('not connected to the broker'));
    const correlationData = `ks-${this.nextCorrelation++}`;
    this.counters.dynsecRequests++;
    return new Promise<string[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(correlationData);
        reject(new Error('dynamic-security request timed out'));
      }, this.o.controlTimeoutMs ?? 10_000);
      this.waiting.set(correlationData, {
        timer,
        reject,
        resolve: (errors) => {
          if (errors.length && !tolerate) reject(new Error(`dynamic security refused: ${errors.join('; ')}`));
          else resolve(errors);
        },
      });
      const tagged = commands.map((cmd) => ({ ...cmd, correlationData }));
      c.publish(CONTROL, JSON.stringify({ commands: tagged }), { qos: 0 });
    }).then((errors) => errors);
  }

  /** One read-only command; resolves with its response (data or error). */
  private query(command: DynsecCommand): Promise<{ error?: string; data?: unknown } | undefined> {
    const c = this.client;
    if (!c) return Promise.reject(new Error('not connected to the broker'));
    const correlationData = `ks-${this.nextCorrelation++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(correlationData);
        reject(new Error('dynamic-security request timed out'));
      }, this.o.controlTimeoutMs ?? 10_000);
      this.waiting.set(correlationData, { timer, reject, resolve: () => undefined, raw: resolve });
      c.publish(CONTROL, JSON.stringify({ commands: [{ ...command, correlationData }] }), { qos: 0 });
    });
  }

  private onControlResponse(payload: Buffer): void {
    let body: { responses?: { command?: string; error?: string; correlationData?: string }[] };
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      return;
    }
    const responses = Array.isArray(body.responses) ? (body.responses as { command?: string; error?: string; correlationData?: string; data?: unknown }[]) : [];
    const id = responses.find((r) => typeof r.correlationData === 'string')?.correlationData;
    const w = id ? this.waiting.get(id) : undefined;
    if (!w || !id) return;
    this.waiting.delete(id);
    clearTimeout(w.timer);
    if (w.raw) return w.raw(responses[0]);
    const errors = responses
      .filter((r) => r.error && !isCleanup({ command: r.command ?? '' }))
      .map((r) => `${r.command}: ${r.error}`);
    w.resolve(errors);
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (topic === CONTROL_RESPONSE) return this.onControlResponse(payload);
    if (topic === LOG_NOTICE || topic === LOG_SUBSCRIBE) {
      const text = payload.toString('utf8');
      const ev = topic === LOG_NOTICE ? parseNoticeLine(text) : parseSubscribeLine(text);
      if (ev) this.onLogEvent(ev);
      return;
    }
    const id = idOfUpTopic(topic);
    const bytes = new Uint8Array(payload);
    // only the holder of one of this id's credentials can publish here (ACL, §15.6)
    if (id && isUpMessage(bytes)) void this.serial(id, () => this.onUp(id, bytes));
  }

  /** Per-principal order: a connect, its disconnect and its messages are handled one after the other. */
  private serial(id: string, op: () => Promise<void>): Promise<void> {
    const prev = this.queues.get(id) ?? Promise.resolve();
    const next = prev.then(op).catch((e) => this.log.warn('key service', { id, code: asMqsecError(e).code, message: asMqsecError(e).message }));
    this.queues.set(id, next);
    void next.then(() => {
      if (this.queues.get(id) === next) this.queues.delete(id);
    });
    return next;
  }

  // ---- protocol -----------------------------------------------------------

  private async onUp(id: string, payload: Uint8Array): Promise<void> {
    if (payload[0] === MSG_KX1) return this.onKx1(id, payload);
    if (payload[0] === MSG_GKREQ) {
      try {
        this.publish(downTopic(id), this.keyService.handleRequest(id, payload), 1);
      } catch (e) {
        this.counters.refused++;
        this.log.warn('group key request refused', { id, code: asMqsecError(e).code });
      }
    }
    // KX3 is not needed here: the phase-2 CONNECT with the installed token is the device's key confirmation (§15.2).
  }

  /** §15.2: phase 1 over PUBLISH; the token for the next counter is the password before KX2 leaves. */
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
        expiresAt: (this.o.now ?? Date.now)() + 7 * 24 * 3600 * 1000,
      });
      await this.control([setPasswordCommand(id, toTextForm(this.token(id, sid, secrets.ticketAuthKey, counter + 1)))]);
      this.creds.set(id, { sid, counter: counter + 1, accepted: false });
      this.counters.phase1++;
      this.publish(downTopic(id), r.reply.payload, 0);
    } finally {
      for (const k of [secrets.confirmDeviceKey, secrets.confirmServerKey, secrets.ticketAuthKey, secrets.chainKey, secrets.trafficSecret]) k.fill(0);
    }
  }

  private token(id: string, sid: Uint8Array, authKey: Uint8Array, counter: number): Uint8Array {
    const body = buildResumeBody(sid, counter);
    return buildResume(body, resumeTag(this.o.suite, authKey, id, body));
  }

  private onLogEvent(ev: LogEvent): void {
    const id = ev.clientId;
    if (!this.known.has(id)) return;
    if (ev.kind === 'connect') {
      if (ev.username !== id) return; // the bootstrap client (boot:ID) has its own client id
      void this.serial(id, () => this.onConnected(id));
    } else if (ev.kind === 'disconnect') {
      this.keyService.memberLeft(id);
      void this.serial(id, () => this.onDisconnected(id));
    } else if (ev.kind === 'subscribe' && ev.filter === downTopic(id)) {
      // a session without the subscription (first phase 2, or the broker lost it): RC again, now that it can be delivered
      void this.serial(id, async () => {
        const c = this.creds.get(id);
        if (c?.accepted && c.rc) this.publish(downTopic(id), c.rc, 0);
      });
    }
  }

  /** §15.3/§6.2: the broker accepted the installed token: count it, answer RC; a second connection on it is a replay. */
  private async onConnected(id: string): Promise<void> {
    const c = this.creds.get(id);
    if (!c) {
      // a password we did not install (key service restarted): make the device run phase 1
      await this.rotateUnusable(id);
      return;
    }
    if (c.accepted) {
      this.counters.replaysKicked++;
      this.log.warn('second connection on one token: kicked', { id });
      await this.rotate(id, c);
      return;
    }
    const t = await this.o.tickets.getTicket(id, c.sid);
    if (!t) return this.rotateUnusable(id);
    const token = this.token(id, c.sid, t.authKey, c.counter);
    t.authKey.fill(0);
    t.chainKey.fill(0);
    try {
      const r = await this.hs.acceptConnect(id, id, token);
      if (r.kind !== 'phase2') return;
      r.session.close();
      c.accepted = true;
      c.rc = r.reply.payload;
      this.counters.phase2++;
      this.publish(downTopic(id), r.reply.payload, 0); // the device is online: no PUBACK needed
    } catch (e) {
      this.counters.refused++;
      this.log.warn('token not accepted: kicked', { id, code: asMqsecError(e).code });
      await this.rotate(id, c);
    }
  }

  private async onDisconnected(id: string): Promise<void> {
    const c = this.creds.get(id);
    if (c?.accepted) await this.rotate(id, c);
  }

  /** §15.3: the next token becomes the password (which also kicks whoever is connected on the old one). */
  private async rotate(id: string, c: Credential): Promise<void> {
    const t = await this.o.tickets.getTicket(id, c.sid);
    if (!t) return this.rotateUnusable(id);
    const next = Math.max(t.chainIndex, c.counter + (c.accepted ? 1 : 0));
    const token = this.token(id, c.sid, t.authKey, next);
    t.authKey.fill(0);
    t.chainKey.fill(0);
    await this.control([setPasswordCommand(id, toTextForm(token))]);
    this.creds.set(id, { sid: c.sid, counter: next, accepted: false });
    this.counters.rotations++;
  }

  private async rotateUnusable(id: string): Promise<void> {
    this.creds.delete(id);
    await this.control([setPasswordCommand(id, toHex(this.o.suite.randomBytes(24)))]);
  }
}
