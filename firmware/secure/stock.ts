/**
 * mqsec beside a stock broker (docs/protocol.md §15): the broker runs no mqsec
 * code, so the key service is an MQTT client like the device, and the
 * handshake messages of §5/§6 and the key deliveries of §14.6 travel as
 * ordinary PUBLISHes on two per-principal topics. Pure functions shared by
 * the device and the key service: topic names, the bootstrap credential, and
 * which protocol topic (`$mqsec/kx` or `$mqsec/gk`) a message stands for.
 */
import { concatBytes } from '../core/bytes.js';
import { fail } from '../core/errors.js';
import { utf8Encode } from '../core/utf8.js';
import type { CryptoSuite } from '../crypto/suite.js';
import { base64urlEncode } from './base64url.js';
import { KX_TOPIC, MSG_COUNTER_HINT, MSG_KX1, MSG_KX2, MSG_KX3, MSG_RESUME_CONFIRM } from './constants.js';
import { GK_TOPIC, MSG_GKDEL, MSG_GKREQ } from './group.js';
import { encodeDevId } from './key-schedule.js';

/** §15.1: the flavours a device config may name; `mqsec` is the mqsec broker itself (§5, §6). */
export type BrokerFlavour = 'mqsec' | 'stock';

/** §15.2: root of the per-principal topics. Outside `$`, so every stock broker lets clients use it; ACLs keep it private. */
export const STOCK_ROOT = 'mqsec';
/** §15.2: user name and client id prefix of the bootstrap credential (`@` is not a principal id character; not `:`, which RabbitMQ's MQTT plugin reads as `vhost:user`). */
export const BOOT_PREFIX = 'boot@';
const L_BOOT = utf8Encode('mqsec v1 boot');
/** §15.2: 16 bytes: 128 bits, like every tag of the protocol. */
export const BOOT_SECRET_LENGTH = 16;

/** Principal → key service (KX1, KX3, GKREQ). */
export function upTopic(id: string): string {
  encodeDevId(id);
  return `${STOCK_ROOT}/up/${id}`;
}

/** Key service → principal (KX2, HINT, RC, GKDEL). */
export function downTopic(id: string): string {
  encodeDevId(id);
  return `${STOCK_ROOT}/down/${id}`;
}

/** The principal id of an up topic, or undefined (not one of ours, or a bad id). */
export function idOfUpTopic(topic: string): string | undefined {
  const prefix = `${STOCK_ROOT}/up/`;
  if (!topic.startsWith(prefix)) return undefined;
  const id = topic.slice(prefix.length);
  if (!/^[A-Za-z0-9_.-]{1,23}$/.test(id)) return undefined;
  return id;
}

export function bootUsername(id: string): string {
  encodeDevId(id);
  return BOOT_PREFIX + id;
}

/**
 * §15.2: the bootstrap password, `"~" | base64url(T16(HMAC(K_auth, "mqsec v1 boot" | id*)))`.
 * From K_auth (§4.1), which both the device and the key service of a stock
 * broker hold (never K itself). Static: it only opens the bootstrap user, which
 * may do nothing but carry KX1/KX2 for this id, so a recorded one gives
 * nothing a KX1 without K_auth could use.
 */
export function bootPassword(suite: CryptoSuite, authKey: Uint8Array, id: string): string {
  if (authKey.length !== 32) fail('BAD_KEY', 'K_auth must be 32 bytes');
  const mac = suite.hmac(authKey, concatBytes(L_BOOT, encodeDevId(id)));
  const text = '~' + base64urlEncode(mac.subarray(0, BOOT_SECRET_LENGTH));
  mac.fill(0);
  return text;
}

/**
 * §15.2: which protocol topic a message on the down topic stands for, by its
 * header byte, so the device's session sees exactly what the mqsec broker
 * would have sent it. Unknown or empty payloads → undefined (dropped).
 */
export function protocolTopicOfDown(payload: Uint8Array): string | undefined {
  if (payload.length === 0) return undefined;
  const t = payload[0];
  if (t === MSG_KX2 || t === MSG_RESUME_CONFIRM || t === MSG_COUNTER_HINT) return KX_TOPIC;
  if (t === MSG_GKDEL) return GK_TOPIC;
  return undefined;
}

/** §15.2: the message types a principal may send on its up topic. */
export function isUpMessage(payload: Uint8Array): boolean {
  if (payload.length === 0) return false;
  const t = payload[0];
  return t === MSG_KX1 || t === MSG_KX3 || t === MSG_GKREQ;
}
