/**
 * MQTT 3.1.1 parser: one pure function per packet type, each taking the
 * fixed-header flags and the body (the Remaining Length bytes), plus
 * `decodePacket` for one complete packet. Input is untrusted: every read is
 * bounded (ByteReader) and every defect becomes an MqsecError:
 *
 * - UNKNOWN_TYPE        packet type 0 or 15 (reserved)
 * - MALFORMED           reserved fixed-header or CONNECT flag bits set, bad
 *                       Remaining Length, trailing bytes after the last field
 * - TRUNCATED           a field runs past the end of the packet
 * - INVALID_UTF8        a string is not strict UTF-8 or contains U+0000
 * - PROTOCOL_VIOLATION  well-formed bytes that break a rule of the spec:
 *                       wildcard or empty PUBLISH topic, QoS 3, packet id 0,
 *                       protocol other than "MQTT" level 4, empty SUBSCRIBE ...
 * - OVERSIZE            (stream parser) packet larger than the configured maximum
 *
 * Binary fields of a decoded packet (payload, password) are views into the
 * input bytes, not copies.
 */
import { ByteReader } from '../core/bytes.js';
import { fail } from '../core/errors.js';
import { utf8Decode } from '../core/utf8.js';
import { decodeRemainingLength } from '../core/varint.js';
import { checkTopicFilter, checkTopicName } from './topic.js';
import {
  SUBACK_FAILURE,
  type ConnackPacket,
  type ConnectPacket,
  type DisconnectPacket,
  type MqttPacket,
  type PacketTypeName,
  type PingreqPacket,
  type PingrespPacket,
  type PubackPacket,
  type PubcompPacket,
  type PublishPacket,
  type PubrecPacket,
  type PubrelPacket,
  type QoS,
  type SubackPacket,
  type SubscribePacket,
  type UnsubackPacket,
  type UnsubscribePacket,
  type Subscription,
  type Will,
} from './packets.js';

const TYPE_NAMES: readonly (PacketTypeName | undefined)[] = Object.freeze([
  undefined,
  'connect',
  'connack',
  'publish',
  'puback',
  'pubrec',
  'pubrel',
  'pubcomp',
  'subscribe',
  'suback',
  'unsubscribe',
  'unsuback',
  'pingreq',
  'pingresp',
  'disconnect',
  undefined,
]);

/**
 * Validates the first byte of a packet: a known type and the flag bits
 * section 2.2.2 fixes for it (PUBLISH flags are free; PUBREL, SUBSCRIBE and
 * UNSUBSCRIBE must be 0010; all others 0000). Returns the type name.
 * The stream parser calls this before reading anything else.
 */
export function checkFirstByte(firstByte: number): PacketTypeName {
  const name = TYPE_NAMES[firstByte >> 4];
  if (name === undefined) fail('UNKNOWN_TYPE', `reserved packet type ${firstByte >> 4}`);
  const flags = firstByte & 0x0f;
  if (name === 'publish') return name;
  const expected = name === 'pubrel' || name === 'subscribe' || name === 'unsubscribe' ? 0x02 : 0x00;
  if (flags !== expected) fail('MALFORMED', `reserved flag bits ${flags} on ${name}`);
  return name;
}

function readString(r: ByteReader): string {
  return utf8Decode(r.bytes(r.u16()), true);
}

function readBinary(r: ByteReader): Uint8Array {
  return r.bytes(r.u16());
}

function readMessageId(r: ByteReader): number {
  const id = r.u16();
  if (id === 0) fail('PROTOCOL_VIOLATION', 'packet identifier 0');
  return id;
}

function toQos(n: number, what: string): QoS {
  if (n !== 0 && n !== 1 && n !== 2) fail('PROTOCOL_VIOLATION', `${what} QoS ${n}`);
  return n;
}

export function decodeConnect(_flags: number, body: Uint8Array): ConnectPacket {
  const r = new ByteReader(body);
  const name = readString(r);
  if (name !== 'MQTT') fail('PROTOCOL_VIOLATION', `protocol name ${JSON.stringify(name)} is not MQTT`);
  const level = r.u8();
  if (level !== 4) fail('PROTOCOL_VIOLATION', `protocol level ${level} is not 4 (MQTT 3.1.1)`);
  const flags = r.u8();
  if (flags & 0x01) fail('MALFORMED', 'reserved CONNECT flag set'); // [MQTT-3.1.2-3]
  const hasWill = (flags & 0x04) !== 0;
  const willQos = (flags >> 3) & 0x03;
  const willRetain = (flags & 0x20) !== 0;
  const hasPassword = (flags & 0x40) !== 0;
  const hasUsername = (flags & 0x80) !== 0;
  if (!hasWill && (willQos !== 0 || willRetain)) fail('PROTOCOL_VIOLATION', 'will QoS/retain without will flag');
  if (hasPassword && !hasUsername) fail('PROTOCOL_VIOLATION', 'password without username');
  const keepalive = r.u16();
  const p: ConnectPacket = { type: 'connect', clientId: readString(r), cleanSession: (flags & 0x02) !== 0, keepalive };
  if (hasWill) {
    const topic = readString(r);
    checkTopicName(topic);
    const will: Will = { topic, payload: readBinary(r), qos: toQos(willQos, 'will'), retain: willRetain };
    p.will = will;
  }
  if (hasUsername) p.username = readString(r);
  if (hasPassword) p.password = readBinary(r);
  r.end();
  return p;
}

export function decodeConnack(_flags: number, body: Uint8Array): ConnackPacket {
  const r = new ByteReader(body);
  const ack = r.u8();
  if (ack & 0xfe) fail('MALFORMED', 'reserved CONNACK flag bits set');
  const returnCode = r.u8();
  r.end();
  if (returnCode > 5) fail('PROTOCOL_VIOLATION', `CONNACK return code ${returnCode}`);
  if (ack && returnCode !== 0) fail('PROTOCOL_VIOLATION', 'session present on a refused CONNACK');
  return { type: 'connack', sessionPresent: ack === 1, returnCode };
}

export function decodePublish(flags: number, body: Uint8Array): PublishPacket {
  const qos = toQos((flags >> 1) & 0x03, 'PUBLISH');
  const dup = (flags & 0x08) !== 0;
  if (qos === 0 && dup) fail('PROTOCOL_VIOLATION', 'DUP set on a QoS 0 PUBLISH');
  const r = new ByteReader(body);
  const topic = readString(r);
  checkTopicName(topic);
  const p: PublishPacket = { type: 'publish', topic, payload: new Uint8Array(0), qos, dup, retain: (flags & 0x01) !== 0 };
  if (qos > 0) p.messageId = readMessageId(r);
  p.payload = r.rest();
  return p;
}

function decodeIdOnly(body: Uint8Array): number {
  const r = new ByteReader(body);
  const id = readMessageId(r);
  r.end();
  return id;
}

export function decodePuback(_flags: number, body: Uint8Array): PubackPacket {
  return { type: 'puback', messageId: decodeIdOnly(body) };
}

export function decodePubrec(_flags: number, body: Uint8Array): PubrecPacket {
  return { type: 'pubrec', messageId: decodeIdOnly(body) };
}

export function decodePubrel(_flags: number, body: Uint8Array): PubrelPacket {
  return { type: 'pubrel', messageId: decodeIdOnly(body) };
}

export function decodePubcomp(_flags: number, body: Uint8Array): PubcompPacket {
  return { type: 'pubcomp', messageId: decodeIdOnly(body) };
}

export function decodeSubscribe(_flags: number, body: Uint8Array): SubscribePacket {
  const r = new ByteReader(body);
  const messageId = readMessageId(r);
  const subscriptions: Subscription[] = [];
  while (r.remaining > 0) {
    const topic = readString(r);
    checkTopicFilter(topic);
    const q = r.u8();
    if (q & 0xfc) fail('MALFORMED', 'reserved bits in requested QoS'); // [MQTT-3.8.3-4]
    subscriptions.push({ topic, qos: toQos(q, 'requested') });
  }
  if (subscriptions.length === 0) fail('PROTOCOL_VIOLATION', 'SUBSCRIBE without topic filters'); // [MQTT-3.8.3-3]
  return { type: 'subscribe', messageId, subscriptions };
}

export function decodeSuback(_flags: number, body: Uint8Array): SubackPacket {
  const r = new ByteReader(body);
  const messageId = readMessageId(r);
  const granted: number[] = [];
  while (r.remaining > 0) {
    const g = r.u8();
    if (g !== 0 && g !== 1 && g !== 2 && g !== SUBACK_FAILURE) fail('PROTOCOL_VIOLATION', `SUBACK return code ${g}`);
    granted.push(g);
  }
  if (granted.length === 0) fail('PROTOCOL_VIOLATION', 'SUBACK without return codes');
  return { type: 'suback', messageId, granted };
}

export function decodeUnsubscribe(_flags: number, body: Uint8Array): UnsubscribePacket {
  const r = new ByteReader(body);
  const messageId = readMessageId(r);
  const unsubscriptions: string[] = [];
  while (r.remaining > 0) {
    const topic = readString(r);
    checkTopicFilter(topic);
    unsubscriptions.push(topic);
  }
  if (unsubscriptions.length === 0) fail('PROTOCOL_VIOLATION', 'UNSUBSCRIBE without topic filters'); // [MQTT-3.10.3-2]
  return { type: 'unsubscribe', messageId, unsubscriptions };
}

export function decodeUnsuback(_flags: number, body: Uint8Array): UnsubackPacket {
  return { type: 'unsuback', messageId: decodeIdOnly(body) };
}

function checkEmpty(body: Uint8Array, name: string): void {
  if (body.length !== 0) fail('MALFORMED', `${name} with a non-empty body`);
}

export function decodePingreq(_flags: number, body: Uint8Array): PingreqPacket {
  checkEmpty(body, 'PINGREQ');
  return { type: 'pingreq' };
}

export function decodePingresp(_flags: number, body: Uint8Array): PingrespPacket {
  checkEmpty(body, 'PINGRESP');
  return { type: 'pingresp' };
}

export function decodeDisconnect(_flags: number, body: Uint8Array): DisconnectPacket {
  checkEmpty(body, 'DISCONNECT');
  return { type: 'disconnect' };
}

/**
 * Decodes a packet body once the fixed header is known. `firstByte` must
 * already have passed checkFirstByte (decodeBody checks it again anyway).
 */
export function decodeBody(firstByte: number, body: Uint8Array): MqttPacket {
  const name = checkFirstByte(firstByte);
  const flags = firstByte & 0x0f;
  switch (name) {
    case 'connect':
      return decodeConnect(flags, body);
    case 'connack':
      return decodeConnack(flags, body);
    case 'publish':
      return decodePublish(flags, body);
    case 'puback':
      return decodePuback(flags, body);
    case 'pubrec':
      return decodePubrec(flags, body);
    case 'pubrel':
      return decodePubrel(flags, body);
    case 'pubcomp':
      return decodePubcomp(flags, body);
    case 'subscribe':
      return decodeSubscribe(flags, body);
    case 'suback':
      return decodeSuback(flags, body);
    case 'unsubscribe':
      return decodeUnsubscribe(flags, body);
    case 'unsuback':
      return decodeUnsuback(flags, body);
    case 'pingreq':
      return decodePingreq(flags, body);
    case 'pingresp':
      return decodePingresp(flags, body);
    case 'disconnect':
      return decodeDisconnect(flags, body);
  }
}

/**
 * Decodes exactly one complete packet (fixed header + body). Fails with
 * TRUNCATED when bytes are missing and MALFORMED when bytes are left over.
 */
export function decodePacket(bytes: Uint8Array): MqttPacket {
  if (bytes.length < 2) fail('TRUNCATED', 'packet shorter than a fixed header');
  checkFirstByte(bytes[0]);
  const rl = decodeRemainingLength(bytes, 1);
  if (rl === undefined) fail('TRUNCATED', 'remaining length incomplete');
  const start = 1 + rl.length;
  const end = start + rl.value;
  if (end > bytes.length) fail('TRUNCATED', `packet needs ${end} bytes, have ${bytes.length}`);
  if (end < bytes.length) fail('MALFORMED', `${bytes.length - end} bytes after the packet`);
  return decodeBody(bytes[0], bytes.subarray(start, end));
}

