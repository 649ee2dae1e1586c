/**
 * Device side of the two-phase protocol (docs/protocol.md §5, §6, §7) as a
 * small state machine with explicit states:
 *
 *   idle --connectCredentials--> awaiting-connack --CONNACK 0, phase 2--> awaiting-confirm
 *                                       | CONNACK 0, phase 1                    | valid RC (§6.4)
 *                                       v                                       v
 *                                 awaiting-kx2 --valid KX2 (reply KX3)-------> ready
 *                                       | valid counter hint (§5.5): counter jumps past it
 *                                       v
 *                                     idle
 *   any --onConnectionLost--> idle          (keys of the lost connection become "previous")
 */
import { ByteReader, concatBytes, constantTimeEqual, u48be, zeroize } from '../core/bytes.js';
import { MqsecError, asMqsecError, fail } from '../core/errors.js';
import type { Clock, Log, Storage } from '../core/platform.js';
import { silentLog } from '../core/platform.js';
import type { CryptoSuite, KeyPair } from '../crypto/suite.js';
import { COUNTER_MAX, KX_TOPIC, MSG_COUNTER_HINT, MSG_RESUME_CONFIRM, SID_LENGTH, TICKET_COUNTER_SPAN } from './constants.js';
import { RxState, TxState } from './envelope.js';
import { ChannelSender } from './group.js';
import {
  chainAdvance,
  chainNext,
  counterHintTag,
  deriveDeviceKeys,
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
  buildKx1,
  buildKx1Body,
  buildKx3,
  buildResume,
  buildResumeBody,
  handshakeType,
  parseCounterHint,
  parseEnvelope,
  parseKx2,
  parseResumeConfirm,
} from './messages.js';

export interface DeviceSessionOptions {
  suite: CryptoSuite;
  devId: string;
  deviceKey: Uint8Array;
  storage: Storage;
  clock?: Clock;
  log?: Log;
  /** Counter values reserved per storage write (§7.2). */
  counterBlock?: number;
  storageKey?: string;
  /** Envelope replay window (§8.4). */
  replayWindow?: number;
}

export type DeviceState = 'idle' | 'awaiting-connack' | 'awaiting-kx2' | 'awaiting-confirm' | 'ready';

export interface ConnectCredentials {
  clientId: string;
  username: string;
  password: Uint8Array;
  phase: 1 | 2;
}

export type IncomingResult =
  | { kind: 'handshake'; reply: { topic: string; payload: Uint8Array } }
  /** Phase 2: the broker's confirmation verified (§6.4); the session is ready. */
  | { kind: 'confirmed' }
  /** Phase 1 refused for a used counter (§5.5): the counter now starts past `counter`; reconnect. */
  | { kind: 'counter-hint'; counter: number }
  | { kind: 'message'; topic: string; payload: Uint8Array }
  | { kind: 'dropped'; topic: string; error: MqsecError };

/** The device's copy of a ticket (§7.3). chainKey = S_chainIndex. */
export interface DeviceTicket {
  suite: number;
  sid: Uint8Array;
  authKey: Uint8Array;
  /** First counter the ticket serves (phase-1 counter + 1); it serves TICKET_COUNTER_SPAN values (§6.5). */
  chainStart: number;
  chainIndex: number;
  chainKey: Uint8Array;
}

const RECORD_VERSION = 2;
/** Record of the first release (8-byte sid, no chainStart): its counter is kept, its ticket is not. */
const RECORD_VERSION_1 = 1;
const OLD_TX_KEPT = 4;

/** §7.3 storage record: ver | counterLimit u48 | hasTicket | [suite | sid | K_tok | chainStart u48 | chainIndex u48 | S]. */
export function encodeDeviceRecord(counterLimit: number, ticket: DeviceTicket | undefined): Uint8Array {
  const head = concatBytes(new Uint8Array([RECORD_VERSION]), u48be(counterLimit), new Uint8Array([ticket ? 1 : 0]));
  if (!ticket) return head;
  return concatBytes(
    head,
    new Uint8Array([ticket.suite]),
    ticket.sid,
    ticket.authKey,
    u48be(ticket.chainStart),
    u48be(ticket.chainIndex),
    ticket.chainKey,
  );
}

export function decodeDeviceRecord(b: Uint8Array): { counterLimit: number; ticket?: DeviceTicket } {
  const r = new ByteReader(b);
  const version = r.u8();
  if (version === RECORD_VERSION_1) {
    // §7.3: an older record's counter still counts (never reuse a value); its ticket is dropped: phase 1 next.
    const counterLimit = r.u48();
    const has = r.u8();
    if (has === 0) r.end();
    else if (has !== 1 || r.remaining !== 1 + 8 + 32 + 6 + 32) fail('STORAGE', 'bad version 1 record');
    return { counterLimit };
  }
  if (version !== RECORD_VERSION) fail('STORAGE', 'unknown record version');
  const counterLimit = r.u48();
  const has = r.u8();
  if (has === 0) {
    r.end();
    return { counterLimit };
  }
  if (has !== 1) fail('STORAGE', 'bad ticket flag');
  const suite = r.u8();
  const sid = r.bytes(SID_LENGTH).slice();
  const authKey = r.bytes(32).slice();
  const chainStart = r.u48();
  const chainIndex = r.u48();
  const chainKey = r.bytes(32).slice();
  r.end();
  if (chainIndex > counterLimit || chainIndex < chainStart) fail('STORAGE', 'ticket chain index out of place');
  return { counterLimit, ticket: { suite, sid, authKey, chainStart, chainIndex, chainKey } };
}

interface PendingPhase1 {
  phase: 1;
  counter: number;
  keyPair: KeyPair;
  kx1: Uint8Array;
}

interface PendingPhase2 {
  phase: 2;
  counter: number;
  /** S_c: the traffic secret needs the broker nonce of the confirmation (§6.4). */
  chainKey: Uint8Array;
}

interface Connection {
  epoch: number;
  tx: TxState;
  rx: RxState;
  channel: ChannelSender;
}

export class DeviceSecureSession {
  readonly devId: string;
  private readonly suite: CryptoSuite;
  private readonly storage: Storage;
  private readonly log: Log;
  private readonly counterBlock: number;
  private readonly storageKey: string;
  private readonly replayWindow: number;
  private readonly authKey: Uint8Array;
  private readonly pskKey: Uint8Array;

  private _state: DeviceState = 'idle';
  private _phase: 0 | 1 | 2 = 0;
  private loaded = false;
  private destroyed = false;
  private counterNext = 0;
  private counterLimit = 0;
  private ticket: DeviceTicket | undefined;
  private pending: PendingPhase1 | PendingPhase2 | undefined;
  private current: Connection | undefined;
  private previousRx: RxState | undefined;
  /** Send keys of earlier connections, only to re-open our own queued QoS 1 envelopes (§8.5). */
  private oldTx: TxState[] = [];

  constructor(opts: DeviceSessionOptions) {
    this.suite = opts.suite;
    this.devId = opts.devId;
    this.storage = opts.storage;
    this.log = opts.log ?? silentLog;
    this.counterBlock = opts.counterBlock ?? 32;
    this.storageKey = opts.storageKey ?? 'mqsec.state';
    this.replayWindow = opts.replayWindow ?? 64;
    if (!Number.isInteger(this.counterBlock) || this.counterBlock < 1) fail('INTERNAL', 'counterBlock must be >= 1');
    if (this.storageKey.length > 15) fail('INTERNAL', 'storage key longer than 15 characters');
    // §4.1: K_dev is used once, here; only the derived keys are kept.
    const k = deriveDeviceKeys(this.suite, opts.deviceKey, this.devId);
    this.authKey = k.authKey;
    this.pskKey = k.pskKey;
  }

  get state(): DeviceState {
    return this._state;
  }
  get phase(): 0 | 1 | 2 {
    return this._phase;
  }
  get epoch(): number {
    return this.current ? this.current.epoch : -1;
  }
  get hasTicket(): boolean {
    return this.ticket !== undefined;
  }
  get sid(): Uint8Array | undefined {
    return this.ticket?.sid.slice();
  }

  private async load(): Promise<void> {
    if (this.loaded) return;
    let raw: Uint8Array | undefined;
    try {
      raw = await this.storage.get(this.storageKey);
    } catch (e) {
      throw new MqsecError('STORAGE', `cannot read state: ${asMqsecError(e).message}`);
    }
    if (raw) {
      let rec: { counterLimit: number; ticket?: DeviceTicket };
      try {
        rec = decodeDeviceRecord(raw);
      } catch (e) {
        // A record we cannot read must never let a counter go backwards: refuse rather than restart at 0.
        throw new MqsecError('STORAGE', `unreadable state record: ${asMqsecError(e).message}`);
      }
      // §7.2: values below the stored limit may have been used before the reboot: skip them all.
      this.counterLimit = rec.counterLimit;
      this.counterNext = rec.counterLimit;
      this.ticket = rec.ticket && rec.ticket.suite === this.suite.id ? rec.ticket : undefined;
    }
    this.loaded = true;
  }

  private async persist(counterLimit: number, ticket: DeviceTicket | undefined): Promise<void> {
    try {
      await this.storage.put(this.storageKey, encodeDeviceRecord(counterLimit, ticket));
    } catch (e) {
      throw new MqsecError('STORAGE', `cannot write state: ${asMqsecError(e).message}`);
    }
  }

  /** §7.2: returns a counter value that is durably reserved, writing storage once per block. */
  private async reserveCounter(): Promise<number> {
    if (this.counterNext >= this.counterLimit) {
      const limit = this.counterNext + this.counterBlock;
      if (this.counterNext > COUNTER_MAX) fail('NONCE_EXHAUSTED', 'device counter exhausted: re-provision');
      // The stored chain key moves to the block start so flash never holds a key of an older block (§7.3).
      if (this.ticket && this.ticket.chainIndex < this.counterNext) this.advanceTicketChain(this.counterNext);
      await this.persist(limit, this.ticket);
      this.counterLimit = limit;
    }
    return this.counterNext++;
  }

  private advanceTicketChain(target: number): void {
    const t = this.ticket!;
    const k = chainAdvance(this.suite, t.chainIndex, t.chainKey, target);
    t.chainKey.fill(0);
    t.chainKey = k;
    t.chainIndex = target;
  }

  /** §7.1: credentials for the next CONNECT; phase 2 when a ticket is held, else phase 1. */
  async connectCredentials(): Promise<ConnectCredentials> {
    if (this.destroyed) fail('BAD_STATE', 'session destroyed');
    if (this._state !== 'idle') this.onConnectionLost();
    await this.load();
    // §6.5: a ticket serves a bounded counter span; past it, a fresh phase 1 (the next write drops it from flash too).
    if (this.ticket && this.counterNext >= this.ticket.chainStart + TICKET_COUNTER_SPAN) this.dropTicketInRam();
    const counter = await this.reserveCounter();
    if (this.ticket) {
      // §6.1 / §6.3: S_c from the chain; the chain ratchets past c in RAM at once. Keys wait for the broker nonce (§6.4).
      this.advanceTicketChain(counter);
      const t = this.ticket;
      const body = buildResumeBody(t.sid, counter);
      const password = buildResume(body, resumeTag(this.suite, t.authKey, this.devId, body));
      const sc = t.chainKey;
      t.chainKey = chainNext(this.suite, sc);
      t.chainIndex = counter + 1;
      this.pending = { phase: 2, counter, chainKey: sc };
      this._state = 'awaiting-connack';
      this._phase = 2;
      return { clientId: this.devId, username: this.devId, password, phase: 2 };
    }
    // §5.1: a fresh ephemeral per attempt; X_d doubles as the device nonce.
    const keyPair = this.suite.dhKeyPair();
    const body = buildKx1Body(this.suite.id, counter, keyPair.publicKey);
    const kx1 = buildKx1(body, kx1Tag(this.suite, this.authKey, this.devId, body));
    this.pending = { phase: 1, counter, keyPair, kx1 };
    this._state = 'awaiting-connack';
    this._phase = 1;
    return { clientId: this.devId, username: this.devId, password: kx1, phase: 1 };
  }

  /** §7.1: CONNACK return code of the connection opened with the last credentials. */
  async onConnack(returnCode: number): Promise<void> {
    if (this._state !== 'awaiting-connack' || !this.pending) {
      this.log.warn('mqsec: CONNACK in unexpected state', { state: this._state });
      return;
    }
    const p = this.pending;
    if (returnCode !== 0) {
      this.clearPending();
      this._state = 'idle';
      // §7.1: 4 (bad user name or password) / 5 (not authorised) mean the ticket is unknown, expired
      // or revoked: fall back to phase 1. Other codes (server unavailable) keep it.
      if (p.phase === 2 && (returnCode === 4 || returnCode === 5)) {
        try {
          await this.forgetTicket();
        } catch (e) {
          // RAM already forgot it; if flash still has it, the next boot is refused once more and retries this.
          this.log.warn('mqsec: could not persist ticket removal', { code: asMqsecError(e).code });
        }
      }
      return;
    }
    // §6.4: a CONNACK is not authenticated: in phase 2 nothing is sealed before the broker's confirmation.
    this._state = p.phase === 2 ? 'awaiting-confirm' : 'awaiting-kx2';
  }

  private install(counter: number, keys: TrafficKeys): void {
    const epoch = counter & 0xff;
    this.current = {
      epoch,
      tx: new TxState(this.suite, epoch, keys.deviceToBrokerKey, keys.deviceToBrokerIv),
      rx: new RxState(this.suite, epoch, keys.brokerToDeviceKey, keys.brokerToDeviceIv, this.replayWindow),
      channel: new ChannelSender(this.suite, keys.channelKey),
    };
  }

  private clearPending(): void {
    const p = this.pending;
    if (p && p.phase === 1) zeroize(p.keyPair.privateKey);
    if (p && p.phase === 2) zeroize(p.chainKey);
    this.pending = undefined;
  }

  /** Every received PUBLISH. Never throws: bad input comes back as { kind: 'dropped' }. */
  async handleIncoming(topic: string, payload: Uint8Array): Promise<IncomingResult> {
    try {
      if (topic === KX_TOPIC) {
        const type = handshakeType(payload);
        if (type === MSG_RESUME_CONFIRM) return this.handleResumeConfirm(payload);
        if (type === MSG_COUNTER_HINT) return await this.handleCounterHint(payload);
        return await this.handleKx2(payload);
      }
      return { kind: 'message', topic, payload: this.openEnvelope(topic, payload) };
    } catch (e) {
      const error = asMqsecError(e);
      this.log.warn('mqsec: dropped incoming message', { topic, code: error.code });
      return { kind: 'dropped', topic, error };
    }
  }

  /** §6.4 (device side): the broker proves it holds S_c and gives its nonce; only now are there keys. */
  private handleResumeConfirm(payload: Uint8Array): IncomingResult {
    const p = this.pending;
    if (this._state !== 'awaiting-confirm' || !p || p.phase !== 2) fail('BAD_STATE', 'resume confirmation not expected now');
    const rc = parseResumeConfirm(payload);
    const secret = resumeTrafficSecret(this.suite, p.chainKey, rc.brokerNonce);
    if (!constantTimeEqual(resumeConfirmTag(this.suite, secret, rc.body), rc.tag)) {
      secret.fill(0);
      fail('BAD_MAC', 'resume confirmation tag');
    }
    this.clearPending();
    this.install(p.counter, trafficKeys(this.suite, secret));
    secret.fill(0);
    this._state = 'ready';
    return { kind: 'confirmed' };
  }

  /**
   * §5.5 (device side): the broker refused our KX1's counter as used and says
   * which counter it has seen. The tag is under K_auth and bound to this
   * KX1 (its fresh X_d), so only the broker can send it and only now; the
   * counter only ever moves forward, never back.
   */
  private async handleCounterHint(payload: Uint8Array): Promise<IncomingResult> {
    const p = this.pending;
    if (this._state !== 'awaiting-kx2' || !p || p.phase !== 1) fail('BAD_STATE', 'counter hint not expected now');
    const hint = parseCounterHint(payload);
    if (!constantTimeEqual(counterHintTag(this.suite, this.authKey, this.devId, p.kx1, hint.body), hint.tag)) fail('BAD_MAC', 'counter hint tag');
    this.clearPending();
    this._state = 'idle';
    if (hint.counter >= COUNTER_MAX) fail('NONCE_EXHAUSTED', 'device counter exhausted: re-provision');
    // The next reserveCounter() persists a block past the hint before any value of it is used (§7.2).
    if (hint.counter + 1 > this.counterNext) this.counterNext = hint.counter + 1;
    this.log.warn('mqsec: counter was behind the broker; jumped past it', { counter: this.counterNext });
    return { kind: 'counter-hint', counter: hint.counter };
  }

  /** §5.3 (device side): verify KX2, derive keys, store the ticket, answer KX3. */
  private async handleKx2(payload: Uint8Array): Promise<IncomingResult> {
    const p = this.pending;
    if (this._state !== 'awaiting-kx2' || !p || p.phase !== 1) fail('BAD_STATE', 'KX2 not expected now');
    const kx2 = parseKx2(payload);
    const z = this.suite.dh(p.keyPair.privateKey, kx2.ephemeralPublic);
    const th = transcriptHash(this.suite, this.devId, p.kx1, kx2.body);
    const s = derivePhase1Secrets(this.suite, this.pskKey, z, th);
    z.fill(0);
    if (!constantTimeEqual(kx2Tag(this.suite, s.confirmServerKey, th), kx2.tag)) {
      zeroize(s.confirmServerKey, s.confirmDeviceKey, s.ticketAuthKey, s.chainKey, s.trafficSecret);
      fail('BAD_MAC', 'KX2 tag');
    }
    // From here the broker is authenticated (key confirmation) and the pending state is spent.
    this.clearPending();
    const old = this.ticket;
    this.ticket = {
      suite: this.suite.id,
      sid: s.sid,
      authKey: s.ticketAuthKey,
      chainStart: p.counter + 1,
      chainIndex: p.counter + 1,
      chainKey: s.chainKey,
    };
    if (old) zeroize(old.authKey, old.chainKey);
    try {
      await this.persist(this.counterLimit, this.ticket);
    } catch (e) {
      // The ticket is an optimisation: without it on flash the next boot simply runs phase 1 (§7.3).
      this.log.warn('mqsec: ticket not persisted', { code: asMqsecError(e).code });
    }
    this.install(p.counter, trafficKeys(this.suite, s.trafficSecret));
    const reply = buildKx3(kx3Tag(this.suite, s.confirmDeviceKey, th));
    zeroize(s.confirmServerKey, s.confirmDeviceKey, s.trafficSecret);
    this._state = 'ready';
    return { kind: 'handshake', reply: { topic: KX_TOPIC, payload: reply } };
  }

  private openEnvelope(topic: string, payload: Uint8Array): Uint8Array {
    const env = parseEnvelope(payload);
    const cur = this.current;
    const prev = this.previousRx;
    if (cur && cur.epoch === env.epoch) {
      try {
        return cur.rx.open(topic, payload);
      } catch (e) {
        // Epoch bytes of two connections can collide (counter mod 256): then try the previous keys too.
        if (!(prev && prev.epoch === env.epoch)) throw e;
      }
    }
    if (prev && prev.epoch === env.epoch) return prev.open(topic, payload);
    fail('UNKNOWN_SESSION', 'no keys for this epoch');
  }

  /** §8: seals an application payload for `topic` under the current connection's keys. */
  seal(topic: string, plaintext: Uint8Array): Uint8Array {
    if (this._state !== 'ready' || !this.current) fail('BAD_STATE', 'not ready to publish');
    return this.current.tx.seal(topic, plaintext);
  }

  /**
   * §14.5: the channel trailer of this connection for an end-to-end topic's
   * group envelope (genv | low byte of the counter | MAC). Wrap at send time:
   * a trailer is valid on this connection only.
   */
  wrapChannel(topic: string, genv: Uint8Array): Uint8Array {
    if (this._state !== 'ready' || !this.current) fail('BAD_STATE', 'not ready to publish');
    return this.current.channel.wrap(topic, genv);
  }

  /**
   * §8.5: QoS 1 retransmission after a reconnect. null = resend unchanged
   * (current epoch, or previous epoch which the broker accepts for its grace
   * period and deduplicates); otherwise a fresh envelope under current keys.
   */
  resealForResend(topic: string, envelope: Uint8Array): Uint8Array | null {
    if (this._state !== 'ready' || !this.current) return null;
    let epoch: number;
    try {
      epoch = parseEnvelope(envelope).epoch;
    } catch {
      return null;
    }
    const prevEpoch = this.oldTx.length ? this.oldTx[this.oldTx.length - 1].epoch : -1;
    if (epoch === this.current.epoch || epoch === prevEpoch) return null;
    for (let i = this.oldTx.length - 2; i >= 0; i--) {
      const pt = this.oldTx[i].reopen(topic, envelope);
      if (pt) return this.current.tx.seal(topic, pt);
    }
    return null;
  }

  /** Transport closed: the connection's keys become the previous epoch (receive + re-open only). */
  onConnectionLost(): void {
    this.clearPending();
    if (this.current) {
      this.previousRx?.destroy();
      this.previousRx = this.current.rx;
      this.oldTx.push(this.current.tx);
      while (this.oldTx.length > OLD_TX_KEPT) this.oldTx.shift()!.destroy();
      this.current.channel.destroy();
      this.current = undefined;
    }
    this._state = 'idle';
  }

  /**
   * Shutting down for good (an app closing, a device being re-provisioned):
   * every key this session holds is zeroised, in RAM only (the stored record,
   * counter and ticket, stays for the next start). Unusable afterwards.
   */
  destroy(): void {
    this.onConnectionLost();
    this.previousRx?.destroy();
    this.previousRx = undefined;
    for (const tx of this.oldTx) tx.destroy();
    this.oldTx = [];
    this.dropTicketInRam();
    zeroize(this.authKey, this.pskKey);
    this.destroyed = true;
    this._state = 'idle';
  }

  /** Drops the ticket (keeps the counter): the next connect runs phase 1. */
  async forgetTicket(): Promise<void> {
    await this.load();
    this.dropTicketInRam();
    await this.persist(this.counterLimit, undefined);
  }

  private dropTicketInRam(): void {
    const t = this.ticket;
    this.ticket = undefined;
    if (t) zeroize(t.authKey, t.chainKey);
  }
}
