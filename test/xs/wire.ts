/**
 * JSON encoding used on the Node <-> XS command channel of the test harness.
 * Uint8Arrays travel as {"$bytes": [..]}; errors as {"$error": {name, code, message}}.
 * Shared by both sides (bundled into the XS guest), so it uses no Node APIs.
 * Linear on XS: XS keeps strings as UTF-8, so indexed string access
 * (charCodeAt(i), substr) is O(i) there, and a hex or char-by-char codec
 * turns quadratic on large messages; number arrays and TextEncoder are not.
 */

function encodeValue(v: unknown): unknown {
  if (v instanceof Uint8Array) return { $bytes: Array.from(v) };
  if (v instanceof ArrayBuffer) return { $bytes: Array.from(new Uint8Array(v)) };
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
    if (Array.isArray(o.$bytes) && Object.keys(o).length === 1) return Uint8Array.from(o.$bytes as number[]);
    if (o.$undef === true && Object.keys(o).length === 1) return undefined;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(o)) out[k] = decodeValue(o[k]);
    return out;
  }
  return v;
}

export function encodeMessage(v: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(encodeValue(v)));
}

export function decodeMessage(b: Uint8Array): unknown {
  return decodeValue(JSON.parse(new TextDecoder().decode(b)));
}

export interface SerializedError {
  $error: { name: string; code?: string; message: string };
}

export function serializeError(e: unknown): SerializedError {
  const err = e as { name?: string; code?: string; message?: string };
  return { $error: { name: err?.name ?? 'Error', code: err?.code, message: err?.message ?? String(e) } };
}
