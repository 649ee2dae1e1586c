/**
 * The registry split (docs/protocol.md §14.2): a principal key K is turned,
 * once, at provisioning, into what each side needs, and then forgotten:
 *
 *   K ─┬─ K_auth, K_psk   the broker's registry (phases 1 and 2, §4.1)
 *      └─ K_ks            the key service's own store (§14.6)
 *
 * Neither side can compute the other's keys from what it holds (HKDF
 * outputs under different labels), so a broker never holds what opens a
 * group key delivery. K itself is printed once / written to the device
 * config and never stored.
 */
import { deriveDeviceKeys } from '../../firmware/secure/key-schedule.js';
import { deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';

const suite = createNodeCryptoSuite();

export interface SplitKeys {
  /** K_auth | K_psk (64 bytes): what the broker stores. */
  handshake: Uint8Array;
  /** K_ks: what the key service stores. */
  keyService: Uint8Array;
}

export const HANDSHAKE_KEYS_LENGTH = 64;

/** Splits K for principal `id`; the caller wipes `key` and both outputs when done. */
export function splitPrincipalKey(key: Uint8Array, id: string): SplitKeys {
  const { authKey, pskKey } = deriveDeviceKeys(suite, key, id);
  const handshake = new Uint8Array(HANDSHAKE_KEYS_LENGTH);
  handshake.set(authKey, 0);
  handshake.set(pskKey, 32);
  authKey.fill(0);
  pskKey.fill(0);
  return { handshake, keyService: deriveKeyServiceKey(suite, key, id) };
}

/** The two halves of a stored K_auth | K_psk (copies). */
export function handshakeKeysOf(stored: Uint8Array): { authKey: Uint8Array; pskKey: Uint8Array } {
  return { authKey: stored.slice(0, 32), pskKey: stored.slice(32, 64) };
}
