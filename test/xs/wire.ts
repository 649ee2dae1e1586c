/**
 * JSON encoding used on the Node <-> XS command channel of the test harness.
 * Uint8Arrays travel as {"$hex": "..."}; errors as {"$error": {name, code, message}}.
 * Shared by both sides (bundled into the XS guest), so it uses no Node APIs.
 */
import { toHex, fromHex } from '../../firmware/core/bytes.js';

function encodeValue(v: unknown): unknown {
  if (v instanceof Uint8Array) return { $hex: toHex(v) };
  if (v instanceof ArrayBuffer) return { $hex: toHex(new Uint8Array(v)) };
  if (v === undefined) return { $undef: true };
  if (Array.isArray(v)) return v.map(encodeValue);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) out[k] = encodeValue((v as Record<string, unknown>)[k]);
    return out;
  }
  return v;
}

function decodeValue(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(decodeValue);
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o.$hex === 'string' && Object.keys(o).length === 1) return fromHex(o.$hex);
    if (o.$undef === true && Object.keys(o).length === 1) return undefined;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(o)) out[k] = decodeValue(o[k]);
    return out;
  }
  return v;
}

export function encodeMessage(v: unknown): Uint8Array {
  const s = JSON.stringify(encodeValue(v));
  // ASCII-safe: escape non-ASCII so a byte-per-char copy is exact on both sides
  let ascii = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    ascii += c < 0x80 ? s[i] : '\\u' + c.toString(16).padStart(4, '0');
  }
  const out = new Uint8Array(ascii.length);
  for (let i = 0; i < ascii.length; i++) out[i] = ascii.charCodeAt(i);
  return out;
}

export function decodeMessage(b: Uint8Array): unknown {
  let s = '';
  for (let i = 0; i < b.length; i += 4096) s += String.fromCharCode(...b.subarray(i, i + 4096));
  return decodeValue(JSON.parse(s));
}

export interface SerializedError {
  $error: { name: string; code?: string; message: string };
}

export function serializeError(e: unknown): SerializedError {
  const err = e as { name?: string; code?: string; message?: string };
  return { $error: { name: err?.name ?? 'Error', code: err?.code, message: err?.message ?? String(e) } };
}
