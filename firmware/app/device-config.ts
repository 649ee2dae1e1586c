/**
 * A node's provisioning data: who it is (device id and key, from
 * `mqsec device add ID --json`), where the broker is, and how to reach the
 * network. Pure validation shared by the device entry, the build tool that
 * turns the JSON into a firmware module (tools/device-config.ts) and the
 * simulator. The key never appears in an error message.
 */
import { fail } from '../core/errors.js';
import { fromHex } from '../core/bytes.js';
import { isCharsOf, isHexDigit, isHostChar, isIdChar } from '../core/ascii.js';

export interface DeviceConfig {
  id: string;
  /** 32-byte device key K_dev, 64 hex digits. */
  key: string;
  /** `flavour`: "stock" for a broker that runs no mqsec code, with the key service beside it (protocol §15.1); absent = the mqsec broker. */
  broker: { host: string; port: number; flavour?: 'stock' };
  wifi?: { ssid: string; password?: string };
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) fail('MALFORMED', `${what} must be an object`);
  return v as Record<string, unknown>;
}

/**
 * Validates a configuration object. Accepts the broker either nested
 * (`broker: {host, port}`) or flat (`host`, `port`), and `deviceId`/`deviceKey`
 * as aliases of `id`/`key`, so the JSON printed by `mqsec device add --json`
 * can be used as it is.
 */
export function parseDeviceConfig(input: unknown): DeviceConfig {
  const o = asObject(input, 'device config');
  const id = o.id ?? o.deviceId;
  if (!isCharsOf(id, 1, 23, isIdChar)) fail('MALFORMED', 'id must be 1..23 of [A-Za-z0-9_.-] (an MQTT client id)');
  const key = o.key ?? o.deviceKey;
  if (!isCharsOf(key, 64, 64, isHexDigit)) fail('MALFORMED', 'key must be 64 hex digits (32 bytes)');
  const b = o.broker !== undefined ? asObject(o.broker, 'broker') : o;
  const host = b.host;
  const port = b.port ?? 1883;
  if (!isCharsOf(host, 1, 253, isHostChar)) fail('MALFORMED', 'broker host must be a host name or IPv4 address');
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) fail('MALFORMED', 'broker port must be 1..65535');
  const out: DeviceConfig = { id, key: key.toLowerCase(), broker: { host, port } };
  // protocol §15.1: nothing on the wire says which kind of broker this is; the config does
  const flavour = b.flavour;
  if (flavour !== undefined && flavour !== 'mqsec' && flavour !== 'stock') fail('MALFORMED', 'broker flavour must be "mqsec" or "stock"');
  if (flavour === 'stock') out.broker.flavour = 'stock';
  if (o.wifi !== undefined) {
    const w = asObject(o.wifi, 'wifi');
    // IEEE 802.11: SSID at most 32 octets; WPA2 passphrase 8..63 characters.
    if (typeof w.ssid !== 'string' || w.ssid.length < 1 || w.ssid.length > 32) fail('MALFORMED', 'wifi.ssid must be 1..32 characters');
    out.wifi = { ssid: w.ssid };
    if (w.password !== undefined && w.password !== '') {
      if (typeof w.password !== 'string' || w.password.length < 8 || w.password.length > 63) fail('MALFORMED', 'wifi.password must be 8..63 characters');
      out.wifi.password = w.password;
    }
  }
  return out;
}

/** The device key as bytes (callers zeroize it when done). */
export function deviceKeyBytes(c: DeviceConfig): Uint8Array {
  return fromHex(c.key);
}
