/**
 * End-to-end topic group keys (docs/protocol.md §14): the group envelope, the
 * integrity-only channel MAC, the key-delivery messages and the key schedule
 * behind them, as pure functions, plus the two small stateful pieces a member
 * needs (the channel counters of one connection and the keyring of group keys
 * with its per-publisher replay windows).
 *
 * Same rules as the rest of firmware/secure: Uint8Array only, every parser
 * bounded, typed errors, keys zeroised when replaced.
 */
import { ByteReader, concatBytes, constantTimeEqual, u16be, u32be, zeroize } from '../core/bytes.js';
import { fail } from '../core/errors.js';
import { utf8Decode, utf8Encode } from '../core/utf8.js';
import { decodeVarint, encodeVarint } from '../core/varint.js';
import type { CryptoSuite } from '../crypto/suite.js';
import { topicMatches } from '../mqtt/topic.js';
import { DEVICE_KEY_LENGTH, TAG_LENGTH } from './constants.js';
import { ReplayWindow, envelopeNonce } from './envelope.js';
import { encodeDevId, truncateTag } from './key-schedule.js';

// ---- constants (§14.3 - §14.6) ---------------------------------------------

/** Member <-> key service topic on the member's own connection (§14.6). Inside the reserved `$mqsec/` tree. */
export const GK_TOPIC = '$mqsec/gk';
/** Header bytes of the key-delivery messages (§2.2 numbering, version 1). */
export const MSG_GKREQ = 0x15;
export const MSG_GKDEL = 0x16;
export const GROUP_KEY_LENGTH = 32;
/** Channel MAC tag (§14.5): 64 bits, checked once per PUBLISH by the broker, a failure closes the connection. */
export const CHANNEL_TAG_LENGTH = 8;
/** Channel trailer: low byte of the channel counter | tag. */
export const CHANNEL_TRAILER_LENGTH = 1 + CHANNEL_TAG_LENGTH;
/** Publisher sequence numbers per group epoch (§14.4): varint of at most 3 bytes. */
export const GROUP_SEQ_LIMIT = 0x200000;
/** Writers per group epoch: slot < 4096 keeps the key id within 2 bytes (1 byte below 32). */
export const GROUP_MAX_WRITERS = 4096;
/** Epochs are u32 (§14.2); only epoch mod 4 travels in an envelope. */
export const GROUP_EPOCH_MAX = 0xffffffff;
/** A group filter is bound into keys as u8 length | UTF-8. */
export const GROUP_FILTER_MAX_BYTES = 255;
/** Groups in one delivery. */
export const GROUP_DELIVERY_MAX_GROUPS = 256;
export const MEMBER_NONCE_LENGTH = 16;
export const SERVICE_NONCE_LENGTH = 16;
/** Channel counter per connection and direction (§14.5). */
export const CHANNEL_SEQ_LIMIT = 0x100000000;

/** Entry flags of a key delivery (§14.6). */
export const GROUP_READER = 1;
export const GROUP_WRITER = 2;

const label = (s: string): Uint8Array => utf8Encode(`mqsec v1 ${s}`);
const L_SALT = utf8Encode('mqsec v1');
const L_KS = label('ks');
const L_SND = label('g snd');
const L_GKREQ = label('gkreq');
const L_GKDEL = label('gkdel');

function encodeFilter(filter: string): Uint8Array {
  const b = utf8Encode(filter);
  if (b.length < 1 || b.length > GROUP_FILTER_MAX_BYTES) fail('MALFORMED', 'group filter must be 1..255 UTF-8 bytes');
  return concatBytes(new Uint8Array([b.length]), b);
}

function checkEpoch(epoch: number): void {
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > GROUP_EPOCH_MAX) fail('MALFORMED', 'group epoch out of range');
}

// ---- key schedule (§14.2) ---------------------------------------------------

/**
 * §14.2: K_ks = Expand(Extract("mqsec v1", K), "mqsec v1 ks" | id*, 32), the
 * member's key with the key service. Same PRK as K_auth / K_psk (§4.1) but a
 * different label: a broker given only K_auth and K_psk cannot compute it.
 */
export function deriveKeyServiceKey(suite: CryptoSuite, principalKey: Uint8Array, id: string): Uint8Array {
  if (principalKey.length !== DEVICE_KEY_LENGTH) fail('BAD_KEY', 'principal key must be 32 bytes');
  const prk = suite.hkdfExtract(L_SALT, principalKey);
  const k = suite.hkdfExpand(prk, concatBytes(L_KS, encodeDevId(id)), 32);
  prk.fill(0);
  return k;
}

export interface SenderKeys {
  key: Uint8Array;
  iv: Uint8Array;
}

/**
 * §14.2: each writer slot of a group epoch has its own AEAD key and IV,
 * Expand(GK, "mqsec v1 g snd" | filter* | u32(epoch) | u16(slot), key + IV),
 * so publishers sharing a group key never share a nonce space.
 */
export function groupSenderKeys(suite: CryptoSuite, groupKey: Uint8Array, filter: string, epoch: number, slot: number): SenderKeys {
  if (groupKey.length !== GROUP_KEY_LENGTH) fail('BAD_KEY', 'group key must be 32 bytes');
  checkEpoch(epoch);
  if (!Number.isInteger(slot) || slot < 0 || slot >= GROUP_MAX_WRITERS) fail('MALFORMED', 'writer slot out of range');
  const kl = suite.aeadKeyLength;
  const okm = suite.hkdfExpand(groupKey, concatBytes(L_SND, encodeFilter(filter), u32be(epoch), u16be(slot)), kl + suite.aeadNonceLength);
  const out = { key: okm.slice(0, kl), iv: okm.slice(kl) };
  okm.fill(0);
  return out;
}

/** §14.6: (K_d | iv_d) = Expand(K_ks, "mqsec v1 gkdel" | id* | n_m | n_k, key + IV). One pair per request. */
export function deliveryKeys(suite: CryptoSuite, keyServiceKey: Uint8Array, id: string, memberNonce: Uint8Array, serviceNonce: Uint8Array): SenderKeys {
  const kl = suite.aeadKeyLength;
  const okm = suite.hkdfExpand(keyServiceKey, concatBytes(L_GKDEL, encodeDevId(id), memberNonce, serviceNonce), kl + suite.aeadNonceLength);
  const out = { key: okm.slice(0, kl), iv: okm.slice(kl) };
  okm.fill(0);
  return out;
}

// ---- group envelope (§14.4) -------------------------------------------------

export interface GroupEnvelopeHeader {
  /** Writer slot in the group epoch. */
  slot: number;
  /** epoch mod 4. */
  epochLow: number;
  seq: number;
  /** varint(kid) | varint(seq): also the start of the AAD. */
  header: Uint8Array;
  /** ciphertext | tag */
  sealed: Uint8Array;
}

export function groupKeyId(slot: number, epoch: number): number {
  return slot * 4 + (epoch % 4);
}

/** §14.4 AAD: header | UTF-8(topic). */
export function groupAad(header: Uint8Array, topic: string): Uint8Array {
  return concatBytes(header, utf8Encode(topic));
}

export function parseGroupEnvelope(b: Uint8Array): GroupEnvelopeHeader {
  const kid = decodeVarint(b, 0);
  if (kid.value >= GROUP_MAX_WRITERS * 4) fail('MALFORMED', 'group key id out of range');
  const seq = decodeVarint(b, kid.length);
  if (seq.value >= GROUP_SEQ_LIMIT) fail('MALFORMED', 'group sequence number out of range');
  const h = kid.length + seq.length;
  if (b.length - h < TAG_LENGTH) fail('TRUNCATED', 'group envelope shorter than its tag');
  return { slot: Math.floor(kid.value / 4), epochLow: kid.value % 4, seq: seq.value, header: b.subarray(0, h), sealed: b.subarray(h) };
}

/** §14.4: genv = varint(kid) | varint(seq) | AEAD(k_w, iv_w XOR seq, plaintext, header | topic). */
export function sealGroupEnvelope(suite: CryptoSuite, keys: SenderKeys, slot: number, epoch: number, seq: number, topic: string, plaintext: Uint8Array): Uint8Array {
  if (!Number.isInteger(seq) || seq < 0) fail('MALFORMED', 'bad sequence number');
  if (seq >= GROUP_SEQ_LIMIT) fail('NONCE_EXHAUSTED', 'group sequence number limit: the key service re-keys');
  const header = concatBytes(encodeVarint(groupKeyId(slot, epoch)), encodeVarint(seq));
  return concatBytes(header, suite.aeadSeal(keys.key, envelopeNonce(keys.iv, seq), plaintext, groupAad(header, topic)));
}

/** Opens without any freshness check (the keyring adds it); undefined when the tag does not verify. */
export function openGroupEnvelope(suite: CryptoSuite, keys: SenderKeys, env: GroupEnvelopeHeader, topic: string): Uint8Array | undefined {
  return suite.aeadOpen(keys.key, envelopeNonce(keys.iv, env.seq), env.sealed, groupAad(env.header, topic));
}

// ---- integrity-only channel (§14.5) -----------------------------------------

/** §14.5: tag = T8(HMAC(K_ch, u32(cseq) | u16(len topic) | topic | genv)). */
export function channelTag(suite: CryptoSuite, channelKey: Uint8Array, cseq: number, topic: string, genv: Uint8Array): Uint8Array {
  const t = utf8Encode(topic);
  return suite.hmac(channelKey, concatBytes(u32be(cseq), u16be(t.length), t, genv)).slice(0, CHANNEL_TAG_LENGTH);
}

/** Sending half of a connection's channel (the member side towards the broker). */
export class ChannelSender {
  private seq = 0;
  constructor(
    private readonly suite: CryptoSuite,
    private key: Uint8Array,
  ) {}
  get nextSeq(): number {
    return this.seq;
  }
  /** genv | u8(cseq mod 256) | tag. The counter moves whether or not the PUBLISH is sent. */
  wrap(topic: string, genv: Uint8Array): Uint8Array {
    if (this.seq >= CHANNEL_SEQ_LIMIT) fail('NONCE_EXHAUSTED', 'channel counter limit: reconnect');
    const cseq = this.seq++;
    return concatBytes(genv, new Uint8Array([cseq & 0xff]), channelTag(this.suite, this.key, cseq, topic, genv));
  }
  destroy(): void {
    this.key.fill(0);
    this.seq = CHANNEL_SEQ_LIMIT;
  }
}

/**
 * Receiving half (the broker). The counter is strictly increasing on one
 * connection (MQTT over TCP is in order; a resend after a reconnect gets a new
 * trailer), so the full value is the smallest one above the last accepted with
 * the transmitted low byte: gaps up to 255 (PUBLISHes wrapped but never sent)
 * are tolerated, a replayed or re-ordered trailer maps to a value its tag was
 * not made for and fails as BAD_MAC.
 */
export class ChannelReceiver {
  private highest = -1;
  constructor(
    private readonly suite: CryptoSuite,
    private key: Uint8Array,
  ) {}
  /** Returns the group envelope (a view into `payload`); throws TRUNCATED / BAD_MAC. State moves only on success. */
  unwrap(topic: string, payload: Uint8Array): Uint8Array {
    if (payload.length < CHANNEL_TRAILER_LENGTH + TAG_LENGTH) fail('TRUNCATED', 'shorter than a channel trailer and an AEAD tag');
    const n = payload.length - CHANNEL_TRAILER_LENGTH;
    const low = payload[n];
    const next = this.highest + 1;
    const cseq = next + ((low - (next % 256) + 256) % 256);
    if (cseq >= CHANNEL_SEQ_LIMIT) fail('NONCE_EXHAUSTED', 'channel counter limit');
    const genv = payload.subarray(0, n);
    if (!constantTimeEqual(channelTag(this.suite, this.key, cseq, topic, genv), payload.subarray(n + 1))) fail('BAD_MAC', 'channel MAC');
    this.highest = cseq;
    return genv;
  }
  destroy(): void {
    this.key.fill(0);
  }
}

// ---- key delivery (§14.6) ---------------------------------------------------

/** GKREQ = 0x15 | n_m (16) | T16(HMAC(K_ks, "mqsec v1 gkreq" | id* | 0x15 | n_m)). */
export function buildGroupKeyRequest(suite: CryptoSuite, keyServiceKey: Uint8Array, id: string, memberNonce: Uint8Array): Uint8Array {
  if (memberNonce.length !== MEMBER_NONCE_LENGTH) fail('INTERNAL', 'member nonce length');
  const body = concatBytes(new Uint8Array([MSG_GKREQ]), memberNonce);
  return concatBytes(body, truncateTag(suite.hmac(keyServiceKey, concatBytes(L_GKREQ, encodeDevId(id), body))));
}

/** Key service side: checks the tag (constant time) and returns n_m. Throws UNKNOWN_TYPE / MALFORMED / TRUNCATED / BAD_MAC. */
export function parseGroupKeyRequest(suite: CryptoSuite, keyServiceKey: Uint8Array, id: string, b: Uint8Array): Uint8Array {
  const r = new ByteReader(b);
  const type = r.u8();
  if (type >> 4 !== 1) fail('BAD_VERSION', 'group key request version');
  if (type !== MSG_GKREQ) fail('UNKNOWN_TYPE', 'not a group key request');
  const nonce = r.bytes(MEMBER_NONCE_LENGTH);
  const tag = r.bytes(TAG_LENGTH);
  r.end();
  const want = truncateTag(suite.hmac(keyServiceKey, concatBytes(L_GKREQ, encodeDevId(id), b.subarray(0, 1 + MEMBER_NONCE_LENGTH))));
  if (!constantTimeEqual(want, tag)) fail('BAD_MAC', 'group key request tag');
  return nonce.slice();
}

export interface GroupGrant {
  filter: string;
  /** GROUP_READER | GROUP_WRITER; 0 = the member left this group: forget its keys. */
  flags: number;
  epoch: number;
  groupKey: Uint8Array;
  /** Principal ids by writer slot. */
  writers: string[];
}

export interface GroupDelivery {
  /** This member's publisher sequence range for the connection, [seqBase, seqLimit) (§14.4). */
  seqBase: number;
  seqLimit: number;
  groups: GroupGrant[];
}

/** Delivery body (§14.6), the plaintext of GKDEL. */
export function encodeGroupDelivery(d: GroupDelivery): Uint8Array {
  if (d.seqBase > d.seqLimit || d.seqLimit > GROUP_SEQ_LIMIT) fail('MALFORMED', 'sequence range');
  if (d.groups.length > GROUP_DELIVERY_MAX_GROUPS) fail('OVERSIZE', 'too many groups in one delivery');
  const parts: Uint8Array[] = [encodeVarint(d.seqBase), encodeVarint(d.seqLimit), encodeVarint(d.groups.length)];
  for (const g of d.groups) {
    if (!Number.isInteger(g.flags) || g.flags < 0 || g.flags > 3) fail('MALFORMED', 'group flags');
    parts.push(new Uint8Array([g.flags]), encodeFilter(g.filter));
    if (g.flags === 0) continue;
    checkEpoch(g.epoch);
    if (g.groupKey.length !== GROUP_KEY_LENGTH) fail('BAD_KEY', 'group key length');
    if (g.writers.length > GROUP_MAX_WRITERS) fail('OVERSIZE', 'too many writers');
    parts.push(encodeVarint(g.epoch), g.groupKey, encodeVarint(g.writers.length));
    for (const w of g.writers) parts.push(encodeDevId(w));
  }
  return concatBytes(...parts);
}

export function decodeGroupDelivery(b: Uint8Array): GroupDelivery {
  const r = new ByteReader(b);
  const varint = (): number => {
    const v = decodeVarint(b, r.offset);
    r.bytes(v.length);
    return v.value;
  };
  const str = (): string => utf8Decode(r.bytes(r.u8()).slice(), true);
  const seqBase = varint();
  const seqLimit = varint();
  if (seqBase > seqLimit || seqLimit > GROUP_SEQ_LIMIT) fail('MALFORMED', 'sequence range');
  const count = varint();
  if (count > GROUP_DELIVERY_MAX_GROUPS) fail('OVERSIZE', 'too many groups');
  const groups: GroupGrant[] = [];
  for (let i = 0; i < count; i++) {
    const flags = r.u8();
    if (flags > 3) fail('MALFORMED', 'group flags');
    const filter = str();
    if (filter.length === 0) fail('MALFORMED', 'empty group filter');
    if (flags === 0) {
      groups.push({ filter, flags, epoch: 0, groupKey: new Uint8Array(0), writers: [] });
      continue;
    }
    const epoch = varint();
    checkEpoch(epoch);
    const groupKey = r.bytes(GROUP_KEY_LENGTH).slice();
    const n = varint();
    if (n > GROUP_MAX_WRITERS) fail('OVERSIZE', 'too many writers');
    // every writer id costs at least 2 bytes: refuse a count the input cannot hold before allocating
    if (n * 2 > r.remaining) fail('TRUNCATED', 'writer list past end');
    const writers: string[] = [];
    for (let k = 0; k < n; k++) {
      const w = str();
      if (w.length === 0) fail('MALFORMED', 'empty writer id');
      writers.push(w);
    }
    groups.push({ filter, flags, epoch, groupKey, writers });
  }
  r.end();
  return { seqBase, seqLimit, groups };
}

function deliveryAad(header: Uint8Array, id: string): Uint8Array {
  return concatBytes(header, encodeDevId(id));
}

/** GKDEL = 0x16 | n_k (16) | varint(dseq) | AEAD(K_d, iv_d XOR dseq, body, header | id*). */
export function sealGroupDelivery(suite: CryptoSuite, keys: SenderKeys, serviceNonce: Uint8Array, dseq: number, id: string, body: Uint8Array): Uint8Array {
  if (serviceNonce.length !== SERVICE_NONCE_LENGTH) fail('INTERNAL', 'service nonce length');
  if (dseq >= GROUP_SEQ_LIMIT) fail('NONCE_EXHAUSTED', 'delivery counter');
  const header = concatBytes(new Uint8Array([MSG_GKDEL]), serviceNonce, encodeVarint(dseq));
  return concatBytes(header, suite.aeadSeal(keys.key, envelopeNonce(keys.iv, dseq), body, deliveryAad(header, id)));
}

export interface GroupDeliveryHeader {
  serviceNonce: Uint8Array;
  dseq: number;
  header: Uint8Array;
  sealed: Uint8Array;
}

export function parseGroupDeliveryHeader(b: Uint8Array): GroupDeliveryHeader {
  const r = new ByteReader(b);
  const type = r.u8();
  if (type >> 4 !== 1) fail('BAD_VERSION', 'group key delivery version');
  if (type !== MSG_GKDEL) fail('UNKNOWN_TYPE', 'not a group key delivery');
  const serviceNonce = r.bytes(SERVICE_NONCE_LENGTH);
  const d = decodeVarint(b, r.offset);
  r.bytes(d.length);
  if (d.value >= GROUP_SEQ_LIMIT) fail('MALFORMED', 'delivery counter out of range');
  if (r.remaining < TAG_LENGTH) fail('TRUNCATED', 'delivery shorter than its tag');
  return { serviceNonce, dseq: d.value, header: b.subarray(0, r.offset), sealed: r.rest() };
}

export function openGroupDelivery(suite: CryptoSuite, keys: SenderKeys, h: GroupDeliveryHeader, id: string): Uint8Array | undefined {
  return suite.aeadOpen(keys.key, envelopeNonce(keys.iv, h.dseq), h.sealed, deliveryAad(h.header, id));
}

// ---- member keyring (§14.7) -------------------------------------------------

interface SlotState {
  keys: SenderKeys;
  window: ReplayWindow;
}

interface EpochKeys {
  epoch: number;
  groupKey: Uint8Array;
  writers: string[];
  /** Derived lazily per writer slot: a reader pays one HKDF per publisher it hears from. */
  slots: Map<number, SlotState>;
}

interface GroupState {
  filter: string;
  flags: number;
  current: EpochKeys;
  previous?: EpochKeys;
}

export interface OpenedGroupMessage {
  plaintext: Uint8Array;
  /** Principal id of the writer slot, as the key service listed it. */
  publisher: string;
  group: string;
  epoch: number;
}

export interface KeyringOptions {
  suite: CryptoSuite;
  /** This member's principal id (device id or app name). */
  id: string;
  /** K_ks (deriveKeyServiceKey). */
  keyServiceKey: Uint8Array;
  replayWindow?: number;
}

function wipeEpoch(e: EpochKeys | undefined): void {
  if (!e) return;
  e.groupKey.fill(0);
  e.slots.forEach((s) => zeroize(s.keys.key, s.keys.iv));
  e.slots.clear();
}

/**
 * A member's group keys (§14.7): asks the key service (request), applies its
 * deliveries (current + previous epoch per group, epochs only move forward),
 * seals as a writer and opens as a reader with a replay window per
 * (group, epoch, writer slot). Errors are typed: MALFORMED / TRUNCATED
 * (parse), UNKNOWN_SESSION (no key for the group or epoch), REPLAY,
 * DECRYPT_FAILED (AEAD, topic binding), NOT_AUTHORIZED (not a writer),
 * NONCE_EXHAUSTED (sequence range used up before the next one arrived).
 */
export class GroupKeyring {
  private readonly suite: CryptoSuite;
  readonly id: string;
  private readonly ksKey: Uint8Array;
  private readonly windowSize: number;
  private groups: GroupState[] = [];
  private memberNonce: Uint8Array | undefined;
  private delivery: { serviceNonce: Uint8Array; keys: SenderKeys; lastSeq: number } | undefined;
  private seqBase = 0;
  private seqNext = 0;
  private seqLimit = 0;
  /** A request is out whose answer will carry the next range (§14.4). */
  private rangeRequested = false;

  constructor(opts: KeyringOptions) {
    this.suite = opts.suite;
    this.id = opts.id;
    this.ksKey = opts.keyServiceKey;
    this.windowSize = opts.replayWindow ?? 64;
    encodeDevId(this.id);
  }

  /** GKREQ with a fresh n_m; any delivery not answering this request is refused from now on. */
  request(): Uint8Array {
    this.dropDeliverySession();
    this.rangeRequested = true;
    this.memberNonce = this.suite.randomBytes(MEMBER_NONCE_LENGTH);
    return buildGroupKeyRequest(this.suite, this.ksKey, this.id, this.memberNonce);
  }

  /** A request is out and its answer has not come (yet). */
  get awaitingDelivery(): boolean {
    return this.memberNonce !== undefined && this.delivery === undefined;
  }

  /** True once a delivery answered the latest request. */
  get hasKeys(): boolean {
    return this.delivery !== undefined;
  }

  /** Groups held, with epoch and role, for status displays. */
  list(): { filter: string; epoch: number; reader: boolean; writer: boolean }[] {
    return this.groups.map((g) => ({ filter: g.filter, epoch: g.current.epoch, reader: (g.flags & GROUP_READER) !== 0, writer: (g.flags & GROUP_WRITER) !== 0 }));
  }

  /**
   * Applies a GKDEL. Throws BAD_STATE (no request outstanding), UNKNOWN_TYPE,
   * MALFORMED, TRUNCATED, DECRYPT_FAILED (not for this request or forged),
   * REPLAY (delivery counter not above the last one of this answer). Returns
   * the filters whose keys changed.
   */
  acceptDelivery(payload: Uint8Array): string[] {
    if (!this.memberNonce) fail('BAD_STATE', 'no group key request outstanding');
    const h = parseGroupDeliveryHeader(payload);
    let session = this.delivery;
    let fresh = false;
    if (!session || !constantTimeEqual(session.serviceNonce, h.serviceNonce)) {
      session = { serviceNonce: h.serviceNonce.slice(), keys: deliveryKeys(this.suite, this.ksKey, this.id, this.memberNonce, h.serviceNonce), lastSeq: -1 };
      fresh = true;
    }
    if (h.dseq <= session.lastSeq) fail('REPLAY', 'key delivery seen before');
    const body = openGroupDelivery(this.suite, session.keys, h, this.id);
    if (!body) {
      if (fresh) zeroize(session.keys.key, session.keys.iv);
      fail('DECRYPT_FAILED', 'key delivery did not authenticate');
    }
    const d = decodeGroupDelivery(body);
    body.fill(0);
    if (fresh && this.delivery) zeroize(this.delivery.keys.key, this.delivery.keys.iv);
    this.delivery = session;
    session.lastSeq = h.dseq;
    if (fresh) this.rangeRequested = false; // the answer to the request: its range follows
    if (d.seqBase !== this.seqBase || d.seqLimit !== this.seqLimit) {
      // A new range (new connection, or a re-key that restarted the allocation): the key
      // service hands out a range only where it is unused under every key this member can
      // write with (§14.4), so the counter restarts there. The same range again (a push
      // within this connection) keeps the counter where it is.
      this.seqBase = d.seqBase;
      this.seqNext = d.seqBase;
      this.seqLimit = d.seqLimit;
    }
    const changed: string[] = [];
    for (const g of d.groups) if (this.apply(g)) changed.push(g.filter);
    return changed;
  }

  private apply(g: GroupGrant): boolean {
    const i = this.groups.findIndex((x) => x.filter === g.filter);
    const have = i >= 0 ? this.groups[i] : undefined;
    if (g.flags === 0) {
      if (!have) return false;
      wipeEpoch(have.current);
      wipeEpoch(have.previous);
      this.groups.splice(i, 1);
      return true;
    }
    const fresh: EpochKeys = { epoch: g.epoch, groupKey: g.groupKey, writers: g.writers, slots: new Map() };
    if (!have) {
      this.groups.push({ filter: g.filter, flags: g.flags, current: fresh });
      return true;
    }
    if (g.epoch < have.current.epoch || (g.epoch === have.current.epoch && constantTimeEqual(g.groupKey, have.current.groupKey))) {
      // an older epoch never replaces a newer one (a stale answer); the same epoch only refreshes the role
      have.flags = g.flags;
      g.groupKey.fill(0);
      return false;
    }
    if (g.epoch === have.current.epoch) fail('BAD_KEY', 'two different keys for one group epoch');
    wipeEpoch(have.previous);
    have.previous = g.epoch === have.current.epoch + 1 ? have.current : undefined;
    if (!have.previous) wipeEpoch(have.current);
    have.current = fresh;
    have.flags = g.flags;
    return true;
  }

  private groupFor(topic: string): GroupState | undefined {
    for (const g of this.groups) if (topicMatches(g.filter, topic)) return g;
    return undefined;
  }

  /** Is `topic` inside a group this member holds a key for? */
  covers(topic: string): boolean {
    return this.groupFor(topic) !== undefined;
  }

  private slot(e: EpochKeys, filter: string, slot: number): SlotState {
    let s = e.slots.get(slot);
    if (!s) {
      s = { keys: groupSenderKeys(this.suite, e.groupKey, filter, e.epoch, slot), window: new ReplayWindow(this.windowSize) };
      e.slots.set(slot, s);
    }
    return s;
  }

  /** Next publisher sequence number and what is left of the range. */
  get sequence(): { next: number; limit: number } {
    return { next: this.seqNext, limit: this.seqLimit };
  }

  /**
   * §14.4: a writer asks for its next range on the same connection (a new GKREQ) once three
   * quarters of the current one is used, and goes on sealing from the old range until the
   * answer arrives, so a busy writer never stops or reconnects for sequence numbers. True
   * until that request is made.
   */
  get wantsRange(): boolean {
    if (this.seqLimit === 0 || this.rangeRequested) return false;
    return (this.seqLimit - this.seqNext) * 4 <= this.seqLimit - this.seqBase;
  }

  /** §14.4: seals under the current epoch of the topic's group as this member's writer slot. */
  seal(topic: string, plaintext: Uint8Array): Uint8Array {
    const g = this.groupFor(topic);
    if (!g) fail('UNKNOWN_SESSION', 'no group key for this topic');
    if ((g.flags & GROUP_WRITER) === 0) fail('NOT_AUTHORIZED', 'not a writer of this group');
    const slot = g.current.writers.indexOf(this.id);
    if (slot < 0) fail('NOT_AUTHORIZED', 'no writer slot in this group');
    if (this.seqNext >= this.seqLimit) fail('NONCE_EXHAUSTED', 'publisher sequence range used up: ask for the next one (GKREQ)');
    const seq = this.seqNext++; // never reused, even if the caller drops the envelope
    return sealGroupEnvelope(this.suite, this.slot(g.current, g.filter, slot).keys, slot, g.current.epoch, seq, topic, plaintext);
  }

  /** §14.7 receiver checks: group, epoch, writer slot, AEAD with topic binding, then freshness. */
  open(topic: string, genv: Uint8Array): OpenedGroupMessage {
    const env = parseGroupEnvelope(genv);
    const g = this.groupFor(topic);
    if (!g) fail('UNKNOWN_SESSION', 'no group key for this topic');
    if ((g.flags & GROUP_READER) === 0) fail('NOT_AUTHORIZED', 'not a reader of this group');
    const e = g.current.epoch % 4 === env.epochLow ? g.current : g.previous && g.previous.epoch % 4 === env.epochLow ? g.previous : undefined;
    if (!e) fail('UNKNOWN_SESSION', 'no key for this group epoch');
    if (env.slot >= e.writers.length) fail('UNKNOWN_SESSION', 'no such writer slot');
    const s = this.slot(e, g.filter, env.slot);
    if (!s.window.check(env.seq)) fail('REPLAY', 'publisher sequence number seen or too old');
    const pt = openGroupEnvelope(this.suite, s.keys, env, topic);
    if (!pt) fail('DECRYPT_FAILED', 'group envelope did not authenticate');
    s.window.accept(env.seq);
    return { plaintext: pt, publisher: e.writers[env.slot], group: g.filter, epoch: e.epoch };
  }

  /** Re-opens an envelope this member sealed (QoS 1 resend after a reconnect); undefined when its epoch is gone. */
  reopenOwn(topic: string, genv: Uint8Array): Uint8Array | undefined {
    let env: GroupEnvelopeHeader;
    try {
      env = parseGroupEnvelope(genv);
    } catch {
      return undefined;
    }
    const g = this.groupFor(topic);
    if (!g) return undefined;
    for (const e of [g.current, g.previous]) {
      if (!e || e.epoch % 4 !== env.epochLow || e.writers[env.slot] !== this.id) continue;
      const pt = openGroupEnvelope(this.suite, this.slot(e, g.filter, env.slot).keys, env, topic);
      if (pt) return pt;
    }
    return undefined;
  }

  /** Is the envelope sealed under the current epoch of its group (resend as is) or must it be re-sealed? */
  isCurrent(topic: string, genv: Uint8Array): boolean {
    const g = this.groupFor(topic);
    if (!g) return false;
    try {
      return parseGroupEnvelope(genv).epochLow === g.current.epoch % 4;
    } catch {
      return false;
    }
  }

  private dropDeliverySession(): void {
    if (this.delivery) zeroize(this.delivery.keys.key, this.delivery.keys.iv);
    this.delivery = undefined;
  }

  /** Connection lost: the delivery answer dies with it; group keys stay until the next delivery replaces them. */
  onConnectionLost(): void {
    this.dropDeliverySession();
    this.memberNonce = undefined;
    this.rangeRequested = false;
  }

  /** Forget everything, K_ks included (shutting down): unusable afterwards. */
  destroy(): void {
    this.onConnectionLost();
    this.ksKey.fill(0);
    for (const g of this.groups) {
      wipeEpoch(g.current);
      wipeEpoch(g.previous);
    }
    this.groups = [];
    this.seqLimit = 0;
  }
}

/**
 * Key service side of one member's delivery answer (§14.6): made from a
 * verified GKREQ and a fresh n_k; every later push on the same connection
 * uses the next delivery counter. Replaced by the member's next request.
 */
export class DeliverySender {
  private dseq = 0;
  private readonly keys: SenderKeys;
  private constructor(
    private readonly suite: CryptoSuite,
    readonly id: string,
    readonly serviceNonce: Uint8Array,
    memberNonce: Uint8Array,
    keyServiceKey: Uint8Array,
  ) {
    this.keys = deliveryKeys(suite, keyServiceKey, id, memberNonce, serviceNonce);
  }
  /** Verifies the request (BAD_MAC etc. as parseGroupKeyRequest) and draws n_k. */
  static answer(suite: CryptoSuite, keyServiceKey: Uint8Array, id: string, request: Uint8Array): DeliverySender {
    const memberNonce = parseGroupKeyRequest(suite, keyServiceKey, id, request);
    return new DeliverySender(suite, id, suite.randomBytes(SERVICE_NONCE_LENGTH), memberNonce, keyServiceKey);
  }
  seal(delivery: GroupDelivery): Uint8Array {
    const body = encodeGroupDelivery(delivery);
    const out = sealGroupDelivery(this.suite, this.keys, this.serviceNonce, this.dseq++, this.id, body);
    body.fill(0);
    return out;
  }
  destroy(): void {
    zeroize(this.keys.key, this.keys.iv);
  }
}
