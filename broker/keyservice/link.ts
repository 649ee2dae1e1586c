/**
 * The link between a broker and the key service (docs/protocol.md §14.6,
 * §14.12): the small interface a broker integration implements, and the wire
 * form of its messages when the key service runs as its own process.
 *
 * Two ports, one per direction:
 *
 * - `KeyServicePort` (the broker calls it): a member's GKREQ together with
 *   the principal id the broker authenticated on that connection; "this
 *   member's connection ended"; the policy (principals with their key
 *   identity, roles and rules) whenever it changes; an operator's rotation of
 *   one group.
 * - `MemberPort` (the key service calls it): deliver this GKDEL to the
 *   principal's current connection, on `$mqsec/gk`, and to nobody else.
 *
 * Embedded (the default inside `mqsec broker`) the broker holds a
 * `KeyServiceAgent` as its KeyServicePort. Separate (`mqsec keyservice`),
 * the key service is an MQTT client of the broker, logged in as an account
 * of the reserved role `keyservice`; each port call becomes one frame below,
 * on `$mqsec/ks/in` (broker → key service, published by the broker to that
 * one client) and `$mqsec/ks/out` (key service → broker, accepted only from
 * that client). Another broker (stock Mosquitto, RabbitMQ) implements the same
 * two ports its own way.
 *
 * Nothing on the link is secret from the broker by design: GKREQs and
 * GKDELs are end to end between member and key service (§14.6), the policy
 * is the broker's own.
 */
import { fail } from '../../firmware/core/errors.js';
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import type { Action, ProtectionMode, Role } from '../policy/policy.js';

export const KS_IN_TOPIC = '$mqsec/ks/in';
export const KS_OUT_TOPIC = '$mqsec/ks/out';
/** The reserved role of the key service's account on an mqsec broker. */
export const KEYSERVICE_ROLE = 'keyservice';

/** An active principal as the key service needs it: the key identity tells it which K_ks is current. */
export interface PolicyPrincipal {
  id: string;
  role: string;
  /** Identity of the principal key (created-at/key version): a change means a new key (rotate, re-add). */
  key: string;
}

export interface PolicySnapshot {
  principals: PolicyPrincipal[];
  roles: Role[];
}

/** Broker → key service. */
export interface KeyServicePort {
  /** A GKREQ from `id`'s current connection (`id` authenticated by the broker). */
  request(id: string, gkreq: Uint8Array): void;
  /** `id`'s connection ended: its delivery answer dies with it. */
  left(id: string): void;
  /** The whole policy, after every change (and once when the link comes up). */
  policy(p: PolicySnapshot): void;
  /**
   * Operator rotation of one group (§14.3). `id` names the rotation (the
   * registry's audit sequence of `mqsec group rotate`): every node of a
   * cluster passes the same rotation on, and the key service applies each id
   * once (§14.12).
   */
  rotate(filter: string, id?: number): void;
}

/** Key service → broker. */
export interface MemberPort {
  /** Deliver a GKDEL to `id`'s current connection only, on `$mqsec/gk`. */
  deliver(id: string, gkdel: Uint8Array): void;
}

// ---- frames ---------------------------------------------------------------

export const FRAME_REQUEST = 0x01;
export const FRAME_LEFT = 0x02;
export const FRAME_POLICY = 0x03;
export const FRAME_ROTATE = 0x04;
/** A rotation with its id: 8 bytes big-endian, then the filter. */
export const FRAME_ROTATE_ID = 0x05;
export const FRAME_DELIVER = 0x81;
/** Key service → broker, first frame after connecting: its instance id (16 random bytes per process). */
export const FRAME_HELLO = 0x82;

export const INSTANCE_LENGTH = 16;
/** GKREQ is 33 B; a GKDEL carries at most 256 groups (§14.6). Bounds for the parser. */
export const MAX_GK_MESSAGE = 256 * 1024;
export const MAX_POLICY_BYTES = 64 * 1024 * 1024;

export type LinkFrame =
  | { type: 'request'; id: string; payload: Uint8Array }
  | { type: 'left'; id: string }
  | { type: 'policy'; policy: PolicySnapshot }
  | { type: 'rotate'; filter: string; id?: number }
  | { type: 'deliver'; id: string; payload: Uint8Array }
  | { type: 'hello'; instance: Uint8Array };

function withId(type: number, id: string, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = utf8Encode(id);
  if (b.length < 1 || b.length > 255) fail('MALFORMED', 'principal id length');
  const out = new Uint8Array(2 + b.length + payload.length);
  out[0] = type;
  out[1] = b.length;
  out.set(b, 2);
  out.set(payload, 2 + b.length);
  return out;
}

function withText(type: number, text: string): Uint8Array {
  const b = utf8Encode(text);
  const out = new Uint8Array(1 + b.length);
  out[0] = type;
  out.set(b, 1);
  return out;
}

export function encodeFrame(f: LinkFrame): Uint8Array {
  switch (f.type) {
    case 'request':
      return withId(FRAME_REQUEST, f.id, f.payload);
    case 'left':
      return withId(FRAME_LEFT, f.id);
    case 'policy':
      return withText(FRAME_POLICY, JSON.stringify(f.policy));
    case 'rotate': {
      if (f.id === undefined) return withText(FRAME_ROTATE, f.filter);
      if (!Number.isSafeInteger(f.id) || f.id < 0) fail('MALFORMED', 'rotation id');
      const text = withText(FRAME_ROTATE_ID, f.filter);
      const out = new Uint8Array(text.length + 8);
      out[0] = FRAME_ROTATE_ID;
      new DataView(out.buffer).setBigUint64(1, BigInt(f.id));
      out.set(text.subarray(1), 9);
      return out;
    }
    case 'deliver':
      return withId(FRAME_DELIVER, f.id, f.payload);
    case 'hello': {
      if (f.instance.length !== INSTANCE_LENGTH) fail('MALFORMED', 'instance id length');
      const out = new Uint8Array(1 + INSTANCE_LENGTH);
      out[0] = FRAME_HELLO;
      out.set(f.instance, 1);
      return out;
    }
  }
}

function readId(b: Uint8Array): { id: string; rest: Uint8Array } {
  if (b.length < 2) fail('TRUNCATED', 'link frame');
  const n = b[1]!;
  if (n < 1 || b.length < 2 + n) fail('TRUNCATED', 'link frame id');
  return { id: utf8Decode(b.subarray(2, 2 + n)), rest: b.subarray(2 + n) };
}

const ACTIONS: readonly Action[] = ['publish', 'subscribe'];
const MODES: readonly ProtectionMode[] = ['hop', 'e2e'];

/** Checks the shape of a policy read from the wire (every field typed, nothing else trusted). */
function checkPolicy(v: unknown): PolicySnapshot {
  const bad = (what: string): never => fail('MALFORMED', `policy: ${what}`);
  if (!v || typeof v !== 'object') bad('not an object');
  const p = v as Record<string, unknown>;
  if (!Array.isArray(p.principals) || !Array.isArray(p.roles)) bad('principals and roles must be arrays');
  const principals = (p.principals as unknown[]).map((x) => {
    const o = x as Record<string, unknown>;
    if (!o || typeof o.id !== 'string' || typeof o.role !== 'string' || typeof o.key !== 'string') bad('principal');
    return { id: o.id as string, role: o.role as string, key: o.key as string };
  });
  const roles = (p.roles as unknown[]).map((x) => {
    const o = x as Record<string, unknown>;
    if (!o || typeof o.name !== 'string' || typeof o.plaintext !== 'boolean' || !Array.isArray(o.rules)) bad('role');
    const rules = (o.rules as unknown[]).map((r) => {
      const q = r as Record<string, unknown>;
      if (!q || typeof q.filter !== 'string' || !ACTIONS.includes(q.action as Action)) bad('rule');
      if (q.mode !== undefined && !MODES.includes(q.mode as ProtectionMode)) bad('rule mode');
      return q.mode === 'e2e' ? { action: q.action as Action, filter: q.filter as string, mode: 'e2e' as const } : { action: q.action as Action, filter: q.filter as string };
    });
    return { name: o.name as string, plaintext: o.plaintext as boolean, rules };
  });
  return { principals, roles };
}

/** Parses one frame; throws MALFORMED / TRUNCATED / UNKNOWN_TYPE on anything else. */
export function decodeFrame(b: Uint8Array): LinkFrame {
  if (b.length < 1) fail('TRUNCATED', 'empty link frame');
  switch (b[0]) {
    case FRAME_REQUEST:
    case FRAME_DELIVER: {
      const { id, rest } = readId(b);
      if (rest.length < 1 || rest.length > MAX_GK_MESSAGE) fail('MALFORMED', 'key message size');
      return { type: b[0] === FRAME_REQUEST ? 'request' : 'deliver', id, payload: rest.slice() };
    }
    case FRAME_LEFT: {
      const { id, rest } = readId(b);
      if (rest.length !== 0) fail('MALFORMED', 'trailing bytes');
      return { type: 'left', id };
    }
    case FRAME_POLICY: {
      if (b.length - 1 > MAX_POLICY_BYTES) fail('MALFORMED', 'policy too large');
      let v: unknown;
      try {
        v = JSON.parse(utf8Decode(b.subarray(1)));
      } catch {
        fail('MALFORMED', 'policy is not JSON');
      }
      return { type: 'policy', policy: checkPolicy(v) };
    }
    case FRAME_ROTATE: {
      if (b.length < 2 || b.length > 256) fail('MALFORMED', 'group filter size');
      return { type: 'rotate', filter: utf8Decode(b.subarray(1)) };
    }
    case FRAME_ROTATE_ID: {
      if (b.length < 10 || b.length > 264) fail('MALFORMED', 'group filter size');
      const id = new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(1);
      if (id > BigInt(Number.MAX_SAFE_INTEGER)) fail('MALFORMED', 'rotation id');
      return { type: 'rotate', filter: utf8Decode(b.subarray(9)), id: Number(id) };
    }
    case FRAME_HELLO:
      if (b.length !== 1 + INSTANCE_LENGTH) fail('MALFORMED', 'hello size');
      return { type: 'hello', instance: b.slice(1) };
    default:
      fail('UNKNOWN_TYPE', `link frame 0x${b[0]!.toString(16)}`);
  }
}
