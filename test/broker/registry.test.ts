import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { MIGRATIONS } from '../../broker/registry/schema.js';
import { acquireDirLock, DataDirInUseError, LOCK_FILE } from '../../broker/registry/lock.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { hashPassword, verifyPassword } from '../../broker/registry/secrets.js';
import { splitPrincipalKey } from '../../broker/registry/principal-keys.js';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { tempDir } from './helpers.js';

const dirs: ReturnType<typeof tempDir>[] = [];
function fresh() {
  const d = tempDir('mqsec-reg-');
  dirs.push(d);
  return d.path;
}
afterEach(() => {
  while (dirs.length) dirs.pop()!.remove();
});

describe('registry', () => {
  it('creates the data dir, a 0600 master key, the schema (WAL) and the built-in roles', async () => {
    const dir = join(fresh(), 'nested', 'data');
    const r = SqliteRegistry.open(dir);
    expect(statSync(join(dir, 'master.key')).mode & 0o777).toBe(0o600);
    expect(await r.schemaVersion()).toBe(MIGRATIONS.length);
    expect((await r.listRoles()).map((x) => x.name)).toEqual(['admin', 'app', 'sensor']);
    await r.close();
    const db = new Database(join(dir, 'registry.db'));
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('the registry keeps K_auth and K_psk encrypted at rest, never K; K_ks goes to the key service store (§14.2)', async () => {
    const dir = fresh();
    const r = SqliteRegistry.open(dir);
    const { key } = await r.addDevice('d1', 'sensor');
    await r.close();
    const split = splitPrincipalKey(key, 'd1');
    const db = readFileSync(join(dir, 'registry.db'));
    for (const secret of [key, split.handshake.subarray(0, 32), split.handshake.subarray(32), split.keyService]) expect(db.includes(Buffer.from(secret))).toBe(false);
    const r2 = SqliteRegistry.open(dir);
    const hs = (await r2.handshakeKeys('d1'))!;
    expect(Buffer.concat([hs.authKey, hs.pskKey]).equals(Buffer.from(split.handshake))).toBe(true);
    await r2.close();
    const ks = SqliteKeyServiceStore.open(dir);
    expect(Buffer.from((await ks.memberKey('d1'))!.key).equals(Buffer.from(split.keyService))).toBe(true);
    ks.close();
  });

  it('a different master key cannot open the stored device keys', async () => {
    const dir = fresh();
    const r = SqliteRegistry.open(dir);
    await r.addDevice('d1', 'sensor');
    await r.close();
    chmodSync(join(dir, 'master.key'), 0o600);
    writeFileSync(join(dir, 'master.key'), Buffer.alloc(32, 9));
    const r2 = SqliteRegistry.open(dir);
    await expect(r2.handshakeKeys('d1')).rejects.toThrow(/does not decrypt/);
    await r2.close();
  });

  it('refuses a master key readable by others and a schema newer than the code', async () => {
    const dir = fresh();
    await SqliteRegistry.open(dir).close();
    chmodSync(join(dir, 'master.key'), 0o644);
    expect(() => SqliteRegistry.open(dir)).toThrow(/chmod 600/);
    chmodSync(join(dir, 'master.key'), 0o600);
    const db = new Database(join(dir, 'registry.db'));
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.close();
    expect(() => SqliteRegistry.open(dir)).toThrow(/newer than this mqsec/);
  });

  it('revoke and rotate: status, key version, tickets, counters; every admin action bumps the revision and is audited', async () => {
    const r = SqliteRegistry.open(fresh());
    const rev0 = await r.revision();
    const { key: k1 } = await r.addDevice('d1', 'sensor');
    expect(await r.revision()).toBe(rev0 + 1);
    const store = new RegistryTicketStore(r);
    await store.putTicket({
      devId: 'd1',
      sid: new Uint8Array(8).fill(1),
      suite: 1,
      authKey: new Uint8Array(32).fill(2),
      chainStart: 1,
      chainIndex: 5,
      chainKey: new Uint8Array(32).fill(3),
      expiresAt: Date.now() + 1000,
    });
    expect(await store.advanceCounter('d1', 4)).toBe(true);
    await r.revokeDevice('d1');
    expect((await r.getDevice('d1'))!.status).toBe('revoked');
    expect(await r.handshakeKeys('d1')).toBeUndefined();
    expect(await r.ticketCount('d1')).toBe(0);
    expect(await r.getCounter('d1')).toBe(4); // kept: old KX1s stay dead
    const { key: k2 } = await r.rotateDevice('d1');
    expect(Buffer.from(k2).equals(Buffer.from(k1))).toBe(false);
    expect(await r.getDevice('d1')).toMatchObject({ status: 'active', keyVersion: 2 });
    expect(await r.getCounter('d1')).toBe(-1); // re-provisioned device starts over
    expect(await r.revision()).toBe(rev0 + 3);
    expect((await r.listAudit({ subject: 'd1' })).map((a) => a.kind)).toEqual(['device.rotate', 'device.revoke', 'device.add']);
    await r.close();
  });

  it('names are unique across devices and accounts; ids cannot carry topic syntax', async () => {
    const r = SqliteRegistry.open(fresh());
    await r.addDevice('x1', 'sensor');
    await expect(r.addAccount('x1', 'app', 'long-password')).rejects.toThrow(/already/);
    for (const bad of ['a/b', '+', '#', '$x', '', 'x'.repeat(24)]) await expect(r.addDevice(bad, 'sensor')).rejects.toThrow(/invalid device id/);
    await expect(r.addDevice('x2', 'nosuch')).rejects.toThrow(/unknown role/);
    await r.close();
  });

  it('accounts: scrypt hashes, constant-time verify, disabled accounts refused', async () => {
    const r = SqliteRegistry.open(fresh());
    await r.addAccount('svc', 'app', 'correct horse');
    expect(await r.verifyAccount('svc', 'correct horse')).toMatchObject({ name: 'svc', role: 'app' });
    expect(await r.verifyAccount('svc', 'correct hors')).toBeUndefined();
    expect(await r.verifyAccount('nobody', 'correct horse')).toBeUndefined();
    await r.setAccountStatus('svc', 'disabled');
    expect(await r.verifyAccount('svc', 'correct horse')).toBeUndefined();
    const h = await hashPassword('pw-123456');
    expect(await verifyPassword('pw-123456', h)).toBe(true);
    expect(await verifyPassword('pw-123457', h)).toBe(false);
    await r.close();
  });
});

describe('RegistryTicketStore (the protocol TicketStore contract)', () => {
  it('round-trips tickets, seals their secrets, counters only move up', async () => {
    const dir = fresh();
    const r = SqliteRegistry.open(dir);
    await r.addDevice('d1', 'sensor');
    const store = new RegistryTicketStore(r);
    const t = {
      devId: 'd1',
      sid: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]),
      suite: 1,
      authKey: new Uint8Array(32).fill(0xa1),
      chainStart: 5,
      chainIndex: 9,
      chainKey: new Uint8Array(32).fill(0xb2),
      expiresAt: 1234567,
    };
    await store.putTicket(t);
    expect(await store.getTicket('d1', t.sid)).toEqual(t);
    expect(await store.getTicket('d1', new Uint8Array(8))).toBeUndefined();
    expect(await store.getTicket('d2', t.sid)).toBeUndefined();
    await store.putTicket({ ...t, chainIndex: 10, chainKey: new Uint8Array(32).fill(0xc3) });
    expect((await store.getTicket('d1', t.sid))!.chainIndex).toBe(10);
    const db = readFileSync(join(dir, 'registry.db'));
    const wal = readFileSync(join(dir, 'registry.db-wal'));
    for (const f of [db, wal]) {
      expect(f.includes(Buffer.alloc(32, 0xa1))).toBe(false);
      expect(f.includes(Buffer.alloc(32, 0xc3))).toBe(false);
    }
    expect(await store.getCounter('d1')).toBe(-1);
    expect(await store.advanceCounter('d1', 3)).toBe(true);
    expect(await store.advanceCounter('d1', 3)).toBe(false);
    expect(await store.advanceCounter('d1', 2)).toBe(false);
    expect(await store.advanceCounter('d1', 7)).toBe(true);
    expect(await store.getCounter('d1')).toBe(7);
    await store.revokeDevice('d1');
    expect(await store.getTicket('d1', t.sid)).toBeUndefined();
    expect(await store.getCounter('d1')).toBe(7);
    await store.resetDevice('d1');
    expect(await store.getCounter('d1')).toBe(-1);
    await store.putTicket(t);
    await store.deleteTicket('d1', t.sid);
    expect(await store.getTicket('d1', t.sid)).toBeUndefined();
    await r.close();
    await expect(store.getCounter('d1')).rejects.toMatchObject({ code: 'STORAGE' });
  });
});

describe('data dir lock', () => {
  it('one holder at a time; a stale lock (dead pid) is taken over', async () => {
    const dir = fresh();
    const a = acquireDirLock(dir);
    expect(() => acquireDirLock(dir)).toThrow(DataDirInUseError);
    expect(() => acquireDirLock(dir)).toThrow(/in use by another broker \(pid \d+\)/);
    a.release();
    const b = acquireDirLock(dir);
    b.release();
    writeFileSync(join(dir, LOCK_FILE), '2147483646'); // no such process
    const c = acquireDirLock(dir);
    expect(readFileSync(join(dir, LOCK_FILE), 'utf8')).toBe(String(process.pid));
    c.release();
  });
});
