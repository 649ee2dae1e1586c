/**
 * The registry storage interface's shared test suite (as aedes-persistence's
 * abstract tests): every implementation of broker/registry/store.ts runs
 * exactly these tests (test/broker/registry-sqlite.test.ts,
 * test/broker/registry-postgres.test.ts). Devices, accounts, roles and rules,
 * tickets and counters (with the compare-and-set under concurrency), audit,
 * QoS 1 grace records, sealed secrets and durability across reopening.
 */
import { describe, expect, it } from 'vitest';
import type { HandshakeKeys, Registry } from '../../broker/registry/store.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { splitPrincipalKey } from '../../broker/registry/principal-keys.js';
import { MemoryKeyServiceStore, type MemberKeySink } from '../../broker/keyservice/store.js';

export interface RegistryFactory {
  /** A fresh, empty registry (its own database); `now` is its wall clock, K_ks goes to `memberKeys`. */
  open(opts: { now?: () => number; memberKeys: MemberKeySink }): Promise<Registry>;
  /** The same registry opened again (another process or node would see the same state). */
  reopen(r: Registry): Promise<Registry>;
}

const ticket = (devId: string, sidByte: number, expiresAt: number) => ({
  devId,
  sid: new Uint8Array(16).fill(sidByte),
  suite: 1,
  authKey: new Uint8Array(32).fill(2),
  chainStart: 1,
  chainIndex: 5,
  chainKey: new Uint8Array(32).fill(3),
  expiresAt,
});

/** Are these the K_auth | K_psk that K derives for `id` (§14.2)? */
function derivedFrom(hs: HandshakeKeys | undefined, key: Uint8Array, id: string): boolean {
  const split = splitPrincipalKey(key, id);
  return hs !== undefined && Buffer.concat([hs.authKey, hs.pskKey]).equals(Buffer.from(split.handshake));
}

export function registryStoreSuite(name: string, factory: () => RegistryFactory): void {
  describe(`registry store: ${name}`, () => {
    const make = async (now?: () => number) => {
      const f = factory();
      const ks = new MemoryKeyServiceStore();
      return { f, r: await f.open({ now, memberKeys: ks }), ks };
    };

    it('starts with the schema, the built-in roles, revision 0 and an empty audit', async () => {
      const { r } = await make();
      try {
        expect(await r.schemaVersion()).toBeGreaterThan(0);
        expect((await r.listRoles()).map((x) => x.name)).toEqual(['admin', 'app', 'sensor']);
        expect((await r.getRole('sensor'))!.rules.length).toBeGreaterThan(0);
        expect(await r.revision()).toBe(0);
        expect(await r.listAudit()).toEqual([]);
        expect(await r.listDevices()).toEqual([]);
      } finally {
        await r.close();
      }
    });

    it('roles and rules: add, mode change, remove, refusals; each change bumps the revision and is audited', async () => {
      const { r } = await make();
      try {
        await r.addRole('meter', { plaintext: true });
        await expect(r.addRole('meter')).rejects.toThrow(/already exists/);
        await expect(r.addRole('Bad Name')).rejects.toThrow(/invalid role name/);
        await r.addRule('meter', 'publish', 'meters/%u/#');
        await r.addRule('meter', 'subscribe', 'cmd/%u/#', 'e2e');
        await r.addRule('meter', 'publish', 'meters/%u/#', 'e2e'); // same rule: mode changed, not duplicated
        await expect(r.addRule('nosuch', 'publish', 'x/#')).rejects.toThrow(/unknown role/);
        await expect(r.addRule('meter', 'publish', 'a/#/b')).rejects.toThrow(/invalid filter/);
        await expect(r.addRule('meter', 'delete' as never, 'x')).rejects.toThrow(/publish or subscribe/);
        expect(await r.getRole('meter')).toEqual({
          name: 'meter',
          plaintext: true,
          rules: [
            { action: 'publish', filter: 'meters/%u/#', mode: 'e2e' },
            { action: 'subscribe', filter: 'cmd/%u/#', mode: 'e2e' },
          ],
        });
        expect(await r.removeRule('meter', 'subscribe', 'cmd/%u/#')).toBe(true);
        expect(await r.removeRule('meter', 'subscribe', 'cmd/%u/#')).toBe(false);
        expect(await r.revision()).toBe(5); // role, 3 rule writes, 1 removal (refusals change nothing)
        expect((await r.listAudit({ subject: 'meter' })).map((a) => a.kind)).toEqual(['acl.remove', 'acl.add', 'acl.add', 'acl.add', 'role.add']);
      } finally {
        await r.close();
      }
    });

    it('devices: add with a fresh key, look up, list; names unique across devices and accounts; bad ids and roles refused', async () => {
      const { r, ks } = await make();
      try {
        const { device, key } = await r.addDevice('d2', 'sensor');
        // §14.2: K_ks to the key service's store, K_auth | K_psk in the registry, K nowhere
        expect(Buffer.from((await ks.memberKey('d2'))!.key).equals(Buffer.from(splitPrincipalKey(key, 'd2').keyService))).toBe(true);
        expect((await ks.memberKey('d2'))!.identity).toBe(`${device.createdAt}/1`);
        expect(key.length).toBe(32);
        expect(device).toMatchObject({ id: 'd2', role: 'sensor', status: 'active', keyVersion: 1 });
        await r.addDevice('d1', 'sensor');
        expect((await r.listDevices()).map((d) => d.id)).toEqual(['d1', 'd2']);
        expect(await r.getDevice('d2')).toEqual(device);
        expect(await r.getDevice('nope')).toBeUndefined();
        expect(derivedFrom(await r.handshakeKeys('d2'), key, 'd2')).toBe(true);
        expect((await r.handshakeKeys('d2'))!.keyVersion).toBe(1);
        expect(await r.handshakeKeys('nope')).toBeUndefined();
        await expect(r.addDevice('d1', 'sensor')).rejects.toThrow(/already exists/);
        await expect(r.addAccount('d1', 'app', 'long-password')).rejects.toThrow(/already/);
        for (const bad of ['a/b', '+', '#', '$x', '', 'x'.repeat(24)]) await expect(r.addDevice(bad, 'sensor')).rejects.toThrow(/invalid device id/);
        await expect(r.addDevice('d3', 'nosuch')).rejects.toThrow(/unknown role/);
        const states = await r.deviceKeyStates();
        expect(states.get('d2')).toEqual({ status: 'active', keyVersion: 1, createdAt: device.createdAt });
        expect(await r.revision()).toBe(2);
      } finally {
        await r.close();
      }
    });

    it('revoke, rotate, remove: key, tickets, grace records and counter as documented; the id can be used again', async () => {
      const { r, ks } = await make();
      const store = new RegistryTicketStore(r);
      try {
        const { key: k1 } = await r.addDevice('d1', 'sensor');
        await store.putTicket(ticket('d1', 1, Date.now() + 60_000));
        expect(await store.advanceCounter('d1', 4)).toBe(true);
        await r.saveGrace([{ devId: 'd1', until: Date.now() + 60_000, sealed: r.sealSecret('grace:d1', new Uint8Array([1])) }]);
        const revoked = await r.revokeDevice('d1');
        expect(revoked.status).toBe('revoked');
        expect(await r.handshakeKeys('d1')).toBeUndefined();
        expect((await ks.memberKey('d1'))).toBeUndefined(); // K_ks of no further use
        expect(await r.ticketCount('d1')).toBe(0);
        expect(await r.getCounter('d1')).toBe(4); // kept: old KX1s stay dead
        expect(await r.takeGrace(0)).toEqual([]);
        const { device, key: k2 } = await r.rotateDevice('d1');
        expect(device).toMatchObject({ status: 'active', keyVersion: 2 });
        expect(Buffer.from(k2).equals(Buffer.from(k1))).toBe(false);
        expect(derivedFrom(await r.handshakeKeys('d1'), k2, 'd1')).toBe(true);
        expect(derivedFrom(await r.handshakeKeys('d1'), k1, 'd1')).toBe(false);
        expect(Buffer.from((await ks.memberKey('d1'))!.key).equals(Buffer.from(splitPrincipalKey(k2, 'd1').keyService))).toBe(true);
        expect(await r.getCounter('d1')).toBe(-1); // re-provisioned: starts over
        await expect(r.revokeDevice('ghost')).rejects.toThrow(/unknown device/);
        await expect(r.rotateDevice('ghost')).rejects.toThrow(/unknown device/);
        await r.removeDevice('d1');
        expect(await r.getDevice('d1')).toBeUndefined();
        expect((await ks.memberKey('d1'))).toBeUndefined();
        await expect(r.removeDevice('d1')).rejects.toThrow(/unknown device/);
        const again = await r.addDevice('d1', 'sensor');
        expect(again.device.keyVersion).toBe(1);
        expect((await r.listAudit({ subject: 'd1' })).map((a) => a.kind)).toEqual(['device.add', 'device.remove', 'device.rotate', 'device.revoke', 'device.add']);
      } finally {
        await r.close();
      }
    });

    it('accounts: add, verify (right, wrong, unknown), disable and enable, remove; refusals', async () => {
      const { r } = await make();
      try {
        const a = await r.addAccount('svc', 'app', 'correct horse');
        expect(a).toMatchObject({ name: 'svc', role: 'app', status: 'active' });
        expect(await r.getAccount('svc')).toEqual(a);
        expect(await r.verifyAccount('svc', 'correct horse')).toEqual(a);
        expect(await r.verifyAccount('svc', 'correct hors')).toBeUndefined();
        expect(await r.verifyAccount('nobody', 'correct horse')).toBeUndefined();
        await r.setAccountStatus('svc', 'disabled');
        expect(await r.verifyAccount('svc', 'correct horse')).toBeUndefined();
        await r.setAccountStatus('svc', 'active');
        expect(await r.verifyAccount('svc', 'correct horse')).toMatchObject({ name: 'svc' });
        await expect(r.addAccount('svc', 'app', 'another-password')).rejects.toThrow(/already/);
        await expect(r.addAccount('short', 'app', 'short')).rejects.toThrow(/at least 8/);
        await expect(r.addAccount('x', 'nosuch', 'long-password')).rejects.toThrow(/unknown role/);
        await expect(r.addDevice('svc', 'sensor')).rejects.toThrow(/already an account/);
        await expect(r.setAccountStatus('ghost', 'disabled')).rejects.toThrow(/unknown account/);
        await r.addAccount('ops', 'admin', 'ops-password');
        expect((await r.listAccounts()).map((x) => x.name)).toEqual(['ops', 'svc']);
        await r.removeAccount('svc');
        expect(await r.getAccount('svc')).toBeUndefined();
        await expect(r.removeAccount('svc')).rejects.toThrow(/unknown account/);
      } finally {
        await r.close();
      }
    });

    it('counter compare-and-set: only strictly greater values win; of concurrent equal values exactly one wins', async () => {
      const { r } = await make();
      try {
        await r.addDevice('c1', 'sensor');
        expect(await r.getCounter('c1')).toBe(-1);
        expect(await r.advanceCounter('c1', 5)).toBe(true);
        expect(await r.advanceCounter('c1', 5)).toBe(false);
        expect(await r.advanceCounter('c1', 3)).toBe(false);
        expect(await r.getCounter('c1')).toBe(5);
        // a replayed CONNECT racing the original, many times over: one acceptance per value
        for (let v = 6; v < 26; v++) {
          const results = await Promise.all(Array.from({ length: 4 }, () => r.advanceCounter('c1', v)));
          expect(results.filter(Boolean)).toHaveLength(1);
        }
        expect(await r.getCounter('c1')).toBe(25);
        await r.resetCounter('c1');
        expect(await r.getCounter('c1')).toBe(-1);
      } finally {
        await r.close();
      }
    });

    it('tickets: sealed round trip through the ticket store, count, activity, delete, expiry purge', async () => {
      let clock = 1_000_000;
      const { r } = await make(() => clock);
      const store = new RegistryTicketStore(r);
      try {
        await r.addDevice('t1', 'sensor');
        const t = ticket('t1', 7, clock + 5_000);
        await store.putTicket(t);
        const back = await store.getTicket('t1', t.sid);
        expect(back).toEqual({ ...t, sid: new Uint8Array(t.sid) });
        expect(await store.getTicket('t1', new Uint8Array(16).fill(8))).toBeUndefined();
        // the stored record is sealed: neither secret appears in it
        const raw = (await r.getTicketRow('t1', Buffer.from(t.sid).toString('hex')))!;
        expect(Buffer.from(raw.record).includes(Buffer.from(t.authKey))).toBe(false);
        expect(Buffer.from(raw.record).includes(Buffer.from(t.chainKey))).toBe(false);
        await store.putTicket({ ...t, chainIndex: 6 }); // rewrite in place
        expect((await store.getTicket('t1', t.sid))!.chainIndex).toBe(6);
        await store.putTicket(ticket('t1', 9, clock + 50_000));
        expect(await r.ticketCount('t1')).toBe(2);
        expect(await r.ticketCount()).toBe(2);
        await store.advanceCounter('t1', 11);
        expect((await r.deviceActivity()).get('t1')).toEqual({ tickets: 2, lastTicketAt: clock, ticketExpiresAt: clock + 50_000, counter: 11 });
        clock += 10_000;
        expect(await r.purgeExpiredTickets()).toBe(1);
        expect(await r.ticketCount('t1')).toBe(1);
        await store.deleteTicket('t1', new Uint8Array(16).fill(9));
        expect(await r.ticketCount('t1')).toBe(0);
        await store.putTicket(ticket('t1', 1, clock + 5_000));
        await store.resetDevice('t1');
        expect(await r.ticketCount('t1')).toBe(0);
        expect(await store.getCounter('t1')).toBe(-1);
      } finally {
        await r.close();
      }
    });

    it('audit: rows from anywhere, filtered by kind, subject, source and sequence, newest first, limited', async () => {
      const { r } = await make();
      try {
        await r.audit('auth.fail', 'd9', 'BAD_MAC', '10.0.0.1');
        await r.audit('auth.fail', 'd8', null, '10.0.0.2');
        await r.audit('publish.drop', 'd9', 'not-authorized: x', null);
        const all = await r.listAudit();
        expect(all.map((a) => a.kind)).toEqual(['publish.drop', 'auth.fail', 'auth.fail']);
        expect(all[0]!.seq).toBeGreaterThan(all[1]!.seq);
        expect(all[2]).toMatchObject({ kind: 'auth.fail', subject: 'd9', detail: 'BAD_MAC', source: '10.0.0.1' });
        expect(typeof all[2]!.at).toBe('number');
        expect((await r.listAudit({ kind: 'auth.fail', subject: 'd9' })).map((a) => a.detail)).toEqual(['BAD_MAC']);
        expect((await r.listAudit({ source: '10.0.0.2' })).map((a) => a.subject)).toEqual(['d8']);
        expect((await r.listAudit({ afterSeq: all[1]!.seq })).map((a) => a.kind)).toEqual(['publish.drop']);
        expect(await r.listAudit({ limit: 1 })).toHaveLength(1);
      } finally {
        await r.close();
      }
    });

    it('grace records (§8.5): saved sealed, read back once, expired ones dropped; sealed secrets are bound to their label', async () => {
      const { r } = await make();
      try {
        const now = Date.now();
        const sealed = r.sealSecret('grace:g1', new Uint8Array([1, 2, 3]));
        expect(Buffer.from(r.openSecret('grace:g1', sealed))).toEqual(Buffer.from([1, 2, 3]));
        expect(() => r.openSecret('grace:g2', sealed)).toThrow(/does not decrypt/);
        await r.saveGrace([
          { devId: 'g1', until: now + 60_000, sealed },
          { devId: 'g2', until: now - 1, sealed: r.sealSecret('grace:g2', new Uint8Array([4])) },
        ]);
        await r.saveGrace([{ devId: 'g3', until: now + 60_000, sealed: r.sealSecret('grace:g3', new Uint8Array([5])) }]); // adds, keeps g1
        const back = await r.takeGrace(now);
        expect(back.map((g) => g.devId).sort()).toEqual(['g1', 'g3']);
        expect(Buffer.from(r.openSecret('grace:g1', back.find((g) => g.devId === 'g1')!.sealed))).toEqual(Buffer.from([1, 2, 3]));
        expect(await r.takeGrace(now)).toEqual([]); // used once
      } finally {
        await r.close();
      }
    });

    it('everything survives reopening: devices and keys, accounts, rules, counters, tickets, audit, revision', async () => {
      const { f, r } = await make();
      const { key } = await r.addDevice('p1', 'sensor');
      await r.addAccount('papp', 'app', 'papp-password');
      await r.addRule('app', 'publish', 'cmd/#', 'e2e');
      await r.advanceCounter('p1', 42);
      await new RegistryTicketStore(r).putTicket(ticket('p1', 3, Date.now() + 60_000));
      const rev = await r.revision();
      const r2 = await f.reopen(r);
      try {
        expect(derivedFrom(await r2.handshakeKeys('p1'), key, 'p1')).toBe(true);
        expect(await r2.verifyAccount('papp', 'papp-password')).toMatchObject({ name: 'papp' });
        expect((await r2.getRole('app'))!.rules).toContainEqual({ action: 'publish', filter: 'cmd/#', mode: 'e2e' });
        expect(await r2.getCounter('p1')).toBe(42);
        expect(await new RegistryTicketStore(r2).getTicket('p1', new Uint8Array(16).fill(3))).toMatchObject({ chainIndex: 5 });
        expect(await r2.revision()).toBe(rev);
        expect((await r2.listAudit({ subject: 'p1' })).map((a) => a.kind)).toEqual(['device.add']);
      } finally {
        await r2.close();
      }
    });
  });
}
