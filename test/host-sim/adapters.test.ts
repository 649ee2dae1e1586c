/**
 * The Node platform adapters: TCP transport events and error mapping, file
 * and memory storage (limits, atomic replace, persistence across instances),
 * randomness, clock and timer.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MqsecError } from '../../firmware/core/errors.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import type { Storage } from '../../firmware/core/platform.js';
import { FileStorage } from '../../host-sim/adapters/file-storage.js';
import { createNodePlatform, nodeClock, nodeRandom, nodeTimer } from '../../host-sim/adapters/node-platform.js';
import { NodeTcpTransport } from '../../host-sim/adapters/tcp-transport.js';
import { freePort } from '../helpers/brokers.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-storage-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe.each([
  ['MemoryStorage', () => new MemoryStorage() as Storage],
  ['FileStorage', () => new FileStorage(path.join(dir, `s-${Math.random().toString(36).slice(2)}`)) as Storage],
])('%s', (_name, make) => {
  it('stores, replaces, copies and deletes values', async () => {
    const s = make();
    expect(await s.get('ctr')).toBeUndefined();
    const v = new Uint8Array([1, 2, 3]);
    await s.put('ctr', v);
    v[0] = 9; // the stored value is a copy
    expect(await s.get('ctr')).toEqual(new Uint8Array([1, 2, 3]));
    await s.put('ctr', new Uint8Array([4]));
    expect(await s.get('ctr')).toEqual(new Uint8Array([4]));
    await s.put('empty', new Uint8Array(0));
    expect(await s.get('empty')).toEqual(new Uint8Array(0));
    await s.delete('ctr');
    await s.delete('ctr'); // deleting a missing key is fine
    expect(await s.get('ctr')).toBeUndefined();
  });

  it('enforces NVS-like limits: keys of 1..15 safe characters, values up to 4000 bytes', async () => {
    const s = make();
    for (const key of ['', 'a'.repeat(16), '../etc', 'a/b', '.', '..', '.hidden', 'ключ']) {
      await expect(s.put(key, new Uint8Array(1))).rejects.toMatchObject({ code: 'STORAGE' });
      await expect(s.get(key)).rejects.toMatchObject({ code: 'STORAGE' });
    }
    // dotted names such as the protocol's 'mqsec.state' are fine
    await s.put('mqsec.state', new Uint8Array([1]));
    expect(await s.get('mqsec.state')).toEqual(new Uint8Array([1]));
    await s.put('a'.repeat(15), new Uint8Array(4000));
    await expect(s.put('big', new Uint8Array(4001))).rejects.toMatchObject({ code: 'STORAGE' });
  });
});

describe('FileStorage', () => {
  it('persists across instances and leaves no temporary files', async () => {
    const d = path.join(dir, 'persist');
    const a = new FileStorage(d);
    await Promise.all(Array.from({ length: 20 }, (_, i) => a.put('ticket', new Uint8Array([i]))));
    const b = new FileStorage(d);
    const v = await b.get('ticket');
    expect(v).toHaveLength(1);
    expect(await readdir(d)).toEqual(['ticket']);
  });

  it('maps file system failures to STORAGE', async () => {
    // A directory path whose parent is a regular file: mkdir fails with ENOTDIR.
    const file = path.join(dir, 'plain-file');
    await writeFile(file, 'x');
    const s = new FileStorage(path.join(file, 'sub'));
    await expect(s.put('k', new Uint8Array(1))).rejects.toBeInstanceOf(MqsecError);
    await expect(s.put('k', new Uint8Array(1))).rejects.toMatchObject({ code: 'STORAGE' });
  });
});

describe('NodeTcpTransport', () => {
  it('connects, exchanges bytes, and reports a local close without an error', async () => {
    const server = net.createServer((sock) => sock.pipe(sock)); // echo
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const events: string[] = [];
      const got: number[] = [];
      let closeError: MqsecError | undefined | null = null;
      const closed = new Promise<void>((resolve) => {
        const conn = new NodeTcpTransport().connect(
          { host: '127.0.0.1', port },
          {
            onConnect: () => {
              events.push('connect');
              conn.write(new Uint8Array([1, 2, 3]));
            },
            onData: (chunk) => {
              got.push(...chunk);
              if (got.length === 3) conn.close();
            },
            onClose: (e) => {
              closeError = e;
              events.push('close');
              resolve();
            },
          },
        );
      });
      await closed;
      expect(events).toEqual(['connect', 'close']);
      expect(got).toEqual([1, 2, 3]);
      expect(closeError).toBeUndefined();
    } finally {
      server.close();
    }
  });

  it('reports a refused connection and a peer close as CONNECTION_CLOSED, exactly once', async () => {
    const port = await freePort(); // nothing listens here
    const refused = await new Promise<MqsecError | undefined>((resolve) => {
      new NodeTcpTransport().connect({ host: '127.0.0.1', port }, { onConnect: () => {}, onData: () => {}, onClose: resolve });
    });
    expect(refused).toMatchObject({ code: 'CONNECTION_CLOSED' });

    const server = net.createServer((sock) => sock.end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const closes: (MqsecError | undefined)[] = [];
      await new Promise<void>((resolve) => {
        new NodeTcpTransport().connect(
          { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port },
          {
            onConnect: () => {},
            onData: () => {},
            onClose: (e) => {
              closes.push(e);
              setTimeout(resolve, 50); // a second onClose would land here
            },
          },
        );
      });
      expect(closes).toHaveLength(1);
      expect(closes[0]).toMatchObject({ code: 'CONNECTION_CLOSED' });
    } finally {
      server.close();
    }
  });
});

describe('platform services', () => {
  it('random fills, the clock is monotonic, timers fire and clear', async () => {
    const a = new Uint8Array(32);
    const b = new Uint8Array(32);
    nodeRandom.fill(a);
    nodeRandom.fill(b);
    expect(a).not.toEqual(b);
    const t0 = nodeClock.now();
    const fired: string[] = [];
    const h = nodeTimer.set(() => fired.push('cleared'), 5);
    nodeTimer.clear(h);
    await new Promise<void>((r) => nodeTimer.set(() => (fired.push('fired'), r()), 5));
    expect(fired).toEqual(['fired']);
    expect(nodeClock.now()).toBeGreaterThanOrEqual(t0);
  });

  it('createNodePlatform picks file storage when given a directory', async () => {
    const p = createNodePlatform({ storageDir: path.join(dir, 'platform') });
    expect(p.storage).toBeInstanceOf(FileStorage);
    expect(createNodePlatform().storage).toBeInstanceOf(MemoryStorage);
    expect(p.transport).toBeInstanceOf(NodeTcpTransport);
  });
});
