/**
 * Byte helpers on Uint8Array/DataView only: this file runs on Moddable XS,
 * where there is no Buffer.
 */
import { fail } from './errors.js';
import { isCharsOf, isHexDigit } from './ascii.js';

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Constant-time equality: the running time depends only on the lengths, never
 * on where the first difference is, so a MAC or tag cannot be guessed byte by
 * byte from timing.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** True when every byte is zero, in time that depends only on the length (RFC 7748 §6.1's all-zero check on a shared secret). */
export function isAllZero(b: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i];
  return acc === 0;
}

/** Overwrites key material in place. JS cannot promise the engine kept no copy, but we drop ours. */
export function zeroize(...bufs: (Uint8Array | undefined | null)[]): void {
  for (const b of bufs) if (b) b.fill(0);
}

const HEX = '0123456789abcdef';
export function toHex(b: Uint8Array): string {
  // pieces joined once: repeated `+=` on one long string is quadratic on XS
  const parts: string[] = [];
  for (let i = 0; i < b.length; i += 256) {
    let s = '';
    const end = Math.min(b.length, i + 256);
    for (let j = i; j < end; j++) s += HEX[b[j] >> 4] + HEX[b[j] & 15];
    parts.push(s);
  }
  return parts.join('');
}

export function fromHex(s: string): Uint8Array {
  if (s.length % 2 !== 0 || !isCharsOf(s, 0, s.length, isHexDigit)) fail('MALFORMED', 'invalid hex string');
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
  return out;
}

export function u16be(n: number): Uint8Array {
  return new Uint8Array([(n >>> 8) & 0xff, n & 0xff]);
}

export function u32be(n: number): Uint8Array {
  return new Uint8Array([(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

export function readU16be(b: Uint8Array, off: number): number {
  if (off + 2 > b.length) fail('TRUNCATED', 'u16 past end');
  return (b[off] << 8) | b[off + 1];
}

export function readU32be(b: Uint8Array, off: number): number {
  if (off + 4 > b.length) fail('TRUNCATED', 'u32 past end');
  return ((b[off] << 24) >>> 0) + ((b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]);
}

/** 48-bit unsigned big-endian (counters and sequence numbers that must not wrap in a device's life). */
export function u48be(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0 || n > 0xffffffffffff) fail('MALFORMED', 'u48 out of range');
  const hi = Math.floor(n / 0x100000000);
  const lo = n >>> 0;
  return new Uint8Array([(hi >>> 8) & 0xff, hi & 0xff, (lo >>> 24) & 0xff, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff]);
}

export function readU48be(b: Uint8Array, off: number): number {
  if (off + 6 > b.length) fail('TRUNCATED', 'u48 past end');
  const hi = (b[off] << 8) | b[off + 1];
  return hi * 0x100000000 + readU32be(b, off + 2);
}

/**
 * Bounded cursor for parsing untrusted input: every read checks the remaining
 * length first and fails with TRUNCATED instead of reading past the end.
 */
export class ByteReader {
  private off = 0;
  constructor(private readonly buf: Uint8Array) {}
  get offset(): number {
    return this.off;
  }
  get remaining(): number {
    return this.buf.length - this.off;
  }
  u8(): number {
    if (this.off + 1 > this.buf.length) fail('TRUNCATED', 'u8 past end');
    return this.buf[this.off++];
  }
  u16(): number {
    const v = readU16be(this.buf, this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    const v = readU32be(this.buf, this.off);
    this.off += 4;
    return v;
  }
  u48(): number {
    const v = readU48be(this.buf, this.off);
    this.off += 6;
    return v;
  }
  bytes(n: number): Uint8Array {
    if (n < 0 || this.off + n > this.buf.length) fail('TRUNCATED', `need ${n} bytes, have ${this.remaining}`);
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  rest(): Uint8Array {
    return this.bytes(this.remaining);
  }
  /** Fails unless every byte was consumed: trailing garbage is an error, not ignored. */
  end(): void {
    if (this.remaining !== 0) fail('MALFORMED', `${this.remaining} trailing bytes`);
  }
}
