/**
 * QoS 1 grace state across a graceful broker restart (docs/protocol.md §8.5).
 *
 * The broker keeps each device's last connection's receive keys and replay
 * window for a grace period after the device reconnects, so a QoS 1 envelope
 * resent unchanged after a lost PUBACK is recognised (routed once, or dropped
 * as the copy it is). Without this store that state dies with the process and
 * a restart turns such a message into a second delivery. At a graceful stop
 * the broker writes it to the registry, each record sealed under the master
 * key with the device id as the label; at start it reads it back once and
 * deletes it. Records carry their own expiry (broker clock), so a state older
 * than the grace period is never used.
 *
 * Record layout (inside the seal): epoch u8 | key (32) | iv (12) |
 * highest+1 u32be | window size u16be | window bytes (0/1).
 */
import { ByteReader, concatBytes, u16be, u32be, zeroize } from '../firmware/core/bytes.js';
import { asMqsecError, fail } from '../firmware/core/errors.js';
import type { GraceRecord, ServerHandshake } from '../firmware/secure/server.js';
import type { RxSnapshot } from '../firmware/secure/envelope.js';
import type { Registry } from './registry/store.js';

const KEY_LEN = 32;
const IV_LEN = 12;
const MAX_WINDOW = 4096;

export function encodeRxSnapshot(s: RxSnapshot): Uint8Array {
  if (s.key.length !== KEY_LEN || s.iv.length !== IV_LEN) fail('INTERNAL', 'grace record: key/iv length');
  return concatBytes(new Uint8Array([s.epoch]), s.key, s.iv, u32be(s.highest + 1), u16be(s.seen.length), s.seen);
}

export function decodeRxSnapshot(b: Uint8Array): RxSnapshot {
  const r = new ByteReader(b);
  const epoch = r.u8();
  const key = r.bytes(KEY_LEN).slice();
  const iv = r.bytes(IV_LEN).slice();
  const highest = r.u32() - 1;
  const size = r.u16();
  if (size < 1 || size > MAX_WINDOW) fail('MALFORMED', 'grace record: window size');
  const seen = r.bytes(size).slice();
  if (r.remaining !== 0) fail('MALFORMED', 'grace record: trailing bytes');
  return { epoch, key, iv, highest, seen };
}

const label = (devId: string) => `grace:${devId}`;

/** At a graceful stop, after the connections closed: writes every device's grace state, sealed. Returns the count. */
export async function saveGraceState(registry: Registry, handshake: ServerHandshake): Promise<number> {
  const records = handshake.exportGrace();
  const sealed = records.map((g) => {
    const plain = encodeRxSnapshot(g.rx);
    const out = { devId: g.devId, until: g.until, sealed: registry.sealSecret(label(g.devId), plain) };
    zeroize(plain, g.rx.key, g.rx.iv);
    return out;
  });
  await registry.saveGrace(sealed);
  return sealed.length;
}

/** At start: reads back (and deletes) the grace state of the last graceful stop. Unreadable records are skipped. Returns the device ids read back. */
export async function restoreGraceState(registry: Registry, handshake: ServerHandshake, now: number, warn: (msg: string, detail: object) => void): Promise<string[]> {
  const records: GraceRecord[] = [];
  for (const row of await registry.takeGrace(now)) {
    try {
      const plain = registry.openSecret(label(row.devId), row.sealed);
      records.push({ devId: row.devId, until: row.until, rx: decodeRxSnapshot(plain) });
      zeroize(plain);
    } catch (e) {
      warn('grace record unreadable, skipped', { devId: row.devId, code: asMqsecError(e).code });
    }
  }
  handshake.importGrace(records);
  for (const r of records) zeroize(r.rx.key, r.rx.iv);
  return records.map((r) => r.devId);
}
