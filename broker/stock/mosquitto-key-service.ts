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
 *    groups re-keyed;
 *  - survives its own restart (§15.3): what it mirrored and which token is
 *    installed are kept in its data directory (dynsec-state.ts), so a
 *    restarted key service re-creates nothing that did not change and
 *    devices come back with phase 2.
 * The broker never sees a key: tokens are one-way MACs, KX messages are
 * public values, deliveries are sealed under K_ks.
 */
import { createHash } from 'node:crypto';
import mqtt from 'mqtt';
import { toHex } from '../../firmware/core/bytes.js';
import { asMqsecError } from '../../firmware/core/errors.js';
import { toTextForm } from '../../firmware/secure/messages.js';
import { bootPassword, bootUsername, downTopic } from '../../firmware/secure/stock.js';
import type { KeyService } from '../keyservice/key-service.js';
import {
  SERVICE_ROLE,
  bootRole,
  createRoleCommands,
  defaultAccessCommand,
  isCleanup,
  principalAcls,
  principalCommands,
  principalRole,
  revokeCommands,
  serviceAcls,
  setPasswordCommand,
  type DynsecCommand,
} from './dynsec.js';
import { DynsecStateStore, type StoredCredential } from './dynsec-state.js';
import { parseNoticeLine, parseSubscribeLine, type LogEvent } from './mosquitto-log.js';
import { StockCore, UP_FILTER, type Phase1Done, type StockCounters, type StockOptions } from './stock-core.js';

export type { PrincipalSource } from './stock-core.js';

const CONTROL = '$CONTROL/dynamic-security/v1';
const CONTROL_RESPONSE = '$CONTROL/dynamic-security/v1/response';
const LOG_NOTICE = '$SYS/broker/log/N';
const LOG_SUBSCRIBE = '$SYS/broker/log/M/subscribe';

export interface MosquittoKeyServiceOptions extends StockOptions {
  adminUser: string;
  adminPassword: string;
  /** Time allowed for one dynamic-security request, and for the broker log's start-up check. Default 10 s. */
  controlTimeoutMs?: number;
  /**
   * Where the key service keeps what it mirrored and which token is installed
   * (§15.3), to survive its own restart: `DynsecStateStore.open(DIR/stock-mosquitto.db)`.
   * Default: in memory (a restart then re-creates every principal, and devices
   * come back through phase 1). The caller closes it.
   */
  state?: DynsecStateStore;
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

type Waiter = { resolve(errors: string[]): void; reject(e: Error): void; timer: NodeJS.Timeout; raw?: (r: { error?: string; data?: unknown } | undefined) => void };

export class MosquittoKeyService {
  private readonly core: StockCore;
  private readonly creds = new Map<string, Credential>();
  private readonly waiting = new Map<string, Waiter>();
  private nextCorrelation = 1;
  /** Principals mirrored into dynamic security, with a hash of what they were mirrored from. */
  private known = new Map<string, string>();
  private readonly state: DynsecStateStore;
  private readonly ownState: boolean;
  /** Installed tokens read back at start, for principals whose mirror is unchanged (§15.3). */
  private restoring = new Map<string, StoredCredential>();
  /** What the last start found: principals whose mirror and installed token were kept, and those re-created. */
  readonly restart = { kept: 0, recreated: 0 };
  private lastChanged = 0;
  /** The start-up check of the broker log (§15.4): the probe's client id, the events seen for it, lines not understood. */
  private logProbe: { id: string; seen: Set<string>; unknown: string[] } | undefined;

  constructor(private readonly o: MosquittoKeyServiceOptions) {
    this.ownState = !o.state;
    this.state = o.state ?? DynsecStateStore.open(':memory:');
    this.core = new StockCore(o, {
      phase1Done: (d) => this.phase1Done(d),
      currentRc: (id) => {
        const c = this.creds.get(id);
        return c?.accepted ? c.rc : undefined;
      },
      other: (topic, payload) => this.onOther(topic, payload),
    });
  }

  get counters(): StockCounters {
    return this.core.counters;
  }
  get keyService(): KeyService {
    return this.core.keyService;
  }

  /** Connects, grants itself its topics, mirrors every principal, and starts listening. */
  async start(): Promise<void> {
    await this.core.connect(this.o.adminUser, this.o.adminPassword, [CONTROL_RESPONSE]);
    // The service's own role. Adding it to the admin client makes the broker drop our connection
    // (dynamic security kicks a client whose roles change), so that is done once and then we reconnect.
    const admin = await this.query({ command: 'getClient', username: this.o.adminUser });
    const roles = ((admin?.data as { client?: { roles?: { rolename?: string }[] } } | undefined)?.client?.roles ?? []).map((r) => r.rolename);
    if (!roles.includes(SERVICE_ROLE)) {
      const c = this.core.client!;
      const dropped = new Promise<void>((resolve) => c.once('close', () => resolve()));
      c.publish(CONTROL, JSON.stringify({ commands: [{ command: 'deleteRole', rolename: SERVICE_ROLE }, ...createRoleCommands(SERVICE_ROLE, serviceAcls()), { command: 'addClientRole', username: this.o.adminUser, rolename: SERVICE_ROLE }] }));
      await Promise.race([dropped, new Promise((r) => setTimeout(r, 3000))]);
      await this.core.disconnect();
      await this.core.connect(this.o.adminUser, this.o.adminPassword, [CONTROL_RESPONSE]);
    }
    await this.control([defaultAccessCommand()]);
    await this.readBack();
    await this.syncPolicy();
    this.restart.recreated = this.lastChanged;
    await this.core.client!.subscribeAsync([LOG_NOTICE, LOG_SUBSCRIBE], { qos: 0 });
    await this.checkLog();
    await this.core.listenUp();
    this.core.keepConnected(this.o.adminUser, this.o.adminPassword, [CONTROL_RESPONSE], () => this.relinked());
  }

  /**
   * The link to the broker came back (broker restart): listen again, and
   * treat every accepted connection as ended, since the log lines that would
   * say so may have been lost with the broker (§15.3 step 3): each gets its
   * next token installed (which also ends a connection that did survive).
   */
  private async relinked(): Promise<void> {
    await this.core.client!.subscribeAsync([LOG_NOTICE, LOG_SUBSCRIBE], { qos: 0 });
    await this.core.listenUp();
    for (const [id, c] of [...this.creds]) {
      if (!c.accepted) continue;
      this.core.keyService.memberLeft(id);
      void this.core.serial(id, async () => {
        const now = this.creds.get(id);
        if (now?.accepted) await this.rotate(id, now);
      });
    }
  }

  /**
   * Re-reads the principals (§15.6): a new principal, or one whose role
   * rules or key changed, gets fresh clients and role (which ends its
   * connection; with a new key its next connect is a phase 1); a principal
   * gone or revoked is revoked (§15.5); unchanged ones are left alone. Groups
   * are re-keyed where membership changed.
   */
  async syncPolicy(): Promise<void> {
    const principals = this.o.source.principals();
    const commands: DynsecCommand[] = [];
    const now = new Map<string, string>();
    const changed: string[] = [];
    for (const p of principals) {
      const keys = this.o.source.handshakeKeys(p.id);
      if (!keys) continue;
      const boot = bootPassword(this.o.suite, keys.authKey, p.id);
      keys.authKey.fill(0);
      keys.pskKey.fill(0);
      // a hash: it is kept in the data directory (dynsec-state.ts), and the bootstrap password need not be
      const fingerprint = createHash('sha256').update(JSON.stringify(principalAcls(p)) + '\n' + boot).digest('hex');
      now.set(p.id, fingerprint);
      if (this.known.get(p.id) === fingerprint) continue;
      // a password nobody knows until the first phase 1 installs a token
      commands.push(...principalCommands(p, boot, toHex(this.o.suite.randomBytes(24))));
      changed.push(p.id);
    }
    const gone = [...this.known.keys()].filter((id) => !now.has(id));
    for (const id of gone) commands.push(...revokeCommands(id));
    await this.control(commands);
    for (const id of changed) this.creds.delete(id);
    for (const id of gone) {
      this.creds.delete(id);
      this.state.delete(id);
      await this.core.hs.revokeDevice(id);
    }
    this.known = now;
    for (const id of changed) this.persist(id);
    // after a restart: the tokens installed before it, for every principal whose mirror is unchanged
    const restoring = this.restoring;
    this.restoring = new Map();
    for (const [id, st] of restoring) {
      if (now.has(id) && !changed.includes(id)) await this.core.serial(id, () => this.resumeCredential(id, st));
    }
    this.lastChanged = changed.length;
    this.core.updateMembership();
  }

  /** §15.5: the principal's clients are disabled (and kicked), its tickets deleted, its groups re-keyed. */
  async revoke(id: string): Promise<void> {
    await this.core.serial(id, async () => {
      await this.control(revokeCommands(id));
      await this.core.hs.revokeDevice(id);
      this.creds.delete(id);
      this.known.delete(id);
      this.state.delete(id);
    });
    this.core.updateMembership();
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
    this.core.close();
    await this.core.disconnect();
    if (this.ownState) this.state.close();
  }

  /**
   * §15.4: everything the key service knows about connections comes from the
   * broker log, in Mosquitto 2.0's wording. At start a probe connection of
   * its own (connect, subscribe, disconnect) must show up there as the three
   * events the parser knows; otherwise start fails with what to fix, rather
   * than run with tokens that are never replaced.
   */
  private async checkLog(): Promise<void> {
    const id = `${this.o.clientId ?? 'mqsec-keyservice'}-probe`;
    const probe = { id, seen: new Set<string>(), unknown: [] as string[] };
    this.logProbe = probe;
    const want = ['connect', 'subscribe', 'disconnect'];
    try {
      const c = await mqtt.connectAsync(this.o.url, { protocolVersion: 4, clientId: id, username: this.o.adminUser, password: this.o.adminPassword, clean: true, reconnectPeriod: 0, connectTimeout: 10_000 });
      await c.subscribeAsync(UP_FILTER, { qos: 0 }); // granted by the key service's own role
      await c.endAsync();
      const end = Date.now() + (this.o.controlTimeoutMs ?? 10_000);
      while (want.some((k) => !probe.seen.has(k)) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    } finally {
      this.logProbe = undefined;
    }
    const missing = want.filter((k) => !probe.seen.has(k));
    if (missing.length) {
      throw new Error(
        `the broker log gave no recognisable ${missing.join(', ')} line for the key service's probe connection ${id}: ` +
          `mosquitto.conf needs "log_dest topic", "log_type notice" and "log_type subscribe", and the lines must be in Mosquitto 2.0's wording ` +
          `(docs/protocol.md §15.4). Lines seen but not understood: ${probe.unknown.length ? probe.unknown.map((l) => JSON.stringify(l)).join(', ') : 'none'}`,
      );
    }
  }

  // ---- restart (§15.3) ----------------------------------------------------

  /**
   * At start: the principals the state says were mirrored count as known if
   * dynamic security still has their two clients and roles (the broker's
   * JSON may have been reset or edited meanwhile); syncPolicy then leaves the
   * unchanged ones alone and restores their installed tokens.
   */
  private async readBack(): Promise<void> {
    const saved = this.state.all();
    if (saved.size === 0) return;
    const clients = await this.names({ command: 'listClients' }, 'clients');
    const roles = await this.names({ command: 'listRoles' }, 'roles');
    for (const [id, st] of saved) {
      if (!clients.has(id) || !clients.has(bootUsername(id)) || !roles.has(principalRole(id)) || !roles.has(bootRole(id))) {
        this.state.delete(id);
        continue;
      }
      this.known.set(id, st.fingerprint);
      this.restoring.set(id, st);
    }
  }

  private async names(command: DynsecCommand, key: 'clients' | 'roles'): Promise<Set<string>> {
    const r = await this.query(command);
    if (r?.error) throw new Error(`dynamic security refused ${command.command}: ${r.error}`);
    const list = (r?.data as Record<string, unknown> | undefined)?.[key];
    return new Set(Array.isArray(list) ? list.filter((n): n is string => typeof n === 'string') : []);
  }

  /**
   * A principal whose mirror survived the restart: if the installed token is
   * the one its ticket expects next and no connection used it, nothing
   * changes (no dynamic-security write); otherwise the next token is
   * installed now (which ends a connection that lived across the restart; the
   * device comes back with phase 2 on that token).
   */
  private async resumeCredential(id: string, st: StoredCredential): Promise<void> {
    if (!st.sid || st.counter === undefined) {
      this.restart.kept++;
      return; // no phase 1 yet: the password is still one nobody knows
    }
    const t = await this.o.tickets.getTicket(id, st.sid);
    if (!t) return this.rotateUnusable(id);
    const expected = t.chainIndex;
    t.authKey.fill(0);
    t.chainKey.fill(0);
    this.restart.kept++;
    if (!st.accepted && st.counter === expected) {
      this.creds.set(id, { sid: st.sid, counter: st.counter, accepted: false });
      return;
    }
    await this.rotate(id, { sid: st.sid, counter: st.counter, accepted: st.accepted });
  }

  /** Writes the principal's mirror hash and installed token down (dynsec-state.ts). */
  private persist(id: string): void {
    const fingerprint = this.known.get(id);
    if (!fingerprint) return this.state.delete(id);
    const c = this.creds.get(id);
    this.state.put(id, { fingerprint, ...(c ? { sid: c.sid, counter: c.counter } : {}), accepted: c?.accepted ?? false });
  }

  // ---- dynamic security ---------------------------------------------------

  /**
   * One dynamic-security request; resolves with the error strings of the
   * commands that failed (cleanup commands excepted), rejects on timeout or
   * unless `tolerate` any failure.
   */
  private control(commands: DynsecCommand[], tolerate = false): Promise<string[]> {
    if (commands.length === 0) return Promise.resolve([]);
    return new Promise<string[]>((resolve, reject) => {
      this.send(commands, {
        reject,
        resolve: (errors) => {
          if (errors.length && !tolerate) reject(new Error(`dynamic security refused: ${errors.join('; ')}`));
          else resolve(errors);
        },
      });
    });
  }

  /** One read-only command; resolves with its response (data or error). */
  private query(command: DynsecCommand): Promise<{ error?: string; data?: unknown } | undefined> {
    return new Promise((resolve, reject) => this.send([command], { reject, resolve: () => undefined, raw: resolve }));
  }

  private send(commands: DynsecCommand[], w: Omit<Waiter, 'timer'>): void {
    const c = this.core.client;
    if (!c) return w.reject(new Error('not connected to the broker'));
    const correlationData = `ks-${this.nextCorrelation++}`;
    this.core.counters.dynsecRequests++;
    const timer = setTimeout(() => {
      this.waiting.delete(correlationData);
      w.reject(new Error('dynamic-security request timed out'));
    }, this.o.controlTimeoutMs ?? 10_000);
    this.waiting.set(correlationData, { ...w, timer });
    c.publish(CONTROL, JSON.stringify({ commands: commands.map((cmd) => ({ ...cmd, correlationData })) }), { qos: 0 });
  }

  private onOther(topic: string, payload: Buffer): void {
    if (topic === CONTROL_RESPONSE) return this.onControlResponse(payload);
    if (topic === LOG_NOTICE || topic === LOG_SUBSCRIBE) {
      const text = payload.toString('utf8');
      const ev = topic === LOG_NOTICE ? parseNoticeLine(text) : parseSubscribeLine(text);
      const probe = this.logProbe;
      if (probe) {
        if (ev?.clientId === probe.id) probe.seen.add(ev.kind);
        else if (!ev && probe.unknown.length < 5) probe.unknown.push(text.slice(0, 160));
      }
      if (ev) this.onLogEvent(ev);
    }
  }

  private onControlResponse(payload: Buffer): void {
    let body: { responses?: unknown };
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
    w.resolve(responses.filter((r) => r.error && !isCleanup({ command: r.command ?? '' })).map((r) => `${r.command}: ${r.error}`));
  }

  // ---- credentials (§15.3) ------------------------------------------------

  /** §15.2: the first token is the password before KX2 leaves, so the device's next CONNECT never races it. */
  private async phase1Done(d: Phase1Done): Promise<void> {
    await this.control([setPasswordCommand(d.id, toTextForm(this.core.token(d.id, d.sid, d.authKey, d.counter)))]);
    this.creds.set(d.id, { sid: d.sid, counter: d.counter, accepted: false });
    this.persist(d.id);
  }

  private onLogEvent(ev: LogEvent): void {
    const id = ev.clientId;
    if (!this.known.has(id)) return;
    if (ev.kind === 'connect') {
      if (ev.username !== id) return; // the bootstrap client (boot@ID) has its own client id
      void this.core.serial(id, () => this.onConnected(id));
    } else if (ev.kind === 'disconnect') {
      this.core.keyService.memberLeft(id);
      void this.core.serial(id, () => this.onDisconnected(id));
    } else if (ev.kind === 'subscribe' && ev.filter === downTopic(id)) {
      // a session without the subscription (first phase 2, or the broker lost it): RC again, now that it can be delivered
      void this.core.serial(id, async () => {
        const c = this.creds.get(id);
        if (c?.accepted && c.rc) this.core.publish(downTopic(id), c.rc, 0);
      });
    }
  }

  /** §15.3/§6.2: the broker accepted the installed token: count it, answer RC; a second connection on it is a replay. */
  private async onConnected(id: string): Promise<void> {
    const c = this.creds.get(id);
    if (!c) {
      // a password this key service did not install (restarted without its state, §15.3): make the device run phase 1
      await this.rotateUnusable(id);
      return;
    }
    if (c.accepted) {
      this.core.counters.replaysKicked++;
      this.core.log.warn('second connection on one token: kicked', { id });
      await this.rotate(id, c);
      return;
    }
    const t = await this.o.tickets.getTicket(id, c.sid);
    if (!t) return this.rotateUnusable(id);
    const token = this.core.token(id, c.sid, t.authKey, c.counter);
    t.authKey.fill(0);
    t.chainKey.fill(0);
    try {
      const r = await this.core.hs.acceptConnect(id, id, token);
      if (r.kind !== 'phase2') return;
      r.session.close();
      c.accepted = true;
      c.rc = r.reply.payload;
      this.persist(id);
      this.core.counters.phase2++;
      this.core.publish(downTopic(id), r.reply.payload, 0); // the device is online: no PUBACK needed
    } catch (e) {
      this.core.counters.refused++;
      this.core.log.warn('token not accepted: kicked', { id, code: asMqsecError(e).code });
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
    const token = this.core.token(id, c.sid, t.authKey, next);
    t.authKey.fill(0);
    t.chainKey.fill(0);
    await this.control([setPasswordCommand(id, toTextForm(token))]);
    this.creds.set(id, { sid: c.sid, counter: next, accepted: false });
    this.persist(id);
    this.core.counters.rotations++;
  }

  private async rotateUnusable(id: string): Promise<void> {
    this.creds.delete(id);
    await this.control([setPasswordCommand(id, toHex(this.o.suite.randomBytes(24)))]);
    this.persist(id);
  }
}
