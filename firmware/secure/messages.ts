/**
 * Message codecs (docs/protocol.md §3, §5, §6, §8.1): one pure build and one
 * pure parse function per message. Parsers are bounded (ByteReader), strict
 * (exact lengths, minimal varints, no trailing bytes) and fail with a typed
 * MqsecError; they never verify tags (that needs keys: see device.ts/server.ts).
 */
import { ByteReader, concatBytes } from '../core/bytes.js';
import { fail } from '../core/errors.js';
import { decodeVarint, encodeVarint } from '../core/varint.js';
import { utf8Decode, utf8Encode } from '../core/utf8.js';
import { base64urlDecode, base64urlEncode } from './base64url.js';
import {
  BROKER_NONCE_LENGTH,
  COUNTER_MAX,
  DEFAULT_MAX_PASSWORD_BYTES,
  MSG_KX1,
  MSG_KX2,
  MSG_KX3,
  MSG_COUNTER_HINT,
  MSG_RESUME,
  MSG_RESUME_CONFIRM,
  PROTOCOL_VERSION,
  SEQ_LIMIT,
  SID_LENGTH,
  TAG_LENGTH,
  TEXT_MARKER,
} from './constants.js';

const DH_LENGTH = 32; // suite 1 (X25519); suite 2 will carry its own length

function readCounter(r: ByteReader, bytes: Uint8Array): number {
  const { value, length } = decodeVarint(bytes, r.offset);
  if (value > COUNTER_MAX) fail('MALFORMED', 'counter out of range');
  r.bytes(length);
  return value;
}

function counterBytes(counter: number): Uint8Array {
  if (!Number.isInteger(counter) || counter < 0 || counter > COUNTER_MAX) fail('MALFORMED', 'counter out of range');
  return encodeVarint(counter);
}

/** §2.2: header byte check shared by every handshake message. */
function expectHeader(r: ByteReader, type: number): void {
  const h = r.u8();
  if (h >> 4 !== PROTOCOL_VERSION) fail('BAD_VERSION', `version ${h >> 4}`);
  if (h !== type) fail('UNKNOWN_TYPE', `message type ${h & 15}`);
}

// ---------------------------------------------------------------- KX1 (§5.1)

export interface Kx1 {
  suite: number;
  counter: number;
  ephemeralPublic: Uint8Array;
  tag: Uint8Array;
}

/** KX1 without its tag: 0x11 | suite | counter (varint) | X_d. */
export function buildKx1Body(suite: number, counter: number, ephemeralPublic: Uint8Array): Uint8Array {
  if (ephemeralPublic.length !== DH_LENGTH) fail('MALFORMED', 'X_d length');
  return concatBytes(new Uint8Array([MSG_KX1, suite & 0xff]), counterBytes(counter), ephemeralPublic);
}

export function buildKx1(body: Uint8Array, tag: Uint8Array): Uint8Array {
  return concatBytes(body, tag);
}

export function parseKx1(b: Uint8Array): Kx1 & { body: Uint8Array } {
  const r = new ByteReader(b);
  expectHeader(r, MSG_KX1);
  const suite = r.u8();
  const counter = readCounter(r, b);
  const ephemeralPublic = r.bytes(DH_LENGTH);
  const bodyLength = r.offset;
  const tag = r.bytes(TAG_LENGTH);
  r.end();
  return { suite, counter, ephemeralPublic, tag, body: b.subarray(0, bodyLength) };
}

// ---------------------------------------------------------------- KX2 (§5.3)

export interface Kx2 {
  ephemeralPublic: Uint8Array;
  tag: Uint8Array;
}

export function buildKx2Body(ephemeralPublic: Uint8Array): Uint8Array {
  if (ephemeralPublic.length !== DH_LENGTH) fail('MALFORMED', 'Y_s length');
  return concatBytes(new Uint8Array([MSG_KX2]), ephemeralPublic);
}

export function buildKx2(body: Uint8Array, tag: Uint8Array): Uint8Array {
  return concatBytes(body, tag);
}

export function parseKx2(b: Uint8Array): Kx2 & { body: Uint8Array } {
  const r = new ByteReader(b);
  expectHeader(r, MSG_KX2);
  const ephemeralPublic = r.bytes(DH_LENGTH);
  const tag = r.bytes(TAG_LENGTH);
  r.end();
  return { ephemeralPublic, tag, body: b.subarray(0, 1 + DH_LENGTH) };
}

// ---------------------------------------------------------------- KX3 (§5.4)

export function buildKx3(tag: Uint8Array): Uint8Array {
  if (tag.length !== TAG_LENGTH) fail('MALFORMED', 'tag length');
  return concatBytes(new Uint8Array([MSG_KX3]), tag);
}

export function parseKx3(b: Uint8Array): { tag: Uint8Array } {
  const r = new ByteReader(b);
  expectHeader(r, MSG_KX3);
  const tag = r.bytes(TAG_LENGTH);
  r.end();
  return { tag };
}

// ---------------------------------------------------------------- resume token (§6.1)

export interface ResumeToken {
  sid: Uint8Array;
  counter: number;
  tag: Uint8Array;
}

export function buildResumeBody(sid: Uint8Array, counter: number): Uint8Array {
  if (sid.length !== SID_LENGTH) fail('MALFORMED', 'sid length');
  return concatBytes(new Uint8Array([MSG_RESUME]), sid, counterBytes(counter));
}

export function buildResume(body: Uint8Array, tag: Uint8Array): Uint8Array {
  return concatBytes(body, tag);
}

export function parseResume(b: Uint8Array): ResumeToken & { body: Uint8Array } {
  const r = new ByteReader(b);
  expectHeader(r, MSG_RESUME);
  const sid = r.bytes(SID_LENGTH);
  const counter = readCounter(r, b);
  const bodyLength = r.offset;
  const tag = r.bytes(TAG_LENGTH);
  r.end();
  return { sid, counter, tag, body: b.subarray(0, bodyLength) };
}

// ---------------------------------------------------------------- resume confirmation (§6.4)

export interface ResumeConfirm {
  brokerNonce: Uint8Array;
  tag: Uint8Array;
}

/** RC without its tag: 0x17 | N_s (6). */
export function buildResumeConfirmBody(brokerNonce: Uint8Array): Uint8Array {
  if (brokerNonce.length !== BROKER_NONCE_LENGTH) fail('MALFORMED', 'broker nonce length');
  return concatBytes(new Uint8Array([MSG_RESUME_CONFIRM]), brokerNonce);
}

export function buildResumeConfirm(body: Uint8Array, tag: Uint8Array): Uint8Array {
  return concatBytes(body, tag);
}

export function parseResumeConfirm(b: Uint8Array): ResumeConfirm & { body: Uint8Array } {
  const r = new ByteReader(b);
  expectHeader(r, MSG_RESUME_CONFIRM);
  const brokerNonce = r.bytes(BROKER_NONCE_LENGTH);
  const tag = r.bytes(TAG_LENGTH);
  r.end();
  return { brokerNonce, tag, body: b.subarray(0, 1 + BROKER_NONCE_LENGTH) };
}

// ---------------------------------------------------------------- counter hint (§5.5)

export interface CounterHint {
  /** Highest counter the broker has accepted for the device. */
  counter: number;
  tag: Uint8Array;
}

/** HINT without its tag: 0x18 | varint(highest accepted counter). */
export function buildCounterHintBody(counter: number): Uint8Array {
  return concatBytes(new Uint8Array([MSG_COUNTER_HINT]), counterBytes(counter));
}

export function buildCounterHint(body: Uint8Array, tag: Uint8Array): Uint8Array {
  return concatBytes(body, tag);
}

export function parseCounterHint(b: Uint8Array): CounterHint & { body: Uint8Array } {
  const r = new ByteReader(b);
  expectHeader(r, MSG_COUNTER_HINT);
  const counter = readCounter(r, b);
  const bodyLength = r.offset;
  const tag = r.bytes(TAG_LENGTH);
  r.end();
  return { counter, tag, body: b.subarray(0, bodyLength) };
}

/** Type of a handshake message from its header byte (§2.2), for a receiver that may get one of several. */
export function handshakeType(b: Uint8Array): number {
  if (b.length === 0) fail('TRUNCATED', 'empty handshake message');
  if (b[0] >> 4 !== PROTOCOL_VERSION) fail('BAD_VERSION', `version ${b[0] >> 4}`);
  return b[0];
}

// ---------------------------------------------------------------- CONNECT password (§3, §9.1)

export type ParsedPassword =
  | ({ type: 'kx1'; bytes: Uint8Array } & Kx1 & { body: Uint8Array })
  | ({ type: 'resume'; bytes: Uint8Array } & ResumeToken & { body: Uint8Array });

/** §3: text form = "~" + base64url(binary), for APIs that take the password only as a string. */
export function toTextForm(binary: Uint8Array): string {
  return TEXT_MARKER + base64urlEncode(binary);
}

export function fromTextForm(text: string): Uint8Array {
  if (text.charAt(0) !== TEXT_MARKER) fail('MALFORMED', 'missing text-form marker');
  return base64urlDecode(text.slice(1));
}

/**
 * §9.1: classifies a CONNECT password of a registered device. Accepts the
 * binary form (Uint8Array, Buffer) or the text form (a string, or bytes that
 * are the UTF-8 of "~..."). Size is checked before anything else.
 */
export function parsePassword(password: Uint8Array | string | undefined | null, maxBytes = DEFAULT_MAX_PASSWORD_BYTES): ParsedPassword {
  if (password === undefined || password === null || password.length === 0) fail('DOWNGRADE', 'no mqsec password');
  const maxText = 1 + Math.ceil((maxBytes * 4) / 3);
  let bytes: Uint8Array;
  if (typeof password === 'string') {
    if (password.length > maxText) fail('OVERSIZE', 'password too long');
    if (password.charAt(0) !== TEXT_MARKER) fail('DOWNGRADE', 'not an mqsec password');
    bytes = fromTextForm(password);
  } else {
    if (password.length > maxText) fail('OVERSIZE', 'password too long');
    if (password[0] === TEXT_MARKER.charCodeAt(0)) bytes = fromTextForm(utf8Decode(password));
    else bytes = password;
  }
  if (bytes.length > maxBytes) fail('OVERSIZE', 'password too long');
  const h = bytes[0];
  const version = h >> 4;
  // §3: printable ASCII (version nibbles 2..7) is an ordinary password: a downgrade attempt.
  if (version >= 2 && version <= 7) fail('DOWNGRADE', 'not an mqsec password');
  if (version !== PROTOCOL_VERSION) fail('BAD_VERSION', `version ${version}`);
  if (h === MSG_KX1) return { type: 'kx1', bytes, ...parseKx1(bytes) };
  if (h === MSG_RESUME) return { type: 'resume', bytes, ...parseResume(bytes) };
  fail('UNKNOWN_TYPE', `message type ${h & 15} not allowed in CONNECT`);
}

// ---------------------------------------------------------------- envelope (§8.1)

export interface EnvelopeHeader {
  epoch: number;
  seq: number;
  /** ciphertext | tag */
  sealed: Uint8Array;
}

/** §8.1: epoch (1) | seq (varint, < SEQ_LIMIT) | ciphertext | tag(16). */
export function buildEnvelope(epoch: number, seq: number, sealed: Uint8Array): Uint8Array {
  if (seq >= SEQ_LIMIT) fail('NONCE_EXHAUSTED', 'sequence number limit');
  return concatBytes(new Uint8Array([epoch & 0xff]), encodeVarint(seq), sealed);
}

export function parseEnvelope(b: Uint8Array): EnvelopeHeader {
  const r = new ByteReader(b);
  const epoch = r.u8();
  const { value: seq, length } = decodeVarint(b, 1);
  if (seq >= SEQ_LIMIT) fail('MALFORMED', 'sequence number out of range');
  r.bytes(length);
  if (r.remaining < TAG_LENGTH) fail('TRUNCATED', 'envelope shorter than its tag');
  return { epoch, seq, sealed: r.rest() };
}

/** AAD of an envelope (§8.1): epoch | topic (UTF-8). The topic binding stops an envelope being moved. */
export function envelopeAad(epoch: number, topic: string): Uint8Array {
  return concatBytes(new Uint8Array([epoch & 0xff]), utf8Encode(topic));
}
