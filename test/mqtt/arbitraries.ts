/**
 * fast-check arbitraries for valid MQTT 3.1.1 packets, and converters between
 * the firmware codec's packet objects and mqtt-packet's, for cross-checking
 * the two codecs.
 */
import fc from 'fast-check';
import type { MqttPacket, QoS } from '../../firmware/mqtt/codec.js';

/** Any Unicode scalar value except U+0000 (forbidden in MQTT strings). */
export const mqttString = (maxLength = 12) =>
  fc.string({ unit: 'binary', maxLength }).filter((s) => !s.includes('\u0000'));

const level = fc.string({ unit: 'binary', maxLength: 6 }).filter((s) => !/[\u0000+#/]/.test(s));

/** Topic names: at least one character, no wildcards. */
export const topicName = fc
  .array(level, { minLength: 1, maxLength: 4 })
  .map((ls) => ls.join('/'))
  .filter((t) => t.length > 0);

/** Topic filters: levels may be '+', and the last may be '#'. */
export const topicFilter = fc
  .tuple(fc.array(fc.oneof(level, fc.constant('+')), { minLength: 1, maxLength: 4 }), fc.boolean())
  .map(([ls, hash]) => (hash ? [...ls, '#'] : ls).join('/'))
  .filter((t) => t.length > 0);

export const qos = fc.constantFrom<QoS>(0, 1, 2);
export const messageId = fc.integer({ min: 1, max: 0xffff });
export const bytes = (maxLength = 64) => fc.uint8Array({ maxLength });

const connect = fc
  .record(
    {
      clientId: mqttString(23),
      cleanSession: fc.boolean(),
      keepalive: fc.integer({ min: 0, max: 0xffff }),
      username: mqttString(16),
      password: bytes(48),
      will: fc.record({ topic: topicName, payload: bytes(32), qos, retain: fc.boolean() }),
    },
    { requiredKeys: ['clientId', 'cleanSession', 'keepalive'] },
  )
  .map((p) => {
    // [MQTT-3.1.3-7]: an empty client id requires a clean session.
    const cleanSession = p.cleanSession || p.clientId.length === 0;
    const out: MqttPacket = { type: 'connect', clientId: p.clientId, cleanSession, keepalive: p.keepalive };
    if (p.will) out.will = p.will;
    if (p.username !== undefined) {
      out.username = p.username;
      if (p.password) out.password = p.password;
    }
    return out;
  });

const connack = fc
  .integer({ min: 0, max: 5 })
  .chain((returnCode) =>
    fc.record({
      type: fc.constant('connack' as const),
      returnCode: fc.constant(returnCode),
      sessionPresent: returnCode === 0 ? fc.boolean() : fc.constant(false),
    }),
  );

const publish = fc.record({ topic: topicName, payload: bytes(200), qos, dup: fc.boolean(), retain: fc.boolean(), messageId }).map(
  (p): MqttPacket =>
    p.qos === 0
      ? { type: 'publish', topic: p.topic, payload: p.payload, qos: 0, dup: false, retain: p.retain }
      : { type: 'publish', topic: p.topic, payload: p.payload, qos: p.qos, dup: p.dup, retain: p.retain, messageId: p.messageId },
);

const idOnly = fc
  .tuple(fc.constantFrom('puback' as const, 'pubrec' as const, 'pubrel' as const, 'pubcomp' as const, 'unsuback' as const), messageId)
  .map(([type, id]): MqttPacket => ({ type, messageId: id }));

const subscribe = fc.record({
  type: fc.constant('subscribe' as const),
  messageId,
  subscriptions: fc.array(fc.record({ topic: topicFilter, qos }), { minLength: 1, maxLength: 5 }),
});

const suback = fc.record({
  type: fc.constant('suback' as const),
  messageId,
  granted: fc.array(fc.constantFrom(0, 1, 2, 0x80), { minLength: 1, maxLength: 5 }),
});

const unsubscribe = fc.record({
  type: fc.constant('unsubscribe' as const),
  messageId,
  unsubscriptions: fc.array(topicFilter, { minLength: 1, maxLength: 5 }),
});

const empty = fc.constantFrom<MqttPacket>({ type: 'pingreq' }, { type: 'pingresp' }, { type: 'disconnect' });

/** Any valid packet of any type. */
export const anyPacket: fc.Arbitrary<MqttPacket> = fc.oneof(connect, connack, publish, idOnly, subscribe, suback, unsubscribe, empty);

type Theirs = Record<string, unknown> & { cmd: string };

const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
const u8 = (b: unknown) => new Uint8Array(b as Buffer);

/** Firmware packet -> the object mqtt-packet's generate() takes. */
export function toMqttPacket(p: MqttPacket): Theirs {
  switch (p.type) {
    case 'connect': {
      const o: Theirs = { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: p.cleanSession, keepalive: p.keepalive, clientId: p.clientId };
      if (p.will) o.will = { topic: p.will.topic, payload: buf(p.will.payload), qos: p.will.qos, retain: p.will.retain };
      if (p.username !== undefined) o.username = p.username;
      if (p.password !== undefined) o.password = buf(p.password);
      return o;
    }
    case 'connack':
      return { cmd: 'connack', returnCode: p.returnCode, sessionPresent: p.sessionPresent };
    case 'publish': {
      const o: Theirs = { cmd: 'publish', topic: p.topic, payload: buf(p.payload), qos: p.qos, dup: p.dup, retain: p.retain };
      if (p.messageId !== undefined) o.messageId = p.messageId;
      return o;
    }
    case 'subscribe':
      return { cmd: 'subscribe', messageId: p.messageId, subscriptions: p.subscriptions.map((s) => ({ topic: s.topic, qos: s.qos })) };
    case 'suback':
      return { cmd: 'suback', messageId: p.messageId, granted: [...p.granted] };
    case 'unsubscribe':
      return { cmd: 'unsubscribe', messageId: p.messageId, unsubscriptions: [...p.unsubscriptions] };
    case 'puback':
    case 'pubrec':
    case 'pubrel':
    case 'pubcomp':
    case 'unsuback':
      return { cmd: p.type, messageId: p.messageId };
    default:
      return { cmd: p.type };
  }
}

/** What mqtt-packet's parser emits -> the firmware packet it should equal. */
export function fromMqttPacket(o: Theirs): MqttPacket {
  switch (o.cmd) {
    case 'connect': {
      const p: MqttPacket = { type: 'connect', clientId: o.clientId as string, cleanSession: o.clean as boolean, keepalive: o.keepalive as number };
      const will = o.will as { topic: string; payload: Buffer; qos: QoS; retain: boolean } | undefined;
      if (will) p.will = { topic: will.topic, payload: u8(will.payload), qos: will.qos, retain: will.retain };
      if (o.username !== undefined) p.username = o.username as string;
      if (o.password !== undefined) p.password = u8(o.password);
      return p;
    }
    case 'connack':
      return { type: 'connack', returnCode: o.returnCode as number, sessionPresent: o.sessionPresent as boolean };
    case 'publish': {
      const p: MqttPacket = { type: 'publish', topic: o.topic as string, payload: u8(o.payload), qos: o.qos as QoS, dup: o.dup as boolean, retain: o.retain as boolean };
      if (o.messageId !== undefined) p.messageId = o.messageId as number;
      return p;
    }
    case 'subscribe':
      return {
        type: 'subscribe',
        messageId: o.messageId as number,
        subscriptions: (o.subscriptions as { topic: string; qos: QoS }[]).map((s) => ({ topic: s.topic, qos: s.qos })),
      };
    case 'suback':
      return { type: 'suback', messageId: o.messageId as number, granted: o.granted as number[] };
    case 'unsubscribe':
      return { type: 'unsubscribe', messageId: o.messageId as number, unsubscriptions: o.unsubscriptions as string[] };
    case 'puback':
    case 'pubrec':
    case 'pubrel':
    case 'pubcomp':
    case 'unsuback':
      return { type: o.cmd, messageId: o.messageId as number };
    case 'pingreq':
    case 'pingresp':
    case 'disconnect':
      return { type: o.cmd };
    default:
      throw new Error(`unexpected mqtt-packet cmd ${o.cmd}`);
  }
}

/** Normalises Uint8Array views (subarray vs copy, Buffer vs Uint8Array) for deep equality. */
export function normalise(p: MqttPacket): unknown {
  return JSON.parse(JSON.stringify(p, (_k, v) => (v instanceof Uint8Array ? `hex:${Buffer.from(v).toString('hex')}` : v)));
}
