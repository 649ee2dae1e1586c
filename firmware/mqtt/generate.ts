/**
 * MQTT 3.1.1 generator: one pure function per packet type, each returning the
 * complete packet bytes (fixed header included). The generator refuses to
 * produce what a conforming peer must reject (wildcards in a PUBLISH topic,
 * a password without a username, packet id 0, ...), failing with the same
 * MqsecError codes the parser uses for the same defect. Input of the wrong
 * type (a packet from untyped code or JSON) fails with MALFORMED, or with the
 * code of the range check it fails, never with a plain TypeError.
 */
import { fail } from '../core/errors.js';
import { utf8Encode } from '../core/utf8.js';
import { encodeRemainingLength } from '../core/varint.js';
import { checkTopicFilter, checkTopicName } from './topic.js';
import {
  MAX_FIELD_LENGTH,
  PacketType,
  SUBACK_FAILURE,
  type ConnackPacket,
  type ConnectPacket,
  type DisconnectPacket,
  type MqttPacket,
  type PingreqPacket,
  type PingrespPacket,
  type PubackPacket,
  type PubcompPacket,
  type PublishPacket,
  type PubrecPacket,
  type PubrelPacket,
  type SubackPacket,
  type SubscribePacket,
  type UnsubackPacket,
  type UnsubscribePacket,
} from './packets.js';

/** Protocol name "MQTT" and level 4 (section 3.1.2.1-2). */
const PROTOCOL_NAME = new Uint8Array([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54]);
const PROTOCOL_LEVEL = 4;

/** Writes into a buffer sized up front, so a packet is one allocation. */
class Writer {
  readonly bytes: Uint8Array;
  private off = 0;
  constructor(firstByte: number, remainingLength: number) {
    const rl = encodeRemainingLength(remainingLength);
    this.bytes = new Uint8Array(1 + rl.length + remainingLength);
    this.bytes[0] = firstByte;
    this.bytes.set(rl, 1);
    this.off = 1 + rl.length;
  }
  u8(n: number): void {
    this.bytes[this.off++] = n;
  }
  u16(n: number): void {
    this.bytes[this.off++] = (n >>> 8) & 0xff;
    this.bytes[this.off++] = n & 0xff;
  }
  raw(b: Uint8Array): void {
    this.bytes.set(b, this.off);
    this.off += b.length;
  }
  /** A length-prefixed field (string already UTF-8 encoded, or binary data). */
  field(b: Uint8Array): void {
    this.u16(b.length);
    this.raw(b);
  }
}

/** UTF-8 string field, checked: no U+0000 (section 1.5.3), at most 65535 bytes. */
function encodeString(s: string, what: string): Uint8Array {
  if (typeof s !== 'string') fail('MALFORMED', `${what} must be a string`);
  if (s.indexOf('\u0000') >= 0) fail('INVALID_UTF8', `U+0000 in ${what}`);
  const b = utf8Encode(s);
  if (b.length > MAX_FIELD_LENGTH) fail('OVERSIZE', `${what} longer than 65535 bytes`);
  return b;
}

function checkBinary(b: Uint8Array, what: string): Uint8Array {
  if (!(b instanceof Uint8Array)) fail('MALFORMED', `${what} must be a Uint8Array`);
  if (b.length > MAX_FIELD_LENGTH) fail('OVERSIZE', `${what} longer than 65535 bytes`);
  return b;
}

/**
 * A value for an error message that cannot itself throw: String() on an
 * object whose toString/valueOf are not callable raises a plain TypeError.
 */
function describeValue(v: unknown): string {
  return typeof v === 'number' ? String(v) : typeof v;
}

/** An integer in min..max; anything else (another type included) fails PROTOCOL_VIOLATION. */
function checkInt(n: unknown, min: number, max: number, what: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) fail('PROTOCOL_VIOLATION', `${what} ${describeValue(n)} not in ${min}..${max}`);
  return n;
}

function checkMessageId(id: number | undefined): number {
  return checkInt(id, 1, 0xffff, 'packet identifier');
}

function checkQos(qos: number, what: string): number {
  return checkInt(qos, 0, 2, `${what} QoS`);
}

function checkFlag(b: boolean, what: string): boolean {
  if (typeof b !== 'boolean') fail('MALFORMED', `${what} must be a boolean`);
  return b;
}

function checkObject(o: object, what: string): void {
  if (typeof o !== 'object' || o === null) fail('MALFORMED', `${what} must be an object`);
}

function checkArray<T>(a: T[], what: string): T[] {
  if (!Array.isArray(a)) fail('MALFORMED', `${what} must be an array`);
  return a;
}

export function encodeConnect(p: ConnectPacket): Uint8Array {
  checkObject(p, 'packet');
  checkInt(p.keepalive, 0, 0xffff, 'keepalive');
  const clientId = encodeString(p.clientId, 'client id');
  // [MQTT-3.1.3-7]: a zero-length client id is only allowed with a clean session.
  if (clientId.length === 0 && !checkFlag(p.cleanSession, 'cleanSession')) fail('PROTOCOL_VIOLATION', 'empty client id needs cleanSession');
  let flags = checkFlag(p.cleanSession, 'cleanSession') ? 0x02 : 0;
  let length = PROTOCOL_NAME.length + 1 + 1 + 2 + 2 + clientId.length;
  let willTopic: Uint8Array | undefined;
  let willPayload: Uint8Array | undefined;
  if (p.will !== undefined) {
    checkObject(p.will, 'will');
    checkTopicName(p.will.topic);
    willTopic = encodeString(p.will.topic, 'will topic');
    willPayload = checkBinary(p.will.payload, 'will payload');
    flags |= 0x04 | (checkQos(p.will.qos, 'will') << 3) | (checkFlag(p.will.retain, 'will retain') ? 0x20 : 0);
    length += 2 + willTopic.length + 2 + willPayload.length;
  }
  let username: Uint8Array | undefined;
  if (p.username !== undefined) {
    username = encodeString(p.username, 'username');
    flags |= 0x80;
    length += 2 + username.length;
  }
  let password: Uint8Array | undefined;
  if (p.password !== undefined) {
    // [MQTT-3.1.2-22]: no password flag without the username flag.
    if (username === undefined) fail('PROTOCOL_VIOLATION', 'password without username');
    password = checkBinary(p.password, 'password');
    flags |= 0x40;
    length += 2 + password.length;
  }
  const w = new Writer(PacketType.connect << 4, length);
  w.raw(PROTOCOL_NAME);
  w.u8(PROTOCOL_LEVEL);
  w.u8(flags);
  w.u16(p.keepalive);
  w.field(clientId);
  if (willTopic && willPayload) {
    w.field(willTopic);
    w.field(willPayload);
  }
  if (username) w.field(username);
  if (password) w.field(password);
  return w.bytes;
}

export function encodeConnack(p: ConnackPacket): Uint8Array {
  checkObject(p, 'packet');
  checkInt(p.returnCode, 0, 5, 'CONNACK return code');
  // [MQTT-3.2.2-4]: session present is 0 whenever the connection is refused.
  if (checkFlag(p.sessionPresent, 'sessionPresent') && p.returnCode !== 0) fail('PROTOCOL_VIOLATION', 'session present on a refused CONNACK');
  const w = new Writer(PacketType.connack << 4, 2);
  w.u8(p.sessionPresent ? 1 : 0);
  w.u8(p.returnCode);
  return w.bytes;
}

export function encodePublish(p: PublishPacket): Uint8Array {
  checkObject(p, 'packet');
  const qos = checkQos(p.qos, 'PUBLISH');
  checkTopicName(p.topic);
  checkFlag(p.retain, 'retain');
  // [MQTT-3.3.1-2]: DUP is 0 for QoS 0.
  if (qos === 0 && checkFlag(p.dup, 'dup')) fail('PROTOCOL_VIOLATION', 'DUP set on a QoS 0 PUBLISH');
  if (qos === 0 && p.messageId !== undefined) fail('PROTOCOL_VIOLATION', 'packet identifier on a QoS 0 PUBLISH');
  const topic = encodeString(p.topic, 'topic');
  if (!(p.payload instanceof Uint8Array)) fail('MALFORMED', 'payload must be a Uint8Array');
  const length = 2 + topic.length + (qos > 0 ? 2 : 0) + p.payload.length;
  const w = new Writer((PacketType.publish << 4) | (p.dup ? 0x08 : 0) | (qos << 1) | (p.retain ? 1 : 0), length);
  w.field(topic);
  if (qos > 0) w.u16(checkMessageId(p.messageId));
  w.raw(p.payload);
  return w.bytes;
}

function encodeIdOnly(firstByte: number, p: { messageId: number }): Uint8Array {
  checkObject(p, 'packet');
  const w = new Writer(firstByte, 2);
  w.u16(checkMessageId(p.messageId));
  return w.bytes;
}

export function encodePuback(p: PubackPacket): Uint8Array {
  return encodeIdOnly(PacketType.puback << 4, p);
}

export function encodePubrec(p: PubrecPacket): Uint8Array {
  return encodeIdOnly(PacketType.pubrec << 4, p);
}

/** PUBREL carries fixed-header flags 0010 [MQTT-3.6.1-1]. */
export function encodePubrel(p: PubrelPacket): Uint8Array {
  return encodeIdOnly((PacketType.pubrel << 4) | 0x02, p);
}

export function encodePubcomp(p: PubcompPacket): Uint8Array {
  return encodeIdOnly(PacketType.pubcomp << 4, p);
}

export function encodeSubscribe(p: SubscribePacket): Uint8Array {
  checkObject(p, 'packet');
  if (checkArray(p.subscriptions, 'subscriptions').length === 0) fail('PROTOCOL_VIOLATION', 'SUBSCRIBE without topic filters');
  const filters: Uint8Array[] = [];
  let length = 2;
  for (const s of p.subscriptions) {
    checkObject(s, 'subscription');
    checkTopicFilter(s.topic);
    checkQos(s.qos, 'requested');
    const f = encodeString(s.topic, 'topic filter');
    filters.push(f);
    length += 2 + f.length + 1;
  }
  const w = new Writer((PacketType.subscribe << 4) | 0x02, length);
  w.u16(checkMessageId(p.messageId));
  for (let i = 0; i < filters.length; i++) {
    w.field(filters[i]);
    w.u8(p.subscriptions[i].qos);
  }
  return w.bytes;
}

export function encodeSuback(p: SubackPacket): Uint8Array {
  checkObject(p, 'packet');
  for (const g of checkArray(p.granted, 'granted')) {
    if (g !== 0 && g !== 1 && g !== 2 && g !== SUBACK_FAILURE) fail('PROTOCOL_VIOLATION', `SUBACK return code ${describeValue(g)}`);
  }
  const w = new Writer(PacketType.suback << 4, 2 + p.granted.length);
  w.u16(checkMessageId(p.messageId));
  for (const g of p.granted) w.u8(g);
  return w.bytes;
}

export function encodeUnsubscribe(p: UnsubscribePacket): Uint8Array {
  checkObject(p, 'packet');
  if (checkArray(p.unsubscriptions, 'unsubscriptions').length === 0) fail('PROTOCOL_VIOLATION', 'UNSUBSCRIBE without topic filters');
  const filters: Uint8Array[] = [];
  let length = 2;
  for (const t of p.unsubscriptions) {
    checkTopicFilter(t);
    const f = encodeString(t, 'topic filter');
    filters.push(f);
    length += 2 + f.length;
  }
  const w = new Writer((PacketType.unsubscribe << 4) | 0x02, length);
  w.u16(checkMessageId(p.messageId));
  for (const f of filters) w.field(f);
  return w.bytes;
}

export function encodeUnsuback(p: UnsubackPacket): Uint8Array {
  return encodeIdOnly(PacketType.unsuback << 4, p);
}

export function encodePingreq(_p?: PingreqPacket): Uint8Array {
  return new Uint8Array([PacketType.pingreq << 4, 0]);
}

export function encodePingresp(_p?: PingrespPacket): Uint8Array {
  return new Uint8Array([PacketType.pingresp << 4, 0]);
}

export function encodeDisconnect(_p?: DisconnectPacket): Uint8Array {
  return new Uint8Array([PacketType.disconnect << 4, 0]);
}

/** Encodes any packet; dispatches on `type` to the per-type generator. */
export function encodePacket(p: MqttPacket): Uint8Array {
  checkObject(p, 'packet');
  switch (p.type) {
    case 'connect':
      return encodeConnect(p);
    case 'connack':
      return encodeConnack(p);
    case 'publish':
      return encodePublish(p);
    case 'puback':
      return encodePuback(p);
    case 'pubrec':
      return encodePubrec(p);
    case 'pubrel':
      return encodePubrel(p);
    case 'pubcomp':
      return encodePubcomp(p);
    case 'subscribe':
      return encodeSubscribe(p);
    case 'suback':
      return encodeSuback(p);
    case 'unsubscribe':
      return encodeUnsubscribe(p);
    case 'unsuback':
      return encodeUnsuback(p);
    case 'pingreq':
      return encodePingreq(p);
    case 'pingresp':
      return encodePingresp(p);
    case 'disconnect':
      return encodeDisconnect(p);
    default:
      return fail('UNKNOWN_TYPE', `unknown packet type ${String((p as { type: unknown }).type)}`);
  }
}
