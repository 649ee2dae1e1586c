/**
 * Every encoder of the firmware codec fed input of the wrong type, field by
 * field (packet, nested objects, arrays, array elements), with values of
 * every JavaScript type. Returns the cases that did not fail with an
 * MqsecError (empty when the codec is right). Platform-free: the XS codec
 * test runs it inside XS as well as under Node.
 */
import { MqsecError } from '../../firmware/core/errors.js';
import * as generate from '../../firmware/mqtt/generate.js';

const WRONG: unknown[] = [undefined, null, 0, -1, 1.5, NaN, 2 ** 40, '', 'x', true, false, {}, [], [1], new Uint8Array(1), 10n, Symbol('s'), () => 0, { toString: 0 }];

const BASE: Record<string, Record<string, unknown>> = {
  connect: {
    type: 'connect',
    clientId: 'a',
    cleanSession: true,
    keepalive: 1,
    username: 'u',
    password: new Uint8Array(1),
    will: { topic: 't', payload: new Uint8Array(1), qos: 1, retain: false },
  },
  connack: { type: 'connack', sessionPresent: false, returnCode: 0 },
  publish: { type: 'publish', topic: 't', payload: new Uint8Array(1), qos: 1, dup: false, retain: false, messageId: 1 },
  puback: { type: 'puback', messageId: 1 },
  pubrec: { type: 'pubrec', messageId: 1 },
  pubrel: { type: 'pubrel', messageId: 1 },
  pubcomp: { type: 'pubcomp', messageId: 1 },
  subscribe: { type: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/+', qos: 1 }] },
  suback: { type: 'suback', messageId: 1, granted: [0] },
  unsubscribe: { type: 'unsubscribe', messageId: 1, unsubscriptions: ['a/#'] },
  unsuback: { type: 'unsuback', messageId: 1 },
};

function label(v: unknown): string {
  if (typeof v === 'symbol' || typeof v === 'function' || typeof v === 'bigint') return typeof v;
  if (v instanceof Uint8Array) return 'Uint8Array';
  return JSON.stringify(v) ?? String(v);
}

/** Variants of `value` with one field (at any depth) replaced by each wrong value. */
function variants(value: unknown, path: string): [string, unknown][] {
  const out: [string, unknown][] = WRONG.map((w) => [`${path}=${label(w)}`, w]);
  if (Array.isArray(value)) {
    value.forEach((el, i) => {
      for (const [p, v] of variants(el, `${path}[${i}]`)) out.push([p, value.map((e, k) => (k === i ? v : e))]);
    });
  } else if (typeof value === 'object' && value !== null && !(value instanceof Uint8Array)) {
    for (const key of Object.keys(value)) {
      if (key === 'type') continue;
      for (const [p, v] of variants((value as Record<string, unknown>)[key], `${path}.${key}`)) out.push([p, { ...value, [key]: v }]);
    }
  }
  return out;
}

export function untypedEncodeFailures(): string[] {
  const failures: string[] = [];
  const encoders: [string, (p: never) => Uint8Array][] = [['encodePacket', generate.encodePacket as (p: never) => Uint8Array]];
  for (const name of Object.keys(BASE)) {
    const fn = (generate as unknown as Record<string, (p: never) => Uint8Array>)[`encode${name[0].toUpperCase()}${name.slice(1)}`];
    encoders.push([`encode${name[0].toUpperCase()}${name.slice(1)}`, fn]);
  }
  for (const [fnName, fn] of encoders) {
    const packets = fnName === 'encodePacket' ? Object.values(BASE) : [BASE[fnName.slice(6).toLowerCase()]];
    for (const base of packets) {
      for (const [path, p] of variants(base, base.type as string)) {
        try {
          fn(p as never);
        } catch (e) {
          if (!(e instanceof MqsecError)) failures.push(`${fnName}(${path}): ${e instanceof Error ? e.name : typeof e} ${e instanceof Error ? e.message : ''}`);
        }
      }
    }
  }
  return failures;
}

/** How many wrongly typed cases untypedEncodeFailures tries (so a test sees it really ran them). */
export function wrongTypeCaseCount(): number {
  let n = 0;
  for (const base of Object.values(BASE)) n += 2 * variants(base, '').length;
  return n;
}
