/**
 * Two variable-length integer codes:
 * - MQTT "Remaining Length" (MQTT 3.1.1 section 2.2.3): 1 to 4 bytes, max 268,435,455.
 * - LEB128-style unsigned varint for mqsec sequence numbers (docs/protocol.md), at most
 *   7 bytes / 2^48 - 1, minimal encoding required so one value has exactly one encoding.
 */
import { fail } from './errors.js';

export const MQTT_MAX_REMAINING_LENGTH = 268_435_455;

/** Little-endian base-128 digits, continuation bit set on all but the last: both codes share it. */
function base128(n: number): Uint8Array {
  const out: number[] = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    out.push(d);
  } while (n > 0);
  return new Uint8Array(out);
}

export function encodeRemainingLength(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > MQTT_MAX_REMAINING_LENGTH) fail('OVERSIZE', `remaining length ${n} out of range`);
  return base128(n);
}

/**
 * Decodes a remaining length starting at `off`. Returns undefined when more
 * bytes are needed (streaming), fails with MALFORMED on a fifth length byte.
 */
export function decodeRemainingLength(b: Uint8Array, off: number): { value: number; length: number } | undefined {
  let value = 0;
  let mult = 1;
  for (let i = 0; i < 4; i++) {
    if (off + i >= b.length) return undefined;
    const d = b[off + i];
    value += (d & 0x7f) * mult;
    if ((d & 0x80) === 0) {
      // MQTT 3.1.1 does not strictly forbid non-minimal encodings, but a trailing 0x00 group
      // after a continuation is only ever produced by a buggy or hostile peer.
      if (i > 0 && d === 0) fail('MALFORMED', 'non-minimal remaining length');
      return { value, length: i + 1 };
    }
    mult *= 128;
  }
  fail('MALFORMED', 'remaining length longer than 4 bytes');
}

export const VARINT_MAX = 0xffffffffffff; // 2^48 - 1

export function encodeVarint(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0 || n > VARINT_MAX) fail('MALFORMED', `varint ${n} out of range`);
  return base128(n);
}

export function decodeVarint(b: Uint8Array, off: number): { value: number; length: number } {
  let value = 0;
  let mult = 1;
  for (let i = 0; i < 7; i++) {
    if (off + i >= b.length) fail('TRUNCATED', 'varint past end');
    const d = b[off + i];
    value += (d & 0x7f) * mult;
    if ((d & 0x80) === 0) {
      if (i > 0 && d === 0) fail('MALFORMED', 'non-minimal varint');
      if (value > VARINT_MAX) fail('MALFORMED', 'varint out of range');
      return { value, length: i + 1 };
    }
    mult *= 128;
  }
  fail('MALFORMED', 'varint longer than 7 bytes');
}
