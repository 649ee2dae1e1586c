/**
 * Console logins: admin accounts of the registry (role `admin`), their
 * password checked by the registry's scrypt verification, rate-limited per
 * source address and per account name. A login yields a session: a random
 * 256-bit cookie value (kept here only as its SHA-256, so a heap dump does
 * not hand out live cookies) and a CSRF token the page sends back in a header
 * with every state change (synchronizer token, OWASP CSRF cheat sheet).
 *
 * Sessions live in memory: a broker restart logs everyone out, which is the
 * safe direction. Each request re-reads the account, so disabling an admin
 * account or changing its role ends its console sessions at once.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { RateLimiter } from '../limits/rate-limit.js';
import type { RateLimitOptions } from '../limits/rate-limit.js';
import type { Registry } from '../registry/registry.js';

export const ADMIN_ROLE = 'admin';

export interface ConsoleSession {
  name: string;
  csrf: string;
  createdAt: number;
  lastAt: number;
  remote: string;
}

export interface SessionLimits {
  /** A session unused this long ends (ms). */
  idleMs: number;
  /** A session ends this long after login whatever happens (ms). */
  absoluteMs: number;
  /** Login attempts per source address. */
  loginPerAddress: RateLimitOptions;
  /** Login attempts per account name (a distributed guess at one account). */
  loginPerAccount: RateLimitOptions;
  /** Sessions held at once (oldest ends first). */
  maxSessions: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  idleMs: 30 * 60_000,
  absoluteMs: 12 * 3_600_000,
  loginPerAddress: { ratePerSec: 0.2, burst: 10 },
  loginPerAccount: { ratePerSec: 0.1, burst: 20 },
  maxSessions: 1000,
};

export type LoginResult =
  | { ok: true; token: string; session: ConsoleSession }
  | { ok: false; reason: 'rate-limited' | 'bad-credentials' | 'not-admin' };

const digest = (token: string) => createHash('sha256').update(token).digest('base64url');

export class ConsoleSessions {
  private readonly sessions = new Map<string, ConsoleSession>();
  private readonly byAddress: RateLimiter;
  private readonly byAccount: RateLimiter;

  constructor(
    private readonly registry: Registry,
    private readonly limits: SessionLimits = DEFAULT_SESSION_LIMITS,
    private readonly now: () => number = Date.now,
  ) {
    this.byAddress = new RateLimiter(limits.loginPerAddress);
    this.byAccount = new RateLimiter(limits.loginPerAccount);
  }

  async login(name: string, password: string, remote: string): Promise<LoginResult> {
    // both buckets are spent before any scrypt work: a guessing run costs the broker little
    if (!this.byAddress.take(remote) || !this.byAccount.take(name.slice(0, 64))) return { ok: false, reason: 'rate-limited' };
    const account = await this.registry.verifyAccount(name, password);
    if (!account) return { ok: false, reason: 'bad-credentials' };
    if (account.role !== ADMIN_ROLE) return { ok: false, reason: 'not-admin' };
    const token = randomBytes(32).toString('base64url');
    const t = this.now();
    const session: ConsoleSession = { name: account.name, csrf: randomBytes(32).toString('base64url'), createdAt: t, lastAt: t, remote };
    this.prune();
    if (this.sessions.size >= this.limits.maxSessions) this.sessions.delete(this.sessions.keys().next().value!);
    this.sessions.set(digest(token), session);
    return { ok: true, token, session };
  }

  /** The live session for a cookie value, refreshed; undefined if unknown, expired or its account lost admin rights. */
  async lookup(token: string | undefined): Promise<ConsoleSession | undefined> {
    if (!token || token.length > 128) return undefined;
    const key = digest(token);
    const s = this.sessions.get(key);
    if (!s) return undefined;
    const t = this.now();
    const account = await this.registry.getAccount(s.name);
    if (t - s.lastAt > this.limits.idleMs || t - s.createdAt > this.limits.absoluteMs || !account || account.status !== 'active' || account.role !== ADMIN_ROLE) {
      this.sessions.delete(key);
      return undefined;
    }
    s.lastAt = t;
    return s;
  }

  logout(token: string | undefined): void {
    if (token) this.sessions.delete(digest(token));
  }

  /** Constant-time check of the CSRF token sent with a state change. */
  static csrfMatches(session: ConsoleSession, sent: string | undefined): boolean {
    if (!sent) return false;
    const a = Buffer.from(session.csrf);
    const b = Buffer.from(sent);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  get size(): number {
    return this.sessions.size;
  }

  private prune(): void {
    const t = this.now();
    for (const [k, s] of this.sessions) {
      if (t - s.lastAt > this.limits.idleMs || t - s.createdAt > this.limits.absoluteMs) this.sessions.delete(k);
    }
  }
}
