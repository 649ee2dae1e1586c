/**
 * The key service on its own (broker/keyservice): groups and members from the
 * policy (pure), its store (one suite, both implementations), and the
 * service's re-key rules: periodic, rotation, sequence-space exhaustion,
 * and what a removed member is told.
 */
import { describe, it, expect } from 'vitest';
import { join } from 'node:path';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { BUILTIN_ROLES, type Principal, type Role } from '../../broker/policy/policy.js';
import { filtersOverlap } from '../../broker/policy/topics.js';
import { KeyService, MemoryKeyServiceStore, SqliteKeyServiceStore, computeMembership, type KeyServiceStore } from '../../broker/keyservice/index.js';
import { GROUP_SEQ_LIMIT, GroupKeyring, deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { tempDir } from './helpers.js';

const suite = createNodeCryptoSuite();
const sensor: Role = { name: 'sensor', plaintext: false, rules: [{ action: 'publish', filter: 'sensors/%u/#', mode: 'e2e' }, { action: 'subscribe', filter: 'cmd/%u/#', mode: 'e2e' }] };
const app: Role = BUILTIN_ROLES.find((r) => r.name === 'app')!;
const partial: Role = { name: 'partial', plaintext: false, rules: [{ action: 'subscribe', filter: 'sensors/d1/temp' }] };
const P = (id: string, role: Role): Principal => ({ id, kind: 'device', role });

describe('groups and members from the policy (pure)', () => {
  it('one group per device and e2e rule; writers may publish into it, readers may read all of it', () => {
    const m = computeMembership([P('d1', sensor), P('d2', sensor), P('a1', app), P('p1', partial)], [sensor, app, partial]);
    expect([...m.groups.keys()]).toEqual(['cmd/d1/#', 'cmd/d2/#', 'sensors/d1/#', 'sensors/d2/#']);
    expect(m.groups.get('sensors/d1/#')).toEqual({ filter: 'sensors/d1/#', writers: ['d1'], readers: ['a1'] }); // p1 reads only part of it: no key
    expect(m.groups.get('cmd/d2/#')).toEqual({ filter: 'cmd/d2/#', writers: ['a1'], readers: ['d2'] });
    expect(m.overlapping).toEqual([]);
  });
  it('overlapping e2e filters: the first in sorted order wins, the other is reported', () => {
    const wide: Role = { name: 'wide', plaintext: false, rules: [{ action: 'publish', filter: 'sensors/#', mode: 'e2e' }] };
    const m = computeMembership([P('d1', sensor), P('w', wide)], [sensor, wide]);
    expect([...m.groups.keys()]).toEqual(['cmd/d1/#', 'sensors/#']);
    expect(m.overlapping).toEqual(['sensors/d1/#']);
  });
  it('filtersOverlap', () => {
    expect(filtersOverlap('a/+/c', 'a/b/#')).toBe(true);
    expect(filtersOverlap('a/#', 'a')).toBe(true);
    expect(filtersOverlap('a/b', 'a/c')).toBe(false);
    expect(filtersOverlap('a/b', 'a/b/c')).toBe(false);
    expect(filtersOverlap('#', '$SYS/x')).toBe(false);
  });
});

describe.each([
  ['memory', () => ({ open: () => new MemoryKeyServiceStore() as KeyServiceStore, reopens: false, done: () => {} })],
  [
    'sqlite',
    () => {
      const d = tempDir('mqsec-ks-');
      return { open: () => new SqliteKeyServiceStore(join(d.path, 'ks.db')) as KeyServiceStore, reopens: true, done: () => d.remove() };
    },
  ],
] as const)('key service store: %s', (_n, make) => {
  it('epochs move forward per group; sequence ranges never overlap until reset; durable where it says so', () => {
    const m = make();
    const s = m.open();
    expect([s.nextEpoch('a/#'), s.nextEpoch('a/#'), s.nextEpoch('b/#')]).toEqual([1, 2, 1]);
    expect([s.allocateSeq('x', 10), s.allocateSeq('x', 10), s.allocateSeq('y', 5)]).toEqual([0, 10, 0]);
    s.resetSeq('x');
    expect(s.allocateSeq('x', 3)).toBe(0);
    s.close();
    if (m.reopens) {
      const again = m.open();
      expect(again.nextEpoch('a/#')).toBe(3);
      expect(again.allocateSeq('x', 1)).toBe(3);
      again.close();
    }
    m.done();
  });

  it('keeps each member K_ks with its key identity (copies out, replaced on rotate, gone on delete)', () => {
    const m = make();
    const s = m.open();
    const k1 = new Uint8Array(32).fill(7);
    s.putMemberKey('d1', '100/1', k1);
    k1.fill(0);
    const got = s.memberKey('d1')!;
    expect(got.identity).toBe('100/1');
    expect(got.key).toEqual(new Uint8Array(32).fill(7));
    got.key.fill(0);
    expect(s.memberKey('d1')!.key).toEqual(new Uint8Array(32).fill(7)); // the caller's wipe does not reach the store
    s.putMemberKey('d1', '100/2', new Uint8Array(32).fill(8));
    expect(s.memberKey('d1')).toEqual({ identity: '100/2', key: new Uint8Array(32).fill(8) });
    s.close();
    const again = m.reopens ? m.open() : s;
    if (m.reopens) expect(again.memberKey('d1')!.identity).toBe('100/2');
    again.deleteMemberKey('d1');
    expect(again.memberKey('d1')).toBeUndefined();
    again.close();
    m.done();
  });

  it('importState takes another store over: epochs and allocations only move forward, keys come along', () => {
    const m = make();
    const from = new MemoryKeyServiceStore();
    from.nextEpoch('g/#');
    from.nextEpoch('g/#');
    from.allocateSeq('w', 100);
    from.putMemberKey('w', '1/1', new Uint8Array(32).fill(3));
    const s = m.open();
    for (let i = 0; i < 5; i++) s.nextEpoch('h/#');
    s.importState({ ...from.exportState(), epochs: [...from.exportState().epochs, ['h/#', 2]] });
    expect(s.nextEpoch('g/#')).toBe(3);
    expect(s.nextEpoch('h/#')).toBe(6); // never back
    expect(s.allocateSeq('w', 1)).toBe(100);
    expect(s.memberKey('w')).toEqual({ identity: '1/1', key: new Uint8Array(32).fill(3) });
    s.close();
    m.done();
  });
});

function service(opts: { now?: () => number; seqBlock?: number; rekeyIntervalMs?: number } = {}) {
  const keys = new Map([['d1', new Uint8Array(32).fill(1)], ['a1', new Uint8Array(32).fill(2)]]);
  const sent: { id: string; payload: Uint8Array }[] = [];
  const rekeys: string[] = [];
  const ks = new KeyService({
    suite,
    store: new MemoryKeyServiceStore(),
    memberKey: (id) => (keys.has(id) ? deriveKeyServiceKey(suite, keys.get(id)!, id) : undefined),
    send: (id, payload) => sent.push({ id, payload }),
    onRekey: (f, e, why) => rekeys.push(`${f}@${e}:${why}`),
    ...opts,
  });
  ks.update(computeMembership([P('d1', sensor), P('a1', app)], [sensor, app]));
  const member = (id: string) => new GroupKeyring({ suite, id, keyServiceKey: deriveKeyServiceKey(suite, keys.get(id)!, id) });
  return { ks, sent, rekeys, member };
}

describe('key service', () => {
  it('answers a request with the member groups and a sequence range; refuses unknown principals and bad tags', () => {
    const { ks, member } = service();
    const d1 = member('d1');
    d1.acceptDelivery(ks.handleRequest('d1', d1.request()));
    expect(d1.list().map((g) => g.filter)).toEqual(['cmd/d1/#', 'sensors/d1/#']);
    expect(d1.sequence).toEqual({ next: 0, limit: 4096 });
    ks.memberLeft('d1');
    const again = member('d1');
    again.acceptDelivery(ks.handleRequest('d1', again.request()));
    expect(again.sequence).toEqual({ next: 4096, limit: 8192 }); // a new connection never reuses a range
    expect(() => ks.handleRequest('zz', member('a1').request())).toThrow(/not an active principal/);
    expect(() => ks.handleRequest('a1', member('d1').request())).toThrow(/tag/);
  });

  it('refills on one connection double the range up to 65,536; a new connection starts at 4,096 again; ranges never overlap', () => {
    const { ks, member } = service();
    const d1 = member('d1');
    const ranges: [number, number][] = [];
    for (let i = 0; i < 7; i++) {
      d1.acceptDelivery(ks.handleRequest('d1', d1.request()));
      ranges.push([d1.sequence.next, d1.sequence.limit]);
    }
    expect(ranges.map(([b, l]) => l - b)).toEqual([4096, 8192, 16384, 32768, 65536, 65536, 65536]);
    for (let i = 1; i < ranges.length; i++) expect(ranges[i][0]).toBe(ranges[i - 1][1]);
    ks.memberLeft('d1');
    const next = member('d1');
    next.acceptDelivery(ks.handleRequest('d1', next.request()));
    expect(next.sequence.limit - next.sequence.next).toBe(4096);
    expect(next.sequence.next).toBe(ranges[6][1]);
  });

  it('sequence space used up: every group the writer writes is re-keyed before the range restarts at 0', () => {
    const { ks, member, rekeys } = service({ seqBlock: GROUP_SEQ_LIMIT / 2 });
    const d1 = member('d1');
    d1.acceptDelivery(ks.handleRequest('d1', d1.request()));
    d1.acceptDelivery(ks.handleRequest('d1', d1.request()));
    rekeys.length = 0;
    d1.acceptDelivery(ks.handleRequest('d1', d1.request()));
    expect(rekeys).toEqual(['sensors/d1/#@2:sequence space']);
    expect(d1.sequence.next).toBe(0);
    expect(d1.list().find((g) => g.filter === 'sensors/d1/#')!.epoch).toBe(2);
  });

  it('periodic and operator re-keys reach connected members at once', () => {
    let now = 0;
    const { ks, member, sent, rekeys } = service({ now: () => now, rekeyIntervalMs: 60_000 });
    const a1 = member('a1');
    a1.acceptDelivery(ks.handleRequest('a1', a1.request()));
    now = 59_999;
    ks.tick();
    expect(sent).toEqual([]);
    now = 60_000;
    ks.tick();
    expect(rekeys.filter((r) => r.endsWith('interval')).sort()).toEqual(['cmd/d1/#@2:interval', 'sensors/d1/#@2:interval']);
    expect(a1.acceptDelivery(sent.shift()!.payload).sort()).toEqual(['cmd/d1/#', 'sensors/d1/#']);
    expect(ks.rotate('sensors/d1/#')).toBe(3);
    expect(a1.acceptDelivery(sent.shift()!.payload)).toEqual(['sensors/d1/#']);
  });

  it('a member removed from the policy is told to forget, then gets nothing more', () => {
    const { ks, member, sent } = service();
    const a1 = member('a1');
    a1.acceptDelivery(ks.handleRequest('a1', a1.request()));
    ks.update(computeMembership([P('d1', sensor)], [sensor, app]));
    expect(sent.map((s) => s.id)).toEqual(['a1']);
    a1.acceptDelivery(sent[0].payload);
    expect(a1.list()).toEqual([]);
    ks.rotate('sensors/d1/#');
    expect(sent.length).toBe(1);
  });
});
