/**
 * The key service on its own (broker/keyservice): groups and members from the
 * policy (pure), and the service's re-key rules: periodic, rotation, sequence-space exhaustion,
 * and what a removed member is told. Its store has its own shared suite
 * (test/broker/keyservice-store.ts, run against memory, SQLite and PostgreSQL).
 */
import { describe, it, expect } from 'vitest';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { BUILTIN_ROLES, type Principal, type Role } from '../../broker/policy/policy.js';
import { filtersOverlap } from '../../broker/policy/topics.js';
import { KeyService, MemoryKeyServiceStore, computeMembership } from '../../broker/keyservice/index.js';
import { GROUP_SEQ_LIMIT, GroupKeyring, deriveKeyServiceKey } from '../../firmware/secure/group.js';

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

async function service(opts: { now?: () => number; seqBlock?: number; rekeyIntervalMs?: number } = {}) {
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
  await ks.update(computeMembership([P('d1', sensor), P('a1', app)], [sensor, app]));
  const member = (id: string) => new GroupKeyring({ suite, id, keyServiceKey: deriveKeyServiceKey(suite, keys.get(id)!, id) });
  return { ks, sent, rekeys, member };
}

describe('key service', () => {
  it('answers a request with the member groups and a sequence range; refuses unknown principals and bad tags', async () => {
    const { ks, member } = await service();
    const d1 = member('d1');
    d1.acceptDelivery(await ks.handleRequest('d1', d1.request()));
    expect(d1.list().map((g) => g.filter)).toEqual(['cmd/d1/#', 'sensors/d1/#']);
    expect(d1.sequence).toEqual({ next: 0, limit: 4096 });
    await ks.memberLeft('d1');
    const again = member('d1');
    again.acceptDelivery(await ks.handleRequest('d1', again.request()));
    expect(again.sequence).toEqual({ next: 4096, limit: 8192 }); // a new connection never reuses a range
    await expect(ks.handleRequest('zz', member('a1').request())).rejects.toThrow(/not an active principal/);
    await expect(ks.handleRequest('a1', member('d1').request())).rejects.toThrow(/tag/);
  });

  it('refills on one connection double the range up to 65,536; a new connection starts at 4,096 again; ranges never overlap', async () => {
    const { ks, member } = await service();
    const d1 = member('d1');
    const ranges: [number, number][] = [];
    for (let i = 0; i < 7; i++) {
      d1.acceptDelivery(await ks.handleRequest('d1', d1.request()));
      ranges.push([d1.sequence.next, d1.sequence.limit]);
    }
    expect(ranges.map(([b, l]) => l - b)).toEqual([4096, 8192, 16384, 32768, 65536, 65536, 65536]);
    for (let i = 1; i < ranges.length; i++) expect(ranges[i][0]).toBe(ranges[i - 1][1]);
    await ks.memberLeft('d1');
    const next = member('d1');
    next.acceptDelivery(await ks.handleRequest('d1', next.request()));
    expect(next.sequence.limit - next.sequence.next).toBe(4096);
    expect(next.sequence.next).toBe(ranges[6][1]);
  });

  it('sequence space used up: every group the writer writes is re-keyed before the range restarts at 0', async () => {
    const { ks, member, rekeys } = await service({ seqBlock: GROUP_SEQ_LIMIT / 2 });
    const d1 = member('d1');
    d1.acceptDelivery(await ks.handleRequest('d1', d1.request()));
    d1.acceptDelivery(await ks.handleRequest('d1', d1.request()));
    rekeys.length = 0;
    d1.acceptDelivery(await ks.handleRequest('d1', d1.request()));
    expect(rekeys).toEqual(['sensors/d1/#@2:sequence space']);
    expect(d1.sequence.next).toBe(0);
    expect(d1.list().find((g) => g.filter === 'sensors/d1/#')!.epoch).toBe(2);
  });

  it('periodic and operator re-keys reach connected members at once', async () => {
    let now = 0;
    const { ks, member, sent, rekeys } = await service({ now: () => now, rekeyIntervalMs: 60_000 });
    const a1 = member('a1');
    a1.acceptDelivery(await ks.handleRequest('a1', a1.request()));
    now = 59_999;
    await ks.tick();
    expect(sent).toEqual([]);
    now = 60_000;
    await ks.tick();
    expect(rekeys.filter((r) => r.endsWith('interval')).sort()).toEqual(['cmd/d1/#@2:interval', 'sensors/d1/#@2:interval']);
    expect(a1.acceptDelivery(sent.shift()!.payload).sort()).toEqual(['cmd/d1/#', 'sensors/d1/#']);
    expect(await ks.rotate('sensors/d1/#')).toBe(3);
    expect(a1.acceptDelivery(sent.shift()!.payload)).toEqual(['sensors/d1/#']);
  });

  it('a member removed from the policy is told to forget, then gets nothing more', async () => {
    const { ks, member, sent } = await service();
    const a1 = member('a1');
    a1.acceptDelivery(await ks.handleRequest('a1', a1.request()));
    await ks.update(computeMembership([P('d1', sensor)], [sensor, app]));
    expect(sent.map((s) => s.id)).toEqual(['a1']);
    a1.acceptDelivery(sent[0].payload);
    expect(a1.list()).toEqual([]);
    await ks.rotate('sensors/d1/#');
    expect(sent.length).toBe(1);
  });

  it('applies operations in the order they arrived, one at a time, even with a slow store', async () => {
    // a store whose every write takes a while: without the queue, the later request would
    // overtake the earlier one and a "connection ended" would drop the newer answer
    const store = new MemoryKeyServiceStore();
    const slow = Object.assign(Object.create(store) as MemoryKeyServiceStore, {
      allocateSeq: async (id: string, n: number) => (await new Promise((r) => setTimeout(r, 20)), store.allocateSeq(id, n)),
      nextEpoch: async (f: string) => (await new Promise((r) => setTimeout(r, 5)), store.nextEpoch(f)),
    });
    const keys = new Map([['d1', new Uint8Array(32).fill(1)]]);
    const sent: string[] = [];
    const ks = new KeyService({ suite, store: slow, memberKey: (id) => (keys.has(id) ? deriveKeyServiceKey(suite, keys.get(id)!, id) : undefined), send: (id) => sent.push(id) });
    const update = ks.update(computeMembership([P('d1', sensor)], [sensor]));
    const d1 = new GroupKeyring({ suite, id: 'd1', keyServiceKey: deriveKeyServiceKey(suite, keys.get('d1')!, 'd1') });
    const first = ks.handleRequest('d1', d1.request()); // queued behind the update: the groups exist by then
    const order: string[] = [];
    await Promise.all([update.then(() => order.push('update')), first.then(() => order.push('request'))]);
    expect(order).toEqual(['update', 'request']);
    d1.acceptDelivery(await first);
    expect(d1.list().map((g) => g.filter)).toEqual(['cmd/d1/#', 'sensors/d1/#']);
  });
});

/** A memory store whose sequence allocations can be rolled back to a saved point (a restored database under a running key service). */
class RollbackStore extends MemoryKeyServiceStore {
  private seq = new Map<string, number>();
  private saved = new Map<string, number>();
  override async allocateSeq(id: string, size: number): Promise<number> {
    const base = this.seq.get(id) ?? 0;
    this.seq.set(id, base + size);
    return base;
  }
  override async resetSeq(id: string): Promise<void> {
    this.seq.delete(id);
  }
  save(): void {
    this.saved = new Map(this.seq);
  }
  rollBack(): void {
    this.seq = new Map(this.saved);
  }
}

describe('key service over a store rolled back under it (docs/operations.md "Scaling", restore generation)', () => {
  it('a range below one it handed out: the writer\'s groups are re-keyed first, so no (key, nonce) is used twice', async () => {
    const store = new RollbackStore();
    const keys = new Map([['d1', new Uint8Array(32).fill(1)], ['a1', new Uint8Array(32).fill(2)]]);
    const rekeys: string[] = [];
    const sent: { id: string; payload: Uint8Array }[] = [];
    const ks = new KeyService({
      suite,
      store,
      memberKey: (id) => (keys.has(id) ? deriveKeyServiceKey(suite, keys.get(id)!, id) : undefined),
      send: (id, payload) => sent.push({ id, payload }),
      onRekey: (f, e, why) => rekeys.push(`${f}@${e}:${why}`),
    });
    await ks.update(computeMembership([P('d1', sensor), P('a1', app)], [sensor, app]));
    const member = (id: string) => new GroupKeyring({ suite, id, keyServiceKey: deriveKeyServiceKey(suite, keys.get(id)!, id) });
    const reader = member('a1');
    reader.acceptDelivery(await ks.handleRequest('a1', reader.request()));
    store.save(); // the backup

    const topic = 'sensors/d1/t';
    const plaintext = new TextEncoder().encode('{"t":21.5}');
    const first = member('d1');
    first.acceptDelivery(await ks.handleRequest('d1', first.request()));
    expect(first.sequence).toEqual({ next: 0, limit: 4096 });
    const sealedFirst = first.seal(topic, plaintext);
    await ks.memberLeft('d1');

    store.rollBack(); // the restore: the store has forgotten that [0, 4096) was handed out
    rekeys.length = 0;
    const second = member('d1');
    second.acceptDelivery(await ks.handleRequest('d1', second.request()));
    expect(second.sequence).toEqual({ next: 0, limit: 4096 }); // the same range again...
    expect(rekeys).toEqual(['sensors/d1/#@2:store rolled back']); // ...under a new key
    const sealedSecond = second.seal(topic, plaintext);
    // same plaintext, same sequence number: only a new key keeps the envelopes apart
    expect(Buffer.from(sealedSecond).equals(Buffer.from(sealedFirst))).toBe(false);
    expect(second.list().find((g) => g.filter === 'sensors/d1/#')!.epoch).toBe(2);
    // the connected reader was pushed the new epoch and opens what is sealed under it
    expect(reader.acceptDelivery(sent.find((s) => s.id === 'a1')!.payload)).toEqual(['sensors/d1/#']);
    expect(new TextDecoder().decode(reader.open(topic, sealedSecond).plaintext)).toBe('{"t":21.5}');

    // an ordinary next connection (the store moving forward again) re-keys nothing
    await ks.memberLeft('d1');
    rekeys.length = 0;
    const third = member('d1');
    third.acceptDelivery(await ks.handleRequest('d1', third.request()));
    expect(third.sequence).toEqual({ next: 4096, limit: 8192 });
    expect(rekeys).toEqual([]);
  });
});
