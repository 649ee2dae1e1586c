/**
 * Provisioning safety: `device rotate` rewrites the device config it wrote
 * (keeping its broker address) or refuses before rotating; the firmware
 * config tool refuses a key the registry no longer accepts and a loopback
 * broker address for a board build; `device add` warns about a loopback address.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { splitPrincipalKey } from '../../broker/registry/principal-keys.js';
import { deviceConfigMain } from '../../tools/device-config.js';
import { isLoopbackHost } from '../../tools/moddable.js';
import { tempDir } from './helpers.js';

const dir = tempDir();
const data = join(dir.path, 'data');
afterAll(() => {
  process.exitCode = 0;
  dir.remove();
});

async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), readStdin: async () => '' };
  const code = await main(['node', 'mqsec', ...args], io);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const readConfig = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as { id: string; key: string; broker: { host: string; port: number } };
/** The registry keeps K_auth | K_psk, never K (docs/protocol.md §14.2): what a config key must derive. */
async function registryHandshake(id: string): Promise<string> {
  const r = SqliteRegistry.open(data);
  const k = (await r.handshakeKeys(id))!;
  await r.close();
  return toHex(k.authKey) + toHex(k.pskKey);
}
const derivedHandshake = (id: string, keyHex: string) => toHex(splitPrincipalKey(fromHex(keyHex), id).handshake);

/** Runs tools/device-config.ts in process; returns exit code and what it wrote to stderr. */
async function deviceConfigTool(args: string[]) {
  const errs: string[] = [];
  const spyErr = vi.spyOn(process.stderr, 'write').mockImplementation((s) => (errs.push(String(s)), true));
  const spyOut = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  try {
    const code = await deviceConfigMain(['node', 'device-config', ...args]);
    return { code, err: errs.join('') };
  } finally {
    spyErr.mockRestore();
    spyOut.mockRestore();
  }
}

describe('loopback broker address', () => {
  it('isLoopbackHost knows loopback and unspecified addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', 'LOCALHOST', 'x.localhost', '::1', '[::1]', '0.0.0.0', '::']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['192.168.1.10', '10.0.0.1', 'broker.lan', '128.0.0.1', '::2']) expect(isLoopbackHost(h)).toBe(false);
  });

  it('device add warns when the config points a device at loopback, not when given a LAN address', async () => {
    const a = await run(['device', 'add', 'lb-1', '--role', 'sensor', '--data', data, '--json', '--config', join(dir.path, 'lb-1.json')]);
    expect(a.code).toBe(0);
    expect(JSON.parse(a.out).id).toBe('lb-1'); // stdout stays one JSON object
    expect(a.err).toMatch(/warning: .*127\.0\.0\.1, this computer's loopback address.*--broker-host/);
    const b = await run(['device', 'add', 'lan-1', '--role', 'sensor', '--data', data, '--json', '--config', join(dir.path, 'lan-1.json'), '--broker-host', '192.0.2.10']);
    expect(b.code).toBe(0);
    expect(b.err).toBe('');
  });

  it('the firmware config tool refuses a loopback broker for a board, accepts --host or --allow-loopback', async () => {
    const out = join(dir.path, 'build-lb');
    const refused = await deviceConfigTool(['--config', join(dir.path, 'lb-1.json'), '--out', out]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/127\.0\.0\.1 is this computer's loopback address, which a board cannot reach/);
    expect(existsSync(join(out, 'mqsec-device-config.js'))).toBe(false);
    expect((await deviceConfigTool(['--config', join(dir.path, 'lb-1.json'), '--out', out, '--host', '192.0.2.10'])).code).toBe(0);
    expect((await deviceConfigTool(['--config', join(dir.path, 'lb-1.json'), '--out', out, '--allow-loopback'])).code).toBe(0);
  });
});

describe('device rotate and the device config', () => {
  it('rewrites the config with the new key and keeps its broker address', async () => {
    const cfg = join(dir.path, 'rot-1.json');
    expect((await run(['device', 'add', 'rot-1', '--role', 'sensor', '--data', data, '--config', cfg, '--broker-host', '192.0.2.20', '--broker-port', '1884'])).code).toBe(0);
    const before = readConfig(cfg);
    const r = await run(['device', 'rotate', 'rot-1', '--data', data, '--config', cfg]);
    expect(r.code).toBe(0);
    const after = readConfig(cfg);
    expect(after.key).not.toBe(before.key);
    expect(derivedHandshake('rot-1', after.key)).toBe(await registryHandshake('rot-1'));
    expect(after.broker).toEqual({ host: '192.0.2.20', port: 1884 });
  });

  it('finds device-config-<id>.json in the working directory without --config', async () => {
    const cwd = process.cwd();
    process.chdir(dir.path);
    try {
      expect((await run(['device', 'add', 'rot-2', '--role', 'sensor', '--data', data, '--json', '--broker-host', '192.0.2.30'])).code).toBe(0);
      const old = readConfig('device-config-rot-2.json').key;
      const r = await run(['device', 'rotate', 'rot-2', '--data', data]);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/config written to device-config-rot-2\.json/);
      expect(readConfig('device-config-rot-2.json').key).not.toBe(old);
      expect(derivedHandshake('rot-2', readConfig('device-config-rot-2.json').key)).toBe(await registryHandshake('rot-2'));
    } finally {
      process.chdir(cwd);
    }
  });

  it('refuses before rotating when --config is another device\'s file', async () => {
    const other = join(dir.path, 'lan-1.json');
    const r = await run(['device', 'rotate', 'rot-1', '--data', data, '--config', other]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/is the config of device "lan-1", not "rot-1": not overwriting it/);
    expect(readConfig(other).id).toBe('lan-1');
    const reg = SqliteRegistry.open(data);
    expect((await reg.getDevice('rot-1'))!.keyVersion).toBe(2); // unchanged by the refused rotation
    await reg.close();
  });

  it('with no config to rewrite it says that an older config still holds the old key', async () => {
    const r = await run(['device', 'rotate', 'lan-1', '--data', data]);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/no device config rewritten.*still holds the old key/);
  });

  it('the firmware config tool refuses a rotated-away key, a revoked and an unknown device (given --data)', async () => {
    const out = join(dir.path, 'build-rot');
    // lan-1.json still holds the key from before the rotation above
    const stale = await deviceConfigTool(['--config', join(dir.path, 'lan-1.json'), '--out', out, '--data', data]);
    expect(stale.code).toBe(1);
    expect(stale.err).toMatch(/not the one the registry accepts for "lan-1".*rotated/);
    expect(existsSync(join(out, 'mqsec-device-config.js'))).toBe(false);
    // the rewritten config passes
    expect((await deviceConfigTool(['--config', join(dir.path, 'rot-1.json'), '--out', out, '--data', data])).code).toBe(0);
    expect((await run(['device', 'revoke', 'rot-1', '--data', data])).code).toBe(0);
    expect((await deviceConfigTool(['--config', join(dir.path, 'rot-1.json'), '--out', out, '--data', data])).err).toMatch(/"rot-1" is revoked/);
    const ghost = join(dir.path, 'ghost.json');
    writeFileSync(ghost, JSON.stringify({ id: 'ghost-1', key: 'ab'.repeat(32), broker: { host: '192.0.2.1', port: 1883 } }));
    expect((await deviceConfigTool(['--config', ghost, '--out', out, '--data', data])).err).toMatch(/"ghost-1" is not in the registry/);
  });
});
