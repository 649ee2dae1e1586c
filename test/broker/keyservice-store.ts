/**
 * The key service store's shared test suite (as registry-store.ts for the
 * registry): every implementation of broker/keyservice/store.ts runs exactly
 * these tests (keyservice-store-local.test.ts: memory and SQLite;
 * keyservice-store-postgres.test.ts: PostgreSQL). Epochs, sequence ranges,
 * K_ks, import, durability across reopening, and two handles on the same
 * state racing (two replicas): never the same epoch, never overlapping ranges.
 */
import { describe, expect, it } from 'vitest';
import { MemoryKeyServiceStore, type KeyServiceStore } from '../../broker/keyservice/store.js';

export interface KeyStoreFactory {
  /** A fresh, empty store. */
  open(): Promise<KeyServiceStore>;
  /** The same state opened again after `s` was closed (another process would see it); undefined: not durable. */
  reopen?(s: KeyServiceStore): Promise<KeyServiceStore>;
  /** Another handle on the same state while `s` stays open (a second replica; the same object for memory). */
  second(s: KeyServiceStore): Promise<KeyServiceStore>;
}

/** No two ranges [base, base+size) overlap. */
export function overlapping(ranges: [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const bad: [number, number][] = [];
  for (let i = 1; i < sorted.length; i++) if (sorted[i]![0] < sorted[i - 1]![0] + sorted[i - 1]![1]) bad.push(sorted[i]!);
  return bad;
}

export function keyServiceStoreSuite(name: string, factory: () => KeyStoreFactory): void {
  describe(`key service store: ${name}`, () => {
    it('epochs move forward per group; sequence ranges never overlap until reset; durable where it says so', async () => {
      const f = factory();
      const s = await f.open();
      expect([await s.nextEpoch('a/#'), await s.nextEpoch('a/#'), await s.nextEpoch('b/#')]).toEqual([1, 2, 1]);
      expect([await s.allocateSeq('x', 10), await s.allocateSeq('x', 10), await s.allocateSeq('y', 5)]).toEqual([0, 10, 0]);
      await s.resetSeq('x');
      expect(await s.allocateSeq('x', 3)).toBe(0);
      if (!f.reopen) return s.close();
      const again = await f.reopen(s);
      expect(await again.nextEpoch('a/#')).toBe(3);
      expect(await again.allocateSeq('x', 1)).toBe(3);
      expect(await again.allocateSeq('y', 1)).toBe(5);
      await again.close();
    });

    it('keeps each member K_ks with its key identity (copies out, replaced on rotate, gone on delete)', async () => {
      const f = factory();
      const s = await f.open();
      const k1 = new Uint8Array(32).fill(7);
      await s.putMemberKey('d1', '100/1', k1);
      k1.fill(0);
      const got = (await s.memberKey('d1'))!;
      expect(got.identity).toBe('100/1');
      expect(got.key).toEqual(new Uint8Array(32).fill(7));
      got.key.fill(0);
      expect((await s.memberKey('d1'))!.key).toEqual(new Uint8Array(32).fill(7)); // the caller's wipe does not reach the store
      await s.putMemberKey('d1', '100/2', new Uint8Array(32).fill(8));
      expect(await s.memberKey('d1')).toEqual({ identity: '100/2', key: new Uint8Array(32).fill(8) });
      expect(await s.memberKey('nobody')).toBeUndefined();
      const again = f.reopen ? await f.reopen(s) : s;
      expect(await again.memberKey('d1')).toEqual({ identity: '100/2', key: new Uint8Array(32).fill(8) });
      await again.deleteMemberKey('d1');
      expect(await again.memberKey('d1')).toBeUndefined();
      await again.close();
    });

    it('importState takes another store over: epochs and allocations only move forward, keys come along', async () => {
      const f = factory();
      const from = new MemoryKeyServiceStore();
      await from.nextEpoch('g/#');
      await from.nextEpoch('g/#');
      await from.allocateSeq('w', 100);
      await from.putMemberKey('w', '1/1', new Uint8Array(32).fill(3));
      const s = await f.open();
      for (let i = 0; i < 5; i++) await s.nextEpoch('h/#');
      const state = await from.exportState();
      await s.importState({ ...state, epochs: [...state.epochs, ['h/#', 2]] });
      expect(await s.nextEpoch('g/#')).toBe(3);
      expect(await s.nextEpoch('h/#')).toBe(6); // never back
      expect(await s.allocateSeq('w', 1)).toBe(100);
      expect(await s.memberKey('w')).toEqual({ identity: '1/1', key: new Uint8Array(32).fill(3) });
      const out = await s.exportState();
      expect(new Map(out.epochs)).toEqual(new Map([['g/#', 3], ['h/#', 6]]));
      expect(new Map(out.seqs)).toEqual(new Map([['w', 101]]));
      expect(out.keys).toEqual([['w', { identity: '1/1', key: new Uint8Array(32).fill(3) }]]);
      await s.close();
      await from.close();
    });

    it('two handles on the same state racing: every epoch once, no overlapping ranges', async () => {
      const f = factory();
      const a = await f.open();
      const b = await f.second(a);
      const N = 60;
      const epochs = await Promise.all(Array.from({ length: N }, (_, i) => (i % 2 ? a : b).nextEpoch('race/#')));
      expect(new Set(epochs).size).toBe(N);
      expect(Math.max(...epochs)).toBe(N);
      const sizes = Array.from({ length: N }, (_, i) => 1 + ((i * 37) % 500));
      const bases = await Promise.all(sizes.map((n, i) => (i % 2 ? b : a).allocateSeq('writer', n)));
      const ranges = bases.map((base, i) => [base, sizes[i]!] as [number, number]);
      expect(overlapping(ranges)).toEqual([]);
      expect(await a.allocateSeq('writer', 1)).toBe(sizes.reduce((x, y) => x + y, 0)); // and no gap either
      if (b !== a) await b.close();
      await a.close();
    });
  });
}
