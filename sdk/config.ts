/**
 * App config files, as `mqsec app add --json` writes them (mode 0600):
 * `{ "id": "backend", "key": "<64 hex>", "broker": { "host": "127.0.0.1", "port": 1883 } }`
 * (the same shape as a device config). Against a stock broker with the mqsec
 * key service beside it the broker says so, as in a device config
 * (docs/protocol.md §15.1): `"broker": { "host": ..., "port": ..., "flavour": "stock" }`.
 * `readAppConfig` checks the shape and gives what `connectApp` takes.
 */
import { readFileSync } from 'node:fs';
import { MqsecError } from '../firmware/core/errors.js';
import type { BrokerFlavour } from '../firmware/secure/stock.js';

export interface AppConfig {
  id: string;
  /** 64 hex digits. */
  key: string;
  /** mqtt://host:port */
  url: string;
  /** "mqsec" (absent in the file) or "stock". */
  flavour: BrokerFlavour;
}

export function readAppConfig(path: string): AppConfig {
  let c: { id?: unknown; key?: unknown; broker?: { host?: unknown; port?: unknown; flavour?: unknown } };
  try {
    c = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new MqsecError('MALFORMED', `${path}: not a readable JSON app config (${e instanceof Error ? e.message : String(e)})`);
  }
  if (typeof c !== 'object' || c === null) throw new MqsecError('MALFORMED', `${path}: not an app config`);
  if (typeof c.id !== 'string' || c.id.length === 0) throw new MqsecError('MALFORMED', `${path}: no "id"`);
  if (typeof c.key !== 'string' || !/^[0-9a-f]{64}$/i.test(c.key)) throw new MqsecError('MALFORMED', `${path}: "key" must be 64 hex digits`);
  const host = typeof c.broker?.host === 'string' ? c.broker.host : '127.0.0.1';
  const port = typeof c.broker?.port === 'number' ? c.broker.port : 1883;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new MqsecError('MALFORMED', `${path}: bad broker port`);
  const flavour = c.broker?.flavour ?? 'mqsec';
  if (flavour !== 'mqsec' && flavour !== 'stock') throw new MqsecError('MALFORMED', `${path}: broker flavour must be "mqsec" or "stock"`);
  return { id: c.id, key: c.key, url: `mqtt://${host.includes(':') ? `[${host}]` : host}:${port}`, flavour };
}
