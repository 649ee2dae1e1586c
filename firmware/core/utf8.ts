/**
 * Strict UTF-8 (RFC 3629): rejects overlong forms, surrogates and code points
 * above U+10FFFF. MQTT 3.1.1 section 1.5.3 also forbids U+0000 in strings.
 * Own implementation because TextEncoder/TextDecoder are not globals on every
 * Moddable build.
 */
import { fail } from './errors.js';

export function utf8Encode(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) fail('INVALID_UTF8', 'lone surrogate in string');
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

export function utf8Decode(b: Uint8Array, forbidNull = false): string {
  let s = '';
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    let cp: number;
    let need: number;
    let min: number;
    if (c < 0x80) {
      cp = c;
      need = 0;
      min = 0;
    } else if ((c & 0xe0) === 0xc0) {
      cp = c & 0x1f;
      need = 1;
      min = 0x80;
    } else if ((c & 0xf0) === 0xe0) {
      cp = c & 0x0f;
      need = 2;
      min = 0x800;
    } else if ((c & 0xf8) === 0xf0) {
      cp = c & 0x07;
      need = 3;
      min = 0x10000;
    } else fail('INVALID_UTF8', 'bad lead byte');
    if (i + need >= b.length) fail('INVALID_UTF8', 'truncated sequence');
    for (let k = 1; k <= need; k++) {
      const cc = b[i + k];
      if (cc === undefined || (cc & 0xc0) !== 0x80) fail('INVALID_UTF8', 'bad continuation byte');
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min) fail('INVALID_UTF8', 'overlong encoding');
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) fail('INVALID_UTF8', 'invalid code point');
    if (forbidNull && cp === 0) fail('INVALID_UTF8', 'U+0000 not allowed');
    if (cp >= 0x10000) {
      const v = cp - 0x10000;
      s += String.fromCharCode(0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
    } else s += String.fromCharCode(cp);
    i += need + 1;
  }
  return s;
}
