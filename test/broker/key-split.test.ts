/**
 * The registry split (docs/protocol.md §14.2) on disk: a registry from before
 * the split (schema 3, K sealed in `key_sealed`) is split when opened (K
 * erased from the file, K_auth|K_psk kept, K_ks to the key service store);
 * a broker with an external key service refuses to open one; `mqsec
 * keyservice migrate` moves an embedded key service's state (epochs,
 * sequence ranges, K_ks) to the key service's own directory and leaves the
 * broker's without it; a registry whose broker uses an external key service
 * refuses to provision into its own directory. Also the link frames' parser
 * (bounded, typed errors only).
 */
import { describe, it, expect, afterAll } from 'vitest';
import Database from 'better-sqlite3';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { MASTER_KEY_FILE, openDeviceKey, sealDeviceKey } from '../../broker/registry/secrets.js';
import { splitPrincipalKey } from '../../broker/registry/principal-keys.js';
import { KEY_SERVICE_DB_FILE, KEY_SERVICE_KEY_FILE, SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { decodeFrame, encodeFrame, FRAME_POLICY, type LinkFrame } from '../../broker/keyservice/link.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
import { startBroker } from '../../broker/server.js';
import { tempDir } from './helpers.js';

const dirs: ReturnType<typeof tempDir>[] = [];
afterAll(() => dirs.forEach((d) => d.remove()));
const fresh = () => {
  const d = tempDir('mqsec-split-');
  dirs.push(d);
  return d.path;
};

/** A registry as schema 3 left it: K sealed in key_sealed, no hs_sealed column. Returns each device's K. */
async function legacyRegistry(dir: string): Promise<Map<string, Uint8Array>> {
  const r = SqliteRegistry.open(dir);
  await r.addDevice('d1', 'sensor');
  await r.addDevice('d2', 'app');
  await r.revokeDevice('d2');
  await r.close();
  const master = readFileSync(join(dir, MASTER_KEY_FILE));
  const db = new Database(join(dir, 'registry.db'));
  const keys = new Map<string, Uint8Array>();
  for (const row of db.prepare('SELECT id, key_version FROM devices').all() as { id: string; key_version: number }[]) {
    const k = new Uint8Array(32).fill(row.id === 'd1' ? 0x11 : 0x22);
    keys.set(row.id, k);
    db.prepare('UPDATE devices SET key_sealed = ? WHERE id = ?').run(sealDeviceKey(master, row.id, row.key_version, k), row.id);
  }
  db.exec('ALTER TABLE devices DROP COLUMN hs_sealed');
  db.pragma('user_version = 3');
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  return keys;
}

async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), readStdin: async () => '' };
  const code = await main(['node', 'mqsec', ...args], io);
  process.exitCode = 0;
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('registry split on disk', () => {
  it('a registry from before the split is split when opened: K erased from the file, K_auth|K_psk kept, K_ks to the key service store (active principals only)', async () => {
    const dir = fresh();
    const keys = await legacyRegistry(dir);
    const master = readFileSync(join(dir, MASTER_KEY_FILE));
    const sealedBefore = (new Database(join(dir, 'registry.db'), { readonly: true }).prepare('SELECT key_sealed FROM devices').all() as { key_sealed: Buffer }[]).map((r) => r.key_sealed);
    const r = SqliteRegistry.open(dir);
    expect(await r.schemaVersion()).toBe(4);
    expect(r.splitAtOpen).toBe(2);
    const hs = (await r.handshakeKeys('d1'))!;
    expect(Buffer.concat([hs.authKey, hs.pskKey]).equals(Buffer.from(splitPrincipalKey(keys.get('d1')!, 'd1').handshake))).toBe(true);
    const d1 = (await r.getDevice('d1'))!;
    await r.close();
    // no K left: neither the sealed rows of before nor anything that opens as K
    const db = readFileSync(join(dir, 'registry.db'));
    for (const s of sealedBefore) expect(db.includes(s)).toBe(false);
    const wal = join(dir, 'registry.db-wal');
    if (existsSync(wal)) for (const s of sealedBefore) expect(readFileSync(wal).includes(s)).toBe(false);
    const raw = new Database(join(dir, 'registry.db'), { readonly: true });
    for (const row of raw.prepare('SELECT id, key_version, key_sealed FROM devices').all() as { id: string; key_version: number; key_sealed: Buffer }[]) {
      expect(row.key_sealed.length).toBe(0);
      expect(() => openDeviceKey(master, row.id, row.key_version, row.key_sealed)).toThrow();
    }
    raw.close();
    const ks = SqliteKeyServiceStore.open(dir);
    expect((await ks.memberKey('d1'))).toEqual({ identity: `${d1.createdAt}/${d1.keyVersion}`, key: splitPrincipalKey(keys.get('d1')!, 'd1').keyService });
    expect((await ks.memberKey('d2'))).toBeUndefined(); // revoked: comes back only with a new key
    ks.close();
  });

  it('a broker with an external key service refuses to open an unsplit registry, naming the migration', async () => {
    const dir = fresh();
    await legacyRegistry(dir);
    expect(() => SqliteRegistry.open(dir, { memberKeys: null })).toThrow(/mqsec keyservice migrate/);
  });

  it('mqsec keyservice migrate: epochs, ranges and K_ks move to the key service directory, nothing stays in the broker directory, and provisioning there is refused afterwards', async () => {
    const dir = fresh();
    const ksDir = join(fresh(), 'ks');
    const keys = await legacyRegistry(dir);
    // the embedded key service had run: group epochs and a sequence range in the broker directory
    const embedded = SqliteKeyServiceStore.open(dir);
    for (let i = 0; i < 5; i++) await embedded.nextEpoch('sensors/d1/#');
    await embedded.allocateSeq('d1', 4096);
    embedded.putMemberKey('a9', '1/1', new Uint8Array(32).fill(9));
    embedded.close();
    const res = await run(['keyservice', 'migrate', '--from', dir, '--data', ksDir]);
    expect(res.err).toBe('');
    expect(res.code).toBe(0);
    expect(res.out).toMatch(/moved 1 group epochs and 2 member keys, split 2 stored principal keys/);
    for (const f of [KEY_SERVICE_DB_FILE, KEY_SERVICE_KEY_FILE]) expect(existsSync(join(dir, f))).toBe(false);
    const ks = SqliteKeyServiceStore.open(ksDir);
    expect(await ks.nextEpoch('sensors/d1/#')).toBe(6);
    expect(await ks.allocateSeq('d1', 1)).toBe(4096);
    expect((await ks.memberKey('a9'))!.key).toEqual(new Uint8Array(32).fill(9));
    expect((await ks.memberKey('d1'))!.key).toEqual(splitPrincipalKey(keys.get('d1')!, 'd1').keyService);
    ks.close();
    const r = SqliteRegistry.open(dir);
    expect(await r.keyServiceMode()).toBe('external');
    await expect(r.addDevice('d3', 'sensor')).rejects.toThrow(/external key service: provision with --keyservice-data/);
    expect(await r.getDevice('d3')).toBeUndefined();
    await r.close();
    // with the key service's directory given, provisioning writes K_ks there
    const add = await run(['device', 'add', 'd3', '--role', 'sensor', '--data', dir, '--keyservice-data', ksDir, '--json', '--config', join(ksDir, '..', 'd3.json')]);
    expect(add.code).toBe(0);
    const k3 = Buffer.from((JSON.parse(add.out) as { key: string }).key, 'hex');
    const ks2 = SqliteKeyServiceStore.open(ksDir);
    expect((await ks2.memberKey('d3'))!.key).toEqual(splitPrincipalKey(k3, 'd3').keyService);
    ks2.close();
    expect(existsSync(join(dir, KEY_SERVICE_DB_FILE))).toBe(false);
    // the broker now starts only with the external key service
    await expect(startBroker({ dataDir: dir, port: 0, logLevel: 'silent' })).rejects.toThrow(/start the broker with --keyservice external/);
    const b = await startBroker({ dataDir: dir, port: 0, logLevel: 'silent', keyService: 'external' });
    await b.stop();
    expect(existsSync(join(dir, KEY_SERVICE_DB_FILE))).toBe(false);
  });

  it('a broker with an external key service refuses a data directory that still holds the embedded one (not migrated)', async () => {
    const dir = fresh();
    const r = SqliteRegistry.open(dir);
    await r.addDevice('d1', 'sensor'); // K_ks into the embedded store
    await r.close();
    await expect(startBroker({ dataDir: dir, port: 0, logLevel: 'silent', keyService: 'external' })).rejects.toThrow(/mqsec keyservice migrate --from/);
    const b = await startBroker({ dataDir: dir, port: 0, logLevel: 'silent' }); // still fine embedded
    await b.stop();
  });

  it('migrate refuses while the broker holds its data directory', async () => {
    const dir = fresh();
    const { acquireDirLock } = await import('../../broker/registry/lock.js');
    const lock = acquireDirLock(dir);
    try {
      const res = await run(['keyservice', 'migrate', '--from', dir, '--data', join(fresh(), 'ks')]);
      expect(res.code).not.toBe(0);
    } finally {
      lock.release();
    }
  });
});

describe('key service link frames', () => {
  const frames: LinkFrame[] = [
    { type: 'request', id: 'dev1', payload: new Uint8Array(33).fill(1) },
    { type: 'left', id: 'app-2' },
    { type: 'policy', policy: { principals: [{ id: 'd1', role: 'sensor', key: '1/1' }], roles: [{ name: 'sensor', plaintext: false, rules: [{ action: 'publish', filter: 'sensors/%u/#', mode: 'e2e' }, { action: 'subscribe', filter: 'cmd/%u/#' }] }] } },
    { type: 'rotate', filter: 'sensors/d1/#' },
    { type: 'deliver', id: 'd1', payload: new Uint8Array(80).fill(2) },
    { type: 'hello', instance: new Uint8Array(16).fill(3) },
  ];
  it('round trip', () => {
    for (const f of frames) expect(decodeFrame(encodeFrame(f))).toEqual(f);
  });
  it('every truncation, arbitrary bytes and bad policies fail with typed errors only', () => {
    const typed = (b: Uint8Array) => {
      try {
        decodeFrame(b);
        return 'ok';
      } catch (e) {
        if (!isMqsecError(e)) throw e;
        return e.code;
      }
    };
    for (const f of frames) {
      const b = encodeFrame(f);
      for (let n = 0; n < b.length; n++) typed(b.subarray(0, n));
    }
    expect(typed(new Uint8Array([0x02, 4, 0x61]))).toBe('TRUNCATED');
    expect(typed(new Uint8Array([0x7f]))).toBe('UNKNOWN_TYPE');
    const policy = (text: string) => typed(new Uint8Array([FRAME_POLICY, ...Buffer.from(text)]));
    expect(policy('{')).toBe('MALFORMED');
    expect(policy('{"principals":[{"id":1}],"roles":[]}')).toBe('MALFORMED');
    expect(policy('{"principals":[],"roles":[{"name":"r","plaintext":false,"rules":[{"action":"delete","filter":"#"}]}]}')).toBe('MALFORMED');
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    for (let i = 0; i < 5000; i++) {
      const b = new Uint8Array(1 + (rnd() % 64)).map(() => rnd());
      b[0] = [0x01, 0x02, 0x03, 0x04, 0x81, 0x82][rnd() % 6]!;
      typed(b);
    }
  });
});
