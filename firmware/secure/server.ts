/**
 * Server (broker) side of the two-phase protocol (docs/protocol.md §5, §6, §9).
 * The broker calls acceptConnect from its CONNECT authentication hook and
 * completePhase1 when KX3 arrives; ServerSession opens and seals envelopes.
 * Order of checks (§9.1): size, registry, parse, MAC, counter (durable),
 * and only then any public-key operation.
 */
import { constantTimeEqual, toHex, zeroize } from '../core/bytes.js';
import { MqsecError, asMqsecError, fail } from '../core/errors.js';
import type { Clock, Log } from '../core/platform.js';
import { silentLog } from '../core/platform.js';
import type { CryptoSuite } from '../crypto/suite.js';
import {
  BROKER_NONCE_LENGTH,
  DEFAULT_MAX_PASSWORD_BYTES,
  DEFAULT_REPLAY_WINDOW,
  DEV_ID_MAX_BYTES,
  KX_TOPIC,
  TICKET_COUNTER_SPAN,
} from './constants.js';
import { ChannelReceiver } from './group.js';
import { RxState, TxState, type RxSnapshot } from './envelope.js';
import {
  chainAdvance,
  chainNext,
  counterHintTag,
  deriveDeviceKeys,
  type DeviceKeys,
  derivePhase1Secrets,
  kx1Tag,
  kx2Tag,
  kx3Tag,
  resumeConfirmTag,
  resumeTag,
  resumeTrafficSecret,
  trafficKeys,
  transcriptHash,
  type TrafficKeys,
} from './key-schedule.js';
import {
  buildCounterHint,
  buildCounterHintBody,
  buildKx2,
  buildKx2Body,
  buildResumeConfirm,
  buildResumeConfirmBody,
  parseEnvelope,
  parseKx3,
  parsePassword,
} from './messages.js';
import type { TicketStore } from './ticket-store.js';

/**
 * What the broker knows of a device: its principal key K, or only K_auth and
 * K_psk (§4.1) already derived from it. A broker whose registry is split
 * from the key service (§14.2) gives `keys` and never holds K. Either way the
 * handshake wipes what it is given once used, so hand it a fresh copy.
 */
export type DeviceRecord =
  | { deviceKey: Uint8Array; keys?: undefined; status: 'active' | 'revoked' | 'disabled' }
  | { keys: DeviceKeys; deviceKey?: undefined; status: 'active' | 'revoked' | 'disabled' };

export interface ServerHandshakeOptions {
  suite: CryptoSuite;
  /** Wall clock (ms): ticket expiry survives broker restarts. */
  clock: Clock;
  lookupDevice(devId: string): DeviceRecord | undefined | Promise<DeviceRecord | undefined>;
  ticketStore: import('./ticket-store.js').TicketStore;
  ticketLifetimeMs?: number;
  graceMs?: number;
  replayWindow?: number;
  maxPasswordBytes?: number;
  maxResumeSkip?: number;
  /** Sessions remembered for the previous-epoch grace (§8.5), oldest forgotten first. */
  maxTrackedDevices?: number;
  log?: Log;
}

/**
 * §10: the CONNACK return code a broker sends when acceptConnect throws.
 * Transient broker trouble is "server unavailable" (3): the device keeps its
 * ticket and retries. Everything else is "bad user name or password" (4) or
 * "not authorised" (5): a device in phase 2 then forgets its ticket and runs
 * phase 1. The code never says which check failed.
 */
export function connackCodeFor(error: unknown): 3 | 4 | 5 {
  const code = error instanceof MqsecError ? error.code : 'INTERNAL';
  if (code === 'STORAGE' || code === 'INTERNAL' || code === 'RATE_LIMITED') return 3;
  if (code === 'REVOKED' || code === 'NOT_AUTHORIZED') return 5;
  return 4;
}

export const DEFAULT_TICKET_LIFETIME_MS = 7 * 24 * 3600 * 1000;
export const DEFAULT_GRACE_MS = 120_000;
export const DEFAULT_MAX_RESUME_SKIP = 65_536;

/** Phase 1 state between KX1 and KX3 (§9.2). Opaque to the broker. */
export class PendingPhase1 {
  private spent = false;
  constructor(
    readonly devId: string,
    readonly counter: number,
    private readonly th: Uint8Array,
    private readonly secrets: ReturnType<typeof derivePhase1Secrets>,
    readonly createdAt: number,
  ) {}
  /** One KX3 attempt per pending handshake: a wrong tag kills it. */
  take(): { th: Uint8Array; secrets: ReturnType<typeof derivePhase1Secrets> } {
    if (this.spent) fail('BAD_STATE', 'phase 1 already completed or failed');
    this.spent = true;
    return { th: this.th, secrets: this.secrets };
  }
  get done(): boolean {
    return this.spent;
  }
  discard(): void {
    if (!this.spent) {
      this.spent = true;
      const s = this.secrets;
      zeroize(s.confirmDeviceKey, s.confirmServerKey, s.ticketAuthKey, s.chainKey, s.trafficSecret);
    }
  }
}

export type AcceptResult =
  | { kind: 'phase1'; pending: PendingPhase1; reply: { topic: string; payload: Uint8Array } }
  /** `reply` is the resume confirmation (§6.4): send it right after CONNACK 0. */
  | { kind: 'phase2'; session: ServerSession; reply: { topic: string; payload: Uint8Array } }
  /**
   * §5.5: a KX1 with a valid MAC and a used counter. Answer CONNACK 0, send
   * `reply` (the counter hint), then close; the connection gets no session
   * and MUST NOT disturb a live session of the device.
   */
  | { kind: 'counter-hint'; devId: string; reply: { topic: string; payload: Uint8Array } }
  | { kind: 'not-mqsec' };

interface Grace {
  rx: RxState;
  until: number;
}

/**
 * §8.5 grace state written down by a broker that stops gracefully: the
 * receive keys and replay window of each device's last connection, and the
 * broker-clock time its grace period ends. Secret: seal it at rest.
 */
export interface GraceRecord {
  devId: string;
  until: number;
  rx: RxSnapshot;
}

/** A device's last connection as restored after a broker restart: receive keys only, for the grace period. */
class RestoredSession {
  constructor(
    readonly rx: RxState,
    readonly until: number,
  ) {}
  dropPrevious(): void {}
}

/** One authenticated connection's keys (§8), plus the previous connection's receive keys for a grace period (§8.5). */
export class ServerSession {
  readonly sidHex: string;
  private closed = false;
  /** @internal read by ServerHandshake to hand the receive keys to the next session. */
  readonly rx: RxState;
  private readonly tx: TxState;
  private readonly channel: ChannelReceiver;
  constructor(
    readonly devId: string,
    readonly sid: Uint8Array,
    readonly phase: 1 | 2,
    readonly epoch: number,
    keys: TrafficKeys,
    suite: CryptoSuite,
    windowSize: number,
    private readonly clock: Clock,
    private previous: Grace | undefined,
  ) {
    this.sidHex = toHex(sid);
    this.rx = new RxState(suite, epoch, keys.deviceToBrokerKey, keys.deviceToBrokerIv, windowSize);
    this.tx = new TxState(suite, epoch, keys.brokerToDeviceKey, keys.brokerToDeviceIv);
    this.channel = new ChannelReceiver(suite, keys.channelKey);
  }

  /**
   * §14.5: an end-to-end topic's PUBLISH: checks the channel MAC of this
   * connection and returns the group envelope untouched (a view). No AEAD.
   * Throws TRUNCATED, BAD_MAC (forged, replayed or re-ordered trailer).
   */
  unwrapChannel(topic: string, payload: Uint8Array): Uint8Array {
    if (this.closed) fail('BAD_STATE', 'session closed');
    return this.channel.unwrap(topic, payload);
  }

  /** §8.4/§8.5: opens an envelope the device sent; throws DECRYPT_FAILED, REPLAY, MALFORMED, UNKNOWN_SESSION. */
  open(topic: string, envelope: Uint8Array): Uint8Array {
    const epoch = parseEnvelope(envelope).epoch;
    const prev = this.previous && this.clock.now() < this.previous.until ? this.previous : undefined;
    if (!prev && this.previous) {
      this.previous = undefined; // grace over
    }
    if (epoch === this.epoch) {
      try {
        return this.rx.open(topic, envelope);
      } catch (e) {
        if (!(prev && prev.rx.epoch === epoch && asMqsecError(e).code === 'DECRYPT_FAILED')) throw e;
      }
    }
    if (prev && prev.rx.epoch === epoch) return prev.rx.open(topic, envelope);
    fail('UNKNOWN_SESSION', 'no keys for this epoch');
  }

  /** §8.3: seals for this device. NONCE_EXHAUSTED means: disconnect the client so it reconnects with fresh keys. */
  seal(topic: string, plaintext: Uint8Array): Uint8Array {
    if (this.closed) fail('BAD_STATE', 'session closed');
    return this.tx.seal(topic, plaintext);
  }

  /** Send keys are destroyed; receive keys live on for the next session's grace period. */
  close(): void {
    this.closed = true;
    this.tx.destroy();
    this.channel.destroy();
  }

  /** @internal */
  dropPrevious(): void {
    this.previous = undefined;
  }
}

export class ServerHandshake {
  private readonly suite: CryptoSuite;
  private readonly clock: Clock;
  private readonly store: TicketStore;
  private readonly log: Log;
  private readonly ticketLifetimeMs: number;
  private readonly graceMs: number;
  private readonly windowSize: number;
  private readonly maxPasswordBytes: number;
  private readonly maxResumeSkip: number;
  private readonly maxTracked: number;
  private readonly lookupDevice: ServerHandshakeOptions['lookupDevice'];
  /**
   * Latest session per device, for the previous-epoch grace (§8.5). In memory;
   * a broker that stops gracefully writes it down (exportGrace) and reads it
   * back at start (importGrace), so a restart is just another reconnect.
   */
  private readonly latest = new Map<string, ServerSession | RestoredSession>();

  constructor(opts: ServerHandshakeOptions) {
    this.suite = opts.suite;
    this.clock = opts.clock;
    this.store = opts.ticketStore;
    this.lookupDevice = opts.lookupDevice;
    this.log = opts.log ?? silentLog;
    this.ticketLifetimeMs = opts.ticketLifetimeMs ?? DEFAULT_TICKET_LIFETIME_MS;
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    this.windowSize = opts.replayWindow ?? DEFAULT_REPLAY_WINDOW;
    this.maxPasswordBytes = opts.maxPasswordBytes ?? DEFAULT_MAX_PASSWORD_BYTES;
    this.maxResumeSkip = opts.maxResumeSkip ?? DEFAULT_MAX_RESUME_SKIP;
    this.maxTracked = opts.maxTrackedDevices ?? 100_000;
  }

  /** §9.1: authenticate a CONNECT. See firmware/secure/README.md for the error codes. */
  async acceptConnect(clientId: string, username: string | undefined, password: Uint8Array | string | undefined | null): Promise<AcceptResult> {
    if (typeof clientId !== 'string' || clientId.length === 0 || clientId.length > DEV_ID_MAX_BYTES) return { kind: 'not-mqsec' };
    const dev = await this.lookupDevice(clientId);
    if (!dev) return { kind: 'not-mqsec' };
    if (dev.status === 'revoked') fail('REVOKED', 'device revoked');
    if (dev.status !== 'active') fail('NOT_AUTHORIZED', 'device disabled');
    const p = parsePassword(password, this.maxPasswordBytes);
    if (username !== clientId) fail('NOT_AUTHORIZED', 'username must equal the client id');
    if (p.type === 'kx1') return this.acceptKx1(clientId, dev, p);
    return this.acceptResume(clientId, p);
  }

  private async acceptKx1(devId: string, dev: DeviceRecord, p: Extract<ReturnType<typeof parsePassword>, { type: 'kx1' }>): Promise<AcceptResult> {
    if (p.suite !== this.suite.id) fail('BAD_SUITE', `suite ${p.suite}`);
    const keys = dev.keys ?? deriveDeviceKeys(this.suite, dev.deviceKey, devId);
    try {
      // §5.2 step 1: the cheap MAC first, so a forged CONNECT costs one HMAC and no public-key operation.
      if (!constantTimeEqual(kx1Tag(this.suite, keys.authKey, devId, p.body), p.tag)) fail('BAD_MAC', 'KX1 tag');
      // §5.2 step 2: the counter makes every KX1 single-use, forever: a replay is refused before the DH.
      try {
        await this.advanceCounterOrFail(devId, p.counter, true);
      } catch (e) {
        if (!(e instanceof MqsecError && e.code === 'REPLAY')) throw e;
        // §5.5: a genuine KX1 (its MAC verified) from a device that lost its counter, or a replay:
        // tell the sender where the counter stands, under K_auth and bound to this KX1.
        return { kind: 'counter-hint', devId, reply: { topic: KX_TOPIC, payload: await this.counterHint(devId, keys.authKey, p.bytes) } };
      }
      // §5.2 step 3: now the X25519 work.
      const kp = this.suite.dhKeyPair();
      const z = this.suite.dh(kp.privateKey, p.ephemeralPublic);
      kp.privateKey.fill(0);
      const body = buildKx2Body(kp.publicKey);
      const th = transcriptHash(this.suite, devId, p.bytes, body);
      const secrets = derivePhase1Secrets(this.suite, keys.pskKey, z, th);
      z.fill(0);
      const payload = buildKx2(body, kx2Tag(this.suite, secrets.confirmServerKey, th));
      const pending = new PendingPhase1(devId, p.counter, th, secrets, this.clock.now());
      return { kind: 'phase1', pending, reply: { topic: KX_TOPIC, payload } };
    } finally {
      zeroize(keys.authKey, keys.pskKey);
    }
  }

  /** §5.5: HINT = 0x18 | varint(highest accepted counter) | T16(HMAC(K_auth, "mqsec v1 hint" | devId | KX1 | body)). */
  private async counterHint(devId: string, authKey: Uint8Array, kx1: Uint8Array): Promise<Uint8Array> {
    let highest: number;
    try {
      highest = await this.store.getCounter(devId);
    } catch (e) {
      throw new MqsecError('STORAGE', `counter store: ${asMqsecError(e).message}`);
    }
    const body = buildCounterHintBody(highest);
    return buildCounterHint(body, counterHintTag(this.suite, authKey, devId, kx1, body));
  }

  /**
   * §5.2 step 2 / §6.2 step 3. For a resume, `chainIndex` is the ticket's
   * chain position: the counter must not be behind it, nor so far ahead that
   * walking the chain would be a denial of service.
   */
  private async advanceCounterOrFail(devId: string, counter: number, phase1: boolean, chainIndex = 0): Promise<void> {
    let cur: number;
    let ok: boolean;
    try {
      cur = await this.store.getCounter(devId);
      if (counter <= cur) {
        if (phase1 || counter === cur) fail('REPLAY', 'counter already used');
        fail('COUNTER_ROLLBACK', 'counter below the highest accepted');
      }
      if (!phase1 && counter < chainIndex) fail('COUNTER_ROLLBACK', 'counter behind the ticket');
      if (!phase1 && counter - chainIndex > this.maxResumeSkip) fail('EXPIRED', 'ticket too far behind the counter');
      ok = await this.store.advanceCounter(devId, counter);
    } catch (e) {
      if (e instanceof MqsecError && e.code !== 'STORAGE' && e.code !== 'INTERNAL') throw e;
      throw new MqsecError('STORAGE', `counter store: ${asMqsecError(e).message}`);
    }
    // A concurrent CONNECT with the same or a higher counter won the race.
    if (!ok) fail('REPLAY', 'counter already used');
  }

  private async acceptResume(devId: string, p: Extract<ReturnType<typeof parsePassword>, { type: 'resume' }>): Promise<AcceptResult> {
    let t;
    try {
      t = await this.store.getTicket(devId, p.sid);
    } catch (e) {
      throw new MqsecError('STORAGE', `ticket store: ${asMqsecError(e).message}`);
    }
    if (!t || t.suite !== this.suite.id) fail('UNKNOWN_SESSION', 'no such ticket');
    try {
      // §6.2 step 1: MAC under the ticket's static K_tok: forged tokens cost one HMAC, no chain walk, no write.
      if (!constantTimeEqual(resumeTag(this.suite, t.authKey, devId, p.body), p.tag)) fail('BAD_MAC', 'resume tag');
      // §6.2 step 2: expiry by the broker's clock only (the device has none).
      if (this.clock.now() >= t.expiresAt) {
        await this.store.deleteTicket(devId, p.sid).catch(() => undefined);
        fail('EXPIRED', 'ticket expired');
      }
      // §6.5: a ticket serves TICKET_COUNTER_SPAN counters from its start; then the device runs phase 1.
      if (p.counter >= t.chainStart + TICKET_COUNTER_SPAN) {
        await this.store.deleteTicket(devId, p.sid).catch(() => undefined);
        fail('EXPIRED', 'ticket used up its counter span');
      }
      // §6.2 step 3: strictly increasing counter, durable before CONNACK.
      await this.advanceCounterOrFail(devId, p.counter, false, t.chainIndex);
      // §6.3: S_c; store S_{c+1}: the store never holds a key of a used connection.
      const sc = chainAdvance(this.suite, t.chainIndex, t.chainKey, p.counter);
      // §6.4: a fresh broker nonce in the keys: even a RESUME accepted twice (broker state rolled back
      // by a restore) gets keys nobody has used, and the confirmation proves the broker holds them.
      const brokerNonce = this.suite.randomBytes(BROKER_NONCE_LENGTH);
      const secret = resumeTrafficSecret(this.suite, sc, brokerNonce);
      const confirmBody = buildResumeConfirmBody(brokerNonce);
      const confirm = buildResumeConfirm(confirmBody, resumeConfirmTag(this.suite, secret, confirmBody));
      const next = chainNext(this.suite, sc);
      sc.fill(0);
      try {
        await this.store.putTicket({ ...t, chainIndex: p.counter + 1, chainKey: next });
      } catch (e) {
        // The stored (index, key) pair is still consistent; only forward secrecy lags (§6.6).
        this.log.warn('mqsec: ticket chain not advanced', { devId, code: asMqsecError(e).code });
      }
      zeroize(next);
      const keys = trafficKeys(this.suite, secret);
      secret.fill(0);
      const session = this.newSession(devId, p.sid.slice(), 2, p.counter, keys);
      return { kind: 'phase2', session, reply: { topic: KX_TOPIC, payload: confirm } };
    } finally {
      zeroize(t.authKey, t.chainKey);
    }
  }

  /** §5.4: KX3 from the client of `pending`. Stores the ticket and returns the session. */
  async completePhase1(pending: PendingPhase1, kx3: Uint8Array): Promise<ServerSession> {
    const { th, secrets: s } = pending.take();
    try {
      const { tag } = parseKx3(kx3);
      if (!constantTimeEqual(kx3Tag(this.suite, s.confirmDeviceKey, th), tag)) fail('BAD_MAC', 'KX3 tag');
      try {
        await this.store.putTicket({
          devId: pending.devId,
          sid: s.sid.slice(),
          suite: this.suite.id,
          authKey: s.ticketAuthKey.slice(),
          chainStart: pending.counter + 1,
          chainIndex: pending.counter + 1,
          chainKey: s.chainKey.slice(),
          expiresAt: this.clock.now() + this.ticketLifetimeMs,
        });
      } catch (e) {
        // Without a stored ticket the device's next resume gets UNKNOWN_SESSION and runs phase 1 (§7.1).
        this.log.warn('mqsec: ticket not stored', { devId: pending.devId, code: asMqsecError(e).code });
      }
      return this.newSession(pending.devId, s.sid.slice(), 1, pending.counter, trafficKeys(this.suite, s.trafficSecret));
    } finally {
      zeroize(s.confirmDeviceKey, s.confirmServerKey, s.ticketAuthKey, s.chainKey, s.trafficSecret);
    }
  }

  private newSession(devId: string, sid: Uint8Array, phase: 1 | 2, counter: number, keys: TrafficKeys): ServerSession {
    const old = this.latest.get(devId);
    const now = this.clock.now();
    let grace: Grace | undefined;
    if (old && this.graceMs > 0) {
      const until = this.graceUntil(old, now);
      if (now < until) grace = { rx: old.rx, until };
    }
    old?.dropPrevious();
    const session = new ServerSession(devId, sid, phase, counter & 0xff, keys, this.suite, this.windowSize, this.clock, grace);
    this.latest.delete(devId);
    this.latest.set(devId, session);
    if (this.latest.size > this.maxTracked) {
      const oldest = this.latest.keys().next().value as string;
      this.latest.delete(oldest);
    }
    return session;
  }

  /**
   * §8.5 across a graceful broker restart: each device's last connection's
   * receive state, with the end of its grace period (counted from now: the
   * broker is stopping, so every connection ends now). Call after the
   * connections are closed and nothing more will be opened.
   */
  exportGrace(): GraceRecord[] {
    const now = this.clock.now();
    const out: GraceRecord[] = [];
    if (this.graceMs <= 0) return out;
    for (const [devId, s] of this.latest) {
      const until = this.graceUntil(s, now);
      if (until > now) out.push({ devId, until, rx: s.rx.snapshot() });
    }
    return out;
  }

  /** End of the grace a device's last connection gets once superseded at `now`: a restored one's started when the broker stopped. */
  private graceUntil(s: ServerSession | RestoredSession, now: number): number {
    return s instanceof RestoredSession ? s.until : now + this.graceMs;
  }

  /** Reads back what exportGrace wrote at the last graceful stop; expired or malformed records are skipped. Returns how many were restored. */
  importGrace(records: GraceRecord[]): number {
    const now = this.clock.now();
    let restored = 0;
    for (const r of records) {
      if (!(r.until > now) || this.latest.has(r.devId)) continue;
      try {
        this.latest.set(r.devId, new RestoredSession(RxState.restore(this.suite, r.rx), r.until));
        restored++;
      } catch (e) {
        this.log.warn('mqsec: grace record skipped', { devId: r.devId, code: asMqsecError(e).code });
      }
    }
    return restored;
  }

  /** Revocation helper: kills the device's tickets and forgets its grace keys. The broker also disconnects it. */
  async revokeDevice(devId: string): Promise<void> {
    await this.store.revokeDevice(devId);
    this.forgetGrace(devId);
  }

  /**
   * §8.5 / §9.3: forgets every receive key kept for the device's grace (its
   * last connection's, and the previous one that connection still holds), so
   * nothing sealed under keys of a revoked or re-keyed device opens in a later
   * session. The tickets are the store's business (revokeDevice).
   */
  forgetGrace(devId: string): void {
    this.latest.get(devId)?.dropPrevious();
    this.latest.delete(devId);
  }
}
