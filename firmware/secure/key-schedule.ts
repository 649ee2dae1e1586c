/**
 * Key schedule and transcript hash (docs/protocol.md §4), as pure functions
 * of their inputs: no state, no randomness, so test vectors pin every byte.
 *
 * Notation: Extract/Expand are HKDF (RFC 5869) with the suite hash; every
 * Expand info starts with a fixed ASCII label "mqsec v1 ..." (domain
 * separation), followed by the context it binds.
 */
import { concatBytes } from '../core/bytes.js';
import { fail } from '../core/errors.js';
import { utf8Encode } from '../core/utf8.js';
import type { CryptoSuite } from '../crypto/suite.js';
import { DEV_ID_MAX_BYTES, DEVICE_KEY_LENGTH, SID_LENGTH, TAG_LENGTH } from './constants.js';

const label = (s: string): Uint8Array => utf8Encode(`mqsec v1 ${s}`);
const L_SALT = utf8Encode('mqsec v1');
const L_AUTH = label('auth');
const L_PSK = label('psk');
const L_KX1 = label('kx1');
const L_TH = label('th');
const L_KC_S = label('kc s');
const L_KC_D = label('kc d');
const L_SID = label('sid');
const L_TOK = label('tok');
const L_RES = label('res');
const L_TRAFFIC = label('tr');
const L_NEXT = label('next');
const L_KEYS = label('keys');
const L_RESUME = label('resume');
const L_CHANNEL = label('ch');
const L_RC = label('rc');
const L_HINT = label('hint');

/** devId as bound into MACs and hashes: u8 length | UTF-8 bytes (§4.1). */
export function encodeDevId(devId: string): Uint8Array {
  const b = utf8Encode(devId);
  if (b.length < 1 || b.length > DEV_ID_MAX_BYTES) fail('MALFORMED', 'devId must be 1..23 UTF-8 bytes');
  return concatBytes(new Uint8Array([b.length]), b);
}

export function truncateTag(mac: Uint8Array): Uint8Array {
  return mac.slice(0, TAG_LENGTH);
}

export interface DeviceKeys {
  /** K_auth: authenticates KX1 (checked before any public-key operation). */
  authKey: Uint8Array;
  /** K_psk: salts the phase-1 extract, so session keys need both K_dev and the DH secret. */
  pskKey: Uint8Array;
}

/** §4.1: PRK_dev = Extract("mqsec v1", K_dev); K_auth, K_psk = Expand(PRK_dev, label | devId, 32). */
export function deriveDeviceKeys(suite: CryptoSuite, deviceKey: Uint8Array, devId: string): DeviceKeys {
  if (deviceKey.length !== DEVICE_KEY_LENGTH) fail('BAD_KEY', 'device key must be 32 bytes');
  const id = encodeDevId(devId);
  const prk = suite.hkdfExtract(L_SALT, deviceKey);
  const authKey = suite.hkdfExpand(prk, concatBytes(L_AUTH, id), 32);
  const pskKey = suite.hkdfExpand(prk, concatBytes(L_PSK, id), 32);
  prk.fill(0);
  return { authKey, pskKey };
}

/** §5.1: tag1 = HMAC(K_auth, "mqsec v1 kx1" | devId | KX1 without its tag)[0..16]. */
export function kx1Tag(suite: CryptoSuite, authKey: Uint8Array, devId: string, kx1Body: Uint8Array): Uint8Array {
  return truncateTag(suite.hmac(authKey, concatBytes(L_KX1, encodeDevId(devId), kx1Body)));
}

/** §4.2: TH = Hash("mqsec v1 th" | devId | KX1 (whole, tag included) | KX2 without its tag). */
export function transcriptHash(suite: CryptoSuite, devId: string, kx1: Uint8Array, kx2Body: Uint8Array): Uint8Array {
  return suite.hash(concatBytes(L_TH, encodeDevId(devId), kx1, kx2Body));
}

export interface Phase1Secrets {
  /** Broker key-confirmation key (tag2). */
  confirmServerKey: Uint8Array;
  /** Device key-confirmation key (tag3). */
  confirmDeviceKey: Uint8Array;
  /** Session (ticket) id, derived: neither side chooses it alone. */
  sid: Uint8Array;
  /** K_tok: MAC key of resume tokens for this ticket (§6.1). */
  ticketAuthKey: Uint8Array;
  /** S at chain index (KX1 counter + 1): start of the resumption chain (§4.4). */
  chainKey: Uint8Array;
  /** Traffic secret of the phase-1 connection itself (§4.5). */
  trafficSecret: Uint8Array;
}

/** §4.3: PRK_1 = Extract(salt = K_psk, ikm = Z); each secret = Expand(PRK_1, label | TH, n). */
export function derivePhase1Secrets(suite: CryptoSuite, pskKey: Uint8Array, sharedSecret: Uint8Array, th: Uint8Array): Phase1Secrets {
  const prk = suite.hkdfExtract(pskKey, sharedSecret);
  const x = (l: Uint8Array, n: number) => suite.hkdfExpand(prk, concatBytes(l, th), n);
  const out: Phase1Secrets = {
    confirmServerKey: x(L_KC_S, 32),
    confirmDeviceKey: x(L_KC_D, 32),
    sid: x(L_SID, SID_LENGTH),
    ticketAuthKey: x(L_TOK, 32),
    chainKey: x(L_RES, 32),
    trafficSecret: x(L_TRAFFIC, 32),
  };
  prk.fill(0);
  return out;
}

/** §5.3: tag2 = HMAC(kc_s, TH)[0..16]. */
export function kx2Tag(suite: CryptoSuite, confirmServerKey: Uint8Array, th: Uint8Array): Uint8Array {
  return truncateTag(suite.hmac(confirmServerKey, th));
}

/** §5.4: tag3 = HMAC(kc_d, TH)[0..16] (a different key from tag2, same transcript). */
export function kx3Tag(suite: CryptoSuite, confirmDeviceKey: Uint8Array, th: Uint8Array): Uint8Array {
  return truncateTag(suite.hmac(confirmDeviceKey, th));
}

/** §6.1: tag = HMAC(K_tok, "mqsec v1 resume" | devId | token without its tag)[0..16]. */
export function resumeTag(suite: CryptoSuite, ticketAuthKey: Uint8Array, devId: string, resumeBody: Uint8Array): Uint8Array {
  return truncateTag(suite.hmac(ticketAuthKey, concatBytes(L_RESUME, encodeDevId(devId), resumeBody)));
}

/** §4.4: S_{i+1} = Expand(S_i, "mqsec v1 next", 32). One-way: S_i cannot be recomputed from S_{i+1}. */
export function chainNext(suite: CryptoSuite, chainKey: Uint8Array): Uint8Array {
  return suite.hkdfExpand(chainKey, L_NEXT, 32);
}

/**
 * §4.4: walks the chain from (index, key) to `target` >= index. Intermediate
 * keys are zeroised; the input key is left to the caller.
 */
export function chainAdvance(suite: CryptoSuite, index: number, key: Uint8Array, target: number): Uint8Array {
  if (target < index) fail('COUNTER_ROLLBACK', 'chain cannot move backwards');
  let k: Uint8Array = key.slice();
  for (let i = index; i < target; i++) {
    const n = chainNext(suite, k);
    k.fill(0);
    k = n;
  }
  return k;
}

/**
 * §4.5: traffic secret of the connection resumed with counter c and broker
 * nonce N_s: T_c = Expand(S_c, "mqsec v1 tr" | N_s, 32). The broker's fresh
 * N_s makes every accepted RESUME a new key, even one the broker accepts
 * twice after its state was rolled back (§6.4).
 */
export function resumeTrafficSecret(suite: CryptoSuite, chainKeyAtCounter: Uint8Array, brokerNonce: Uint8Array): Uint8Array {
  return suite.hkdfExpand(chainKeyAtCounter, concatBytes(L_TRAFFIC, brokerNonce), 32);
}

/** §6.4: tag_rc = HMAC(T_c, "mqsec v1 rc" | RC without its tag)[0..16]: the broker holds T_c. */
export function resumeConfirmTag(suite: CryptoSuite, trafficSecret: Uint8Array, confirmBody: Uint8Array): Uint8Array {
  return truncateTag(suite.hmac(trafficSecret, concatBytes(L_RC, confirmBody)));
}

/**
 * §5.5: tag_h = HMAC(K_auth, "mqsec v1 hint" | devId | KX1 (whole) | HINT without its tag)[0..16].
 * Bound to the KX1 it answers, hence to that attempt's fresh X_d.
 */
export function counterHintTag(suite: CryptoSuite, authKey: Uint8Array, devId: string, kx1: Uint8Array, hintBody: Uint8Array): Uint8Array {
  return truncateTag(suite.hmac(authKey, concatBytes(L_HINT, encodeDevId(devId), kx1, hintBody)));
}

export interface TrafficKeys {
  deviceToBrokerKey: Uint8Array;
  deviceToBrokerIv: Uint8Array;
  brokerToDeviceKey: Uint8Array;
  brokerToDeviceIv: Uint8Array;
  /** §14.5: MAC key of the integrity-only channel (device -> broker) for end-to-end topics. */
  channelKey: Uint8Array;
}

/**
 * §4.5: Expand(T, "mqsec v1 keys", 88) = key_d2b(32) | iv_d2b(12) | key_b2d(32) | iv_b2d(12);
 * §14.5: K_ch = Expand(T, "mqsec v1 ch", 32), a separate output so the AEAD keys stay as they were.
 */
export function trafficKeys(suite: CryptoSuite, trafficSecret: Uint8Array): TrafficKeys {
  const kl = suite.aeadKeyLength;
  const nl = suite.aeadNonceLength;
  const okm = suite.hkdfExpand(trafficSecret, L_KEYS, 2 * (kl + nl));
  const keys = {
    deviceToBrokerKey: okm.slice(0, kl),
    deviceToBrokerIv: okm.slice(kl, kl + nl),
    brokerToDeviceKey: okm.slice(kl + nl, 2 * kl + nl),
    brokerToDeviceIv: okm.slice(2 * kl + nl),
    channelKey: suite.hkdfExpand(trafficSecret, L_CHANNEL, 32),
  };
  okm.fill(0);
  return keys;
}
