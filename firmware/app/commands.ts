/**
 * Commands a backend sends to a node on cmd/<id>/<name>, and the node's
 * persisted settings. Pure parse/build functions: every input is untrusted
 * (it was authenticated by the secure layer, but a buggy backend must still
 * not crash or wedge a node), so each parser is bounded and fails with a
 * typed MqsecError.
 */
import { fail } from '../core/errors.js';
import { utf8Decode, utf8Encode } from '../core/utf8.js';
import type { Reading } from './ports.js';
import { isCharsOf, isDigit, isWordChar } from '../core/ascii.js';

/** Reporting interval bounds: below 5 s a battery node never sleeps; above a day it looks dead. */
export const INTERVAL_MIN_S = 5;
export const INTERVAL_MAX_S = 86_400;
/** Commands are tiny; anything longer is refused before it is decoded. */
export const COMMAND_MAX_BYTES = 64;

export type Command =
  | { kind: 'interval'; seconds: number }
  | { kind: 'sample' }
  | { kind: 'sleep'; mode: 'deep' | 'wait' };

export const COMMAND_NAMES = Object.freeze(['interval', 'sample', 'sleep'] as const);

/** The topic filter a node subscribes to for its commands. */
export function commandFilter(devId: string): string {
  return `cmd/${devId}/#`;
}

export function readingTopic(devId: string, kind: string): string {
  return `sensors/${devId}/${kind}`;
}

/**
 * Parses one command. `topic` must be cmd/<devId>/<name>; the payload is a
 * short UTF-8 text: `interval` takes whole seconds ("60"), `sleep` takes
 * "deep" or "wait", `sample` ignores its payload.
 */
export function parseCommand(devId: string, topic: string, payload: Uint8Array): Command {
  const prefix = `cmd/${devId}/`;
  if (!topic.startsWith(prefix)) fail('PROTOCOL_VIOLATION', 'command on a foreign topic');
  const name = topic.slice(prefix.length);
  if (payload.length > COMMAND_MAX_BYTES) fail('OVERSIZE', `command payload over ${COMMAND_MAX_BYTES} bytes`);
  const text = utf8Decode(payload, true).trim();
  switch (name) {
    case 'interval': {
      if (!isCharsOf(text, 1, 6, isDigit)) fail('MALFORMED', 'interval must be whole seconds');
      const seconds = Number(text);
      if (seconds < INTERVAL_MIN_S || seconds > INTERVAL_MAX_S) fail('MALFORMED', `interval out of range ${INTERVAL_MIN_S}..${INTERVAL_MAX_S} s`);
      return { kind: 'interval', seconds };
    }
    case 'sample':
      return { kind: 'sample' };
    case 'sleep':
      if (text !== 'deep' && text !== 'wait') fail('MALFORMED', 'sleep mode must be "deep" or "wait"');
      return { kind: 'sleep', mode: text };
    default:
      return fail('UNKNOWN_TYPE', 'unknown command');
  }
}

/** Settings that survive deep sleep and reboots (one small NVS value). */
export interface AppSettings {
  intervalS: number;
  sleepMode: 'deep' | 'wait';
}

/** Storage key of the settings blob (NVS keys are at most 15 characters). */
export const SETTINGS_KEY = 'app-settings';
/** Settings blob layout (6 bytes): version (1) | sleep mode (0 wait, 1 deep) | interval seconds (u32be). */
const SETTINGS_VERSION = 1;

export function encodeSettings(s: AppSettings): Uint8Array {
  const out = new Uint8Array(6);
  out[0] = SETTINGS_VERSION;
  out[1] = s.sleepMode === 'deep' ? 1 : 0;
  const v = s.intervalS >>> 0;
  out[2] = (v >>> 24) & 0xff;
  out[3] = (v >>> 16) & 0xff;
  out[4] = (v >>> 8) & 0xff;
  out[5] = v & 0xff;
  return out;
}

/** Decodes settings; anything unexpected (old layout, corruption) yields undefined so the node falls back to defaults. */
export function decodeSettings(b: Uint8Array | undefined): AppSettings | undefined {
  if (!b || b.length !== 6 || b[0] !== SETTINGS_VERSION || b[1] > 1) return undefined;
  const intervalS = ((b[2] << 24) >>> 0) + ((b[3] << 16) | (b[4] << 8) | b[5]);
  if (intervalS < INTERVAL_MIN_S || intervalS > INTERVAL_MAX_S) return undefined;
  return { intervalS, sleepMode: b[1] === 1 ? 'deep' : 'wait' };
}

/**
 * A reading as the payload a backend receives after the broker opens the
 * envelope: compact JSON {"v":21.5,"u":"C","n":17} (n = the node's reading
 * sequence, so a backend sees gaps). JSON keeps the app side trivial; the
 * envelope, not this encoding, provides integrity.
 */
export function encodeReading(r: Reading, sequence: number): Uint8Array {
  if (!Number.isFinite(r.value)) fail('MALFORMED', 'reading is not a finite number');
  const body: { v: number; u?: string; n: number } = { v: r.value, n: sequence };
  if (r.unit !== undefined) body.u = r.unit;
  return utf8Encode(JSON.stringify(body));
}


/** Sensor kinds become one topic level: letters, digits, '-', '_' only (no wildcards, no '/'). */
export function checkReadingKind(kind: string): void {
  if (!isCharsOf(kind, 1, 32, isWordChar)) fail('MALFORMED', 'sensor kind must be 1..32 of [A-Za-z0-9_-]');
}
