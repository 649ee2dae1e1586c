/**
 * FileStorage (firmware/platform/moddable/file-storage.ts), the desktop
 * build's Storage, against a model of the SDK's `lin` file module: the
 * Storage contract (round trip, copies, limits, typed errors) and atomicity:
 * the process killed before any file call, in any write, leaves the old or
 * the new value, never a mix and never nothing. The kill scenario also runs
 * inside XS (file-storage.xs.test.ts).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toHex } from '../../firmware/core/bytes.js';
import { FileStorage } from '../../firmware/platform/moddable/file-storage.js';
import { code, FileModel, killDuringPuts } from './file-model.js';


function fresh() {
  const disk = new FileModel();
  disk.dirs.add('/tmp/x/');
  return { disk, storage: new FileStorage(disk.api(), '/tmp/x/') };
}

describe('FileStorage', () => {
  it('round-trips bytes (empty and 4000 B included), hands out copies, one file per key under <root>mqsec/', async () => {
    const { disk, storage } = fresh();
    expect(await storage.get('missing')).toBeUndefined();
    const big = new Uint8Array(100).map((_, i) => i);
    await storage.put('blob', big.subarray(10, 20));
    const got = await storage.get('blob');
    expect(got).toEqual(big.subarray(10, 20));
    got!.fill(0);
    expect(await storage.get('blob')).toEqual(big.subarray(10, 20));
    await storage.put('empty', new Uint8Array(0));
    expect(await storage.get('empty')).toEqual(new Uint8Array(0));
    await storage.put('x', new Uint8Array(4000).fill(7));
    expect((await storage.get('x'))!.length).toBe(4000);
    // a shorter value replaces a longer one entirely (the SDK's File does not truncate)
    await storage.put('x', new Uint8Array([1, 2]));
    expect(await storage.get('x')).toEqual(new Uint8Array([1, 2]));
    expect([...disk.files.keys()].sort()).toEqual(['/tmp/x/mqsec/blob', '/tmp/x/mqsec/empty', '/tmp/x/mqsec/x']);
    await storage.delete('x');
    await storage.delete('x');
    expect(await storage.get('x')).toBeUndefined();
  });

  it('refuses bad keys and oversize values with typed errors before touching a file', async () => {
    const { disk, storage } = fresh();
    const before = disk.calls;
    expect(await code(storage.put('0123456789abcdef', new Uint8Array(1)))).toBe('STORAGE');
    expect(await code(storage.put('.hidden', new Uint8Array(1)))).toBe('STORAGE');
    expect(await code(storage.put('a/b', new Uint8Array(1)))).toBe('STORAGE');
    expect(await code(storage.put('big', new Uint8Array(4001)))).toBe('STORAGE');
    expect(await code(storage.get('../etc'))).toBe('STORAGE');
    expect(disk.calls).toBe(before);
  });

  it('turns file-module failures into STORAGE errors', async () => {
    const disk = new FileModel(); // no root directory: every open fails
    const storage = new FileStorage(disk.api(), '/nowhere/');
    expect(await code(storage.put('k', new Uint8Array([1])))).toBe('STORAGE');
    expect(await code(storage.get('k'))).toBe('ok');
  });

  it('a leftover temporary file from a killed write is ignored and replaced', async () => {
    const { disk, storage } = fresh();
    await storage.put('k', new Uint8Array([1]));
    disk.files.set('/tmp/x/mqsec/.k.new', new Uint8Array([9, 9, 9, 9]));
    expect(await storage.get('k')).toEqual(new Uint8Array([1]));
    await storage.put('k', new Uint8Array([2]));
    expect(await storage.get('k')).toEqual(new Uint8Array([2]));
    expect(disk.files.has('/tmp/x/mqsec/.k.new')).toBe(false);
  });

  it('calls midWrite half-way through the temporary file, before the value replaces the old one', async () => {
    const disk = new FileModel();
    disk.dirs.add('/tmp/');
    const seen: string[] = [];
    const storage = new FileStorage(disk.api(), '/tmp/', 'mqsec', {
      midWrite: (key) => seen.push(`${key} tmp=${toHex(disk.files.get('/tmp/mqsec/.ctr.new')!)} old=${toHex(disk.files.get('/tmp/mqsec/ctr') ?? new Uint8Array(0))}`),
    });
    await storage.put('ctr', new Uint8Array([1, 2, 3, 4]));
    await storage.put('ctr', new Uint8Array([5, 6, 7, 8]));
    expect(seen).toEqual(['ctr tmp=0102 old=', 'ctr tmp=0506 old=01020304']);
  });

  it('killed before any file call of any write: the key holds the last completed value or the one being written', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 5 }), fc.integer({ min: 1, max: 60 }), async (values, killAt) => {
        const r = await killDuringPuts(values, killAt);
        const allowed = [r.completed >= 0 ? toHex(values[r.completed]) : null];
        if (r.killed && r.completed + 1 < values.length) allowed.push(toHex(values[r.completed + 1]));
        expect(allowed).toContain(r.read);
      }),
      { numRuns: 400 },
    );
  });

  it('the SDK preference module\'s way (delete, then rewrite in place) would fail the same property', async () => {
    // Guards the property itself: a non-atomic writer killed between delete and write loses the key.
    const disk = new FileModel();
    disk.dirs.add('/tmp/');
    const files = disk.api();
    const naivePut = (v: Uint8Array) => {
      files.delete('/tmp/pref.json');
      const f = files.open('/tmp/pref.json', true);
      f.write(v.slice().buffer);
      f.close();
    };
    naivePut(new Uint8Array([1]));
    disk.killAt = disk.calls + 2; // dies after the delete
    expect(() => naivePut(new Uint8Array([2]))).toThrow('killed');
    expect(disk.files.has('/tmp/pref.json')).toBe(false);
  });
});
