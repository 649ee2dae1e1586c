/**
 * The key service for brokers with an HTTP authentication hook
 * (docs/protocol.md §15.9), tested against RabbitMQ 3.10's
 * rabbitmq_auth_backend_http with the MQTT plugin: the broker asks the key
 * service about every login (`/user`), virtual host (`/vhost`), queue or
 * exchange (`/resource`) and topic (`/topic`), form-encoded POSTs answered
 * `allow` or `deny`. The key service checks the phase-2 token itself on the
 * login (§6.2: the counter is consumed there, so a token works once), the
 * bootstrap credential for `boot@ID`, and the policy on every topic check.
 * Decisions that depend only on the policy are cached until it changes;
 * logins never are (one-time tokens).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { constantTimeEqual } from '../../firmware/core/bytes.js';
import { asMqsecError } from '../../firmware/core/errors.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import { MSG_RESUME } from '../../firmware/secure/constants.js';
import { fromTextForm } from '../../firmware/secure/messages.js';
import { BOOT_PREFIX, STOCK_ROOT, bootPassword, downTopic, upTopic } from '../../firmware/secure/stock.js';
import type { KeyService } from '../keyservice/key-service.js';
import { canPublish, canSubscribe, type Principal } from '../policy/policy.js';
import { filtersOverlap } from '../policy/topics.js';
import { StockCore, UP_FILTER, type StockCounters, type StockOptions } from './stock-core.js';

export interface HttpAuthKeyServiceOptions extends StockOptions {
  /** The key service's own MQTT login (it answers for it itself). */
  serviceUser: string;
  servicePassword: string;
  /** Where the HTTP checks are served. Default 127.0.0.1, a free port. */
  httpHost?: string;
  httpPort?: number;
  /**
   * Base URL (http://HOST:PORT) of RabbitMQ's management API
   * (`rabbitmq_management`): when set, revocation also closes the
   * principal's live connections there (§15.5, §15.9), logged in as the key
   * service's own user, whose /user answer then carries the `administrator`
   * tag (closing another user's connections needs it).
   */
  managementUrl?: string;
  /** Time allowed for one management API request. Default 5 s. */
  managementTimeoutMs?: number;
}

const MAX_BODY = 4096;
const CACHE_MAX = 10_000;

/** RabbitMQ's MQTT plugin turns `/` into `.` and `+` into `*` in routing keys; back to MQTT. */
export function mqttTopicOfRoutingKey(key: string): string {
  return key.replace(/\./g, '/').replace(/\*/g, '+');
}

type Who = { kind: 'service' } | { kind: 'boot'; id: string } | { kind: 'principal'; principal: Principal };

export class HttpAuthKeyService {
  private readonly core: StockCore;
  private server: http.Server | undefined;
  private readonly rcs = new Map<string, Uint8Array>();
  private principals = new Map<string, Principal>();
  /** SHA-256 of each principal's K_auth at the last sync: a change is a key rotation (§14.3: a removal). */
  private keyMarks = new Map<string, string>();
  private decisions = new Map<string, boolean>();
  readonly checks = { user: 0, vhost: 0, resource: 0, topic: 0, cached: 0 };
  /** Live connections closed through the management API on revocation, and requests that failed. */
  readonly closes = { requests: 0, failed: 0 };

  constructor(private readonly o: HttpAuthKeyServiceOptions) {
    this.core = new StockCore(o, {
      // nothing to install: the login check verifies the token itself
      phase1Done: async () => undefined,
      currentRc: (id) => this.rcs.get(id),
    });
  }

  get counters(): StockCounters {
    return this.core.counters;
  }
  get keyService(): KeyService {
    return this.core.keyService;
  }

  /** Base URL the broker's HTTP backend is configured with (paths /user, /vhost, /resource, /topic). */
  get baseUrl(): string {
    const a = this.server?.address() as AddressInfo | null;
    if (!a) throw new Error('not listening');
    return `http://${a.address}:${a.port}/auth`;
  }

  /** Serves the HTTP checks (the broker needs them before anyone can log in). */
  async listen(): Promise<void> {
    await this.syncPolicy();
    const srv = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(this.o.httpPort ?? 0, this.o.httpHost ?? '127.0.0.1', () => resolve());
    });
    this.server = srv;
  }

  /** Connects to the broker as an MQTT client (after the broker is up). */
  async start(): Promise<void> {
    if (!this.server) await this.listen();
    await this.core.connect(this.o.serviceUser, this.o.servicePassword);
    await this.core.listenUp();
    // a broker restart drops the link: back with the up topics (logins never needed it: HTTP)
    this.core.keepConnected(this.o.serviceUser, this.o.servicePassword, [], () => this.core.listenUp());
  }

  /** The policy changed: forget cached decisions, revoke tickets of principals gone, re-key groups whose membership changed. */
  async syncPolicy(): Promise<void> {
    const before = this.principals;
    this.principals = new Map(this.o.source.principals().map((p) => [p.id, p]));
    this.decisions = new Map();
    const gone = [...before.keys()].filter((id) => !this.principals.has(id));
    for (const id of gone) {
      this.rcs.delete(id);
      await this.core.hs.revokeDevice(id);
    }
    // a principal whose key was rotated: its tickets went with the old key (the registry), its live connection
    // was made with the old key's credentials and goes too
    const marks = new Map<string, string>();
    for (const id of this.principals.keys()) {
      const k = this.o.source.handshakeKeys(id);
      if (!k) continue;
      marks.set(id, createHash('sha256').update(k.authKey).digest('hex'));
      k.authKey.fill(0);
      k.pskKey.fill(0);
    }
    const rotated = [...marks].filter(([id, m]) => this.keyMarks.has(id) && this.keyMarks.get(id) !== m).map(([id]) => id);
    this.keyMarks = marks;
    for (const id of rotated) this.rcs.delete(id);
    this.core.updateMembership();
    // §15.5: refused from now on (above), and cut off now
    await Promise.all([...gone, ...rotated].map((id) => this.closeConnections(id)));
  }

  /**
   * §15.5 for an HTTP hook: logins refused from now on, tickets deleted,
   * groups re-keyed, every cached decision dropped, and (with the management
   * API) the principal's live connections closed.
   */
  async revoke(id: string): Promise<void> {
    await this.core.serial(id, async () => {
      await this.core.hs.revokeDevice(id);
      this.rcs.delete(id);
    });
    await this.syncPolicy();
    // syncPolicy closes principals it sees leave; one revoked before it ran was already gone from its map
    await this.closeConnections(id);
  }

  /**
   * Closes every connection of the principal and of its bootstrap user
   * through the management API (`DELETE /api/connections/username/NAME`,
   * RabbitMQ 3.10). The HTTP auth hook itself has no way to end a
   * connection: RabbitMQ asks it only at login and at topic checks it caches
   * per connection. Failures are logged, never thrown: the principal's
   * logins are already refused and its groups re-keyed.
   * Also for a principal whose key was rotated.
   */
  private async closeConnections(id: string): Promise<void> {
    const base = this.o.managementUrl;
    if (!base) return;
    const auth = 'Basic ' + Buffer.from(`${this.o.serviceUser}:${this.o.servicePassword}`).toString('base64');
    for (const user of [id, BOOT_PREFIX + id]) {
      this.closes.requests++;
      try {
        const res = await fetch(`${base.replace(/\/$/, '')}/api/connections/username/${encodeURIComponent(user)}`, {
          method: 'DELETE',
          headers: { authorization: auth, 'x-reason': 'mqsec: principal revoked' },
          signal: AbortSignal.timeout(this.o.managementTimeoutMs ?? 5000),
        });
        await res.arrayBuffer().catch(() => undefined);
        // 204: closed (also when there was none); 404: no such user's connections
        if (res.status !== 204 && res.status !== 404) throw new Error(`HTTP ${res.status}`);
      } catch (e) {
        this.closes.failed++;
        this.core.log.error('could not close a revoked principal\'s connections through the management API', { id, user, message: (e as Error).message });
      }
    }
  }

  async stop(): Promise<void> {
    this.core.close();
    await this.core.disconnect();
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  // ---- HTTP ---------------------------------------------------------------

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size > MAX_BODY) {
        req.destroy();
        return;
      }
      chunks.push(b);
    });
    req.on('end', () => {
      const params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      this.decide(req.url ?? '', params)
        .catch((e) => {
          this.core.log.warn('auth check failed', { code: asMqsecError(e).code });
          return false as const;
        })
        .then((allow) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end(allow === false ? 'deny' : allow === true ? 'allow' : `allow ${allow.tags}`);
        });
    });
  }

  private who(username: string | null, clientId: string | null): Who | undefined {
    if (!username) return undefined;
    // RabbitMQ passes the MQTT client id: each login is bound to its own (§15.6)
    if (clientId !== null && clientId !== username) return undefined;
    if (username === this.o.serviceUser) return { kind: 'service' };
    if (username.startsWith(BOOT_PREFIX)) {
      const id = username.slice(BOOT_PREFIX.length);
      return this.principals.has(id) ? { kind: 'boot', id } : undefined;
    }
    const p = this.principals.get(username);
    return p ? { kind: 'principal', principal: p } : undefined;
  }

  /** true = `allow`, false = `deny`, tags = `allow TAGS` (a /user answer). */
  private async decide(url: string, q: URLSearchParams): Promise<boolean | { tags: string }> {
    const path = url.split('?')[0];
    const who = this.who(q.get('username'), q.get('client_id') ?? q.get('variable_map.client_id'));
    if (path.endsWith('/user')) {
      this.checks.user++;
      const ok = await this.login(who, q.get('password') ?? '');
      // the management API's login of the key service itself: closing others' connections needs this tag
      // (RabbitMQ 3.10: a DELETE of another user's connections needs administrator; monitoring, policymaker
      // and management are refused, test/stock/rabbitmq-http.test.ts)
      if (ok && who?.kind === 'service' && this.o.managementUrl) return { tags: 'administrator' };
      return ok;
    }
    if (!who) return false;
    if (path.endsWith('/vhost')) {
      this.checks.vhost++;
      return q.get('vhost') === '/';
    }
    if (path.endsWith('/resource')) {
      this.checks.resource++;
      return this.resource(who, q.get('username')!, q.get('resource'), q.get('name'));
    }
    if (path.endsWith('/topic')) {
      this.checks.topic++;
      const perm = q.get('permission');
      const key = q.get('routing_key');
      if (q.get('name') !== 'amq.topic' || !key || (perm !== 'read' && perm !== 'write')) return false;
      const cacheKey = `${q.get('username')}\n${perm}\n${key}`;
      const known = this.decisions.get(cacheKey);
      if (known !== undefined) {
        this.checks.cached++;
        return known;
      }
      const allow = this.topic(who, perm, mqttTopicOfRoutingKey(key));
      if (this.decisions.size >= CACHE_MAX) this.decisions = new Map();
      this.decisions.set(cacheKey, allow);
      return allow;
    }
    return false;
  }

  /** §15.9: logins. A principal's password must be a phase-2 token the key service accepts now (§6.2). */
  private async login(who: Who | undefined, password: string): Promise<boolean> {
    if (!who) return false;
    if (who.kind === 'service') return constantTimeEqual(utf8Encode(password), utf8Encode(this.o.servicePassword)) && password.length > 0;
    if (who.kind === 'boot') {
      const keys = this.o.source.handshakeKeys(who.id);
      if (!keys) return false;
      const want = bootPassword(this.o.suite, keys.authKey, who.id);
      keys.authKey.fill(0);
      keys.pskKey.fill(0);
      return password.length === want.length && constantTimeEqual(utf8Encode(password), utf8Encode(want));
    }
    const id = who.principal.id;
    // only the text form of RESUME: a KX1 (or anything else) as a password is a downgrade here (§15.2)
    let bytes: Uint8Array;
    try {
      bytes = fromTextForm(password);
    } catch {
      return false;
    }
    if (bytes[0] !== MSG_RESUME) return false;
    let ok = false;
    await this.core.serial(id, async () => {
      try {
        const r = await this.core.hs.acceptConnect(id, id, bytes);
        if (r.kind !== 'phase2') return;
        r.session.close();
        this.rcs.set(id, r.reply.payload);
        this.core.counters.phase2++;
        // queued on the device's persistent session (or asked for again after SUBSCRIBE, §15.3)
        this.core.publish(downTopic(id), r.reply.payload, 1);
        ok = true;
      } catch (e) {
        this.core.counters.refused++;
        this.core.log.warn('token refused', { id, code: asMqsecError(e).code });
      }
    });
    return ok;
  }

  /** Queues of one's own MQTT session and the topic exchange; nothing else. */
  private resource(who: Who, username: string, resource: string | null, name: string | null): boolean {
    if (resource === 'exchange') return name === 'amq.topic';
    if (resource === 'queue') return name === `mqtt-subscription-${username}qos0` || name === `mqtt-subscription-${username}qos1`;
    return false;
  }

  /** §15.6: the policy, the principal's own protocol topics, and never a `$`-topic. */
  private topic(who: Who, perm: 'read' | 'write', topic: string): boolean {
    if (topic.startsWith('$')) return false;
    if (who.kind === 'service') return perm === 'read' ? topic === UP_FILTER : /^mqsec\/down\/[A-Za-z0-9_-]{1,23}$/.test(topic);
    const id = who.kind === 'boot' ? who.id : who.principal.id;
    if (perm === 'write' && topic === upTopic(id)) return true;
    if (perm === 'read' && topic === downTopic(id)) return true;
    if (who.kind === 'boot') return false;
    // the protocol tree is nobody's but its owner's (§15.6): the broker checks a subscription once and
    // routes every match after, so a wildcard that reaches into it (`#`, `+/up/+`) is refused
    if (filtersOverlap(topic, `${STOCK_ROOT}/#`)) return false;
    return perm === 'write' ? canPublish(who.principal, topic) : canSubscribe(who.principal, topic);
  }
}
