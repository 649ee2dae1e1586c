/**
 * Character-set checks for short ASCII identifiers (device ids, storage and
 * preference names, topic levels, hex keys, IPv4 literals), written as loops
 * instead of regular expressions because on the device a RegExp costs: XS
 * compiles a regex literal each time a function evaluates it, allocates match
 * state for every exec, and a preloaded module-level RegExp lives in flash
 * where the Moddable linker freezes it. These are pure functions on strings a
 * few dozen characters long (indexed access is fine at that size).
 */

export type CharTest = (code: number) => boolean;

export const isDigit: CharTest = (c) => c >= 0x30 && c <= 0x39;
export const isHexDigit: CharTest = (c) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
export const isAlnum: CharTest = (c) => isDigit(c) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
/** [A-Za-z0-9_-] */
export const isWordChar: CharTest = (c) => isAlnum(c) || c === 0x5f || c === 0x2d;
/** [A-Za-z0-9_.-]: MQTT client ids, NVS names and file names mqsec accepts. */
export const isIdChar: CharTest = (c) => isWordChar(c) || c === 0x2e;
/** [A-Za-z0-9.-]: host names and IPv4 literals. */
export const isHostChar: CharTest = (c) => isAlnum(c) || c === 0x2e || c === 0x2d;

/** True when `s` is a string of min..max characters, each passing `test`. */
export function isCharsOf(s: unknown, min: number, max: number, test: CharTest): s is string {
  if (typeof s !== 'string' || s.length < min || s.length > max) return false;
  for (let i = 0; i < s.length; i++) if (!test(s.charCodeAt(i))) return false;
  return true;
}

/** A dotted-quad IPv4 literal in canonical form: four decimals 0..255, no leading zeros. */
export function isIpv4Literal(s: string): boolean {
  if (!isCharsOf(s, 7, 15, (c) => isDigit(c) || c === 0x2e)) return false;
  const parts = s.split('.');
  if (parts.length !== 4) return false;
  for (const p of parts) {
    if (p.length < 1 || p.length > 3 || (p.length > 1 && p.charCodeAt(0) === 0x30) || Number(p) > 255) return false;
  }
  return true;
}
