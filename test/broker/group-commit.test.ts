/**
 * Group commit of the registry's durable writes (broker/registry/group-commit.ts):
 * one transaction per event-loop turn, every caller answered only after the
 * commit; and the crash test: a broker killed right after answering a
 * CONNECT never accepts any token it answered again.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { DeviceSecureSession, ServerHandshake } from '../../firmware/secure/index.js';
import { GroupCommit } from '../../broker/registry/group-commit.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { tempDir } from './helpers.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function fresh(): string {
  const d = tempDir('mqsec-gc-');
  cleanups.push(d.remove);
  return d.path;
}

describe('GroupCommit', () => {
  it('writes asked for in one turn share one transaction; nobody is answered before it commits', async () => {
    const log: string[] = [];
    const gc = new GroupCommit((body) => {
      log.push('begin');
      body();
      log.push('commit');
    });
    const answered: number[] = [];
    const ps = [1, 2, 3].map((i) =>
      gc.run(() => {
        log.push(`write ${i}`);
        return i * 10;
      }).then((v) => {
        answered.push(v);
        log.push(`answer ${v}`);
      }),
    );
    expect(log).toEqual([]); // nothing runs in the caller's turn
    await Promise.all(ps);
    expect(log).toEqual(['begin', 'write 1', 'write 2', 'write 3', 'commit', 'answer 10', 'answer 20', 'answer 30']);
    expect([gc.groups, gc.writes]).toEqual([1, 3]);
    await gc.run(() => 0);
    expect([gc.groups, gc.writes]).toEqual([2, 4]);
  });

  it('a failing write fails alone; a failed commit fails the whole group', async () => {
    let commitFails = false;
    const gc = new GroupCommit((body) => {
      body();
      if (commitFails) throw new Error('disk full');
    });
    const [a, b] = await Promise.allSettled([gc.run(() => 'a'), gc.run(() => {
      throw new Error('constraint');
    })]);
    expect(a).toEqual({ status: 'fulfilled', value: 'a' });
    expect(b.status === 'rejected' && String(b.reason)).toMatch(/constraint/);
    commitFails = true;
    const r = await Promise.allSettled([gc.run(() => 1), gc.run(() => 2)]);
    expect(r.map((x) => x.status)).toEqual(['rejected', 'rejected']);
    expect(gc.groups).toBe(1);
  });

  it('on SQLite: concurrent counter raises are compare-and-set in queue order, and roll back with a failed commit', async () => {
    const r = SqliteRegistry.open(fresh());
    cleanups.push(() => r.close());
    await r.addDevice('d1', 'sensor');
    const store = new RegistryTicketStore(r);
    // the same counter twice in one turn (a replayed CONNECT racing the original): exactly one wins
    expect(await Promise.all([store.advanceCounter('d1', 5), store.advanceCounter('d1', 5), store.advanceCounter('d1', 4), store.advanceCounter('d1', 7)])).toEqual([true, false, false, true]);
    expect(await store.getCounter('d1')).toBe(7);
    expect(r.commits.groups).toBe(1);
    // a write that throws inside the group becomes STORAGE for its caller only
    const bad = { devId: 'd1', sid: new Uint8Array(8), suite: 1, authKey: new Uint8Array(32), chainStart: 8, chainIndex: 8, chainKey: new Uint8Array(32), expiresAt: Number.NaN };
    const [ok, failed] = await Promise.allSettled([store.advanceCounter('d1', 9), store.putTicket({ ...bad, expiresAt: undefined as unknown as number })]);
    expect(ok).toEqual({ status: 'fulfilled', value: true });
    expect(failed.status === 'rejected' && (failed.reason as { code?: string }).code).toBe('STORAGE');
  });
});

const ACCEPTOR = fileURLToPath(new URL('./fixtures/resume-acceptor.ts', import.meta.url));

interface Acceptor {
  send(index: number, password: Uint8Array): void;
  /** Resolves with the reply line for `index`. */
  reply(index: number): Promise<string>;
  replies: Map<number, string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startAcceptor(dataDir: string, devId: string, crashAfter: number): Promise<Acceptor> {
  const child = spawn(process.execPath, ['--import', 'tsx', ACCEPTOR, dataDir, devId, String(crashAfter)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const replies = new Map<number, string>();
  const waiters = new Map<number, (line: string) => void>();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += String(d);
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line === 'READY') ready();
      const index = Number(line.split(' ')[1]);
      replies.set(index, line);
      waiters.get(index)?.(line);
    }
  });
  child.stdin.on('error', () => {}); // writes after the crash
  await Promise.race([isReady, exited.then(() => Promise.reject(new Error('acceptor exited before READY')))]);
  return {
    send: (i, pw) => void child.stdin.write(`${i} ${Buffer.from(pw).toString('base64')}\n`),
    reply: (i) => (replies.has(i) ? Promise.resolve(replies.get(i)!) : new Promise((r) => waiters.set(i, r))),
    replies,
    exited,
  };
}

describe('crash safety of the group commit', () => {
  it('nothing accepted before a crash is accepted again; the device goes on with its next counter', { timeout: 60_000 }, async () => {
    const dir = fresh();
    const devId = 'crash01';
    // provision and run phase 1 in this process: the device gets its ticket
    const registry = SqliteRegistry.open(dir);
    const { key } = await registry.addDevice(devId, 'sensor');
    const suite = createNodeCryptoSuite();
    const store = new RegistryTicketStore(registry);
    const server = new ServerHandshake({
      suite,
      clock: { now: () => Date.now() },
      ticketStore: store,
      lookupDevice: async (id) => {
        const k = await registry.handshakeKeys(id);
        return k && { keys: { authKey: k.authKey, pskKey: k.pskKey }, status: 'active' as const };
      },
    });
    const device = new DeviceSecureSession({ suite, devId, deviceKey: key, storage: new MemoryStorage(), storageKey: 'mqsec_state' });
    const kx1 = await device.connectCredentials();
    const p1 = await server.acceptConnect(devId, devId, kx1.password);
    if (p1.kind !== 'phase1') throw new Error('expected phase 1');
    await device.onConnack(0);
    const kx3 = await device.handleIncoming(p1.reply.topic, p1.reply.payload);
    if (kx3.kind !== 'handshake') throw new Error('KX2 refused');
    (await server.completePhase1(p1.pending, kx3.reply.payload)).close();
    await registry.close();

    // 60 RESUME tokens with increasing counters, as 60 reconnects would send them
    const tokens: Uint8Array[] = [];
    for (let i = 0; i < 60; i++) {
      const c = await device.connectCredentials();
      expect(c.phase).toBe(2);
      tokens.push(c.password);
      device.onConnectionLost();
    }

    // the broker answers CONNECTs arriving in bursts and dies right after its 25th CONNACK
    const first = await startAcceptor(dir, devId, 25);
    for (let burst = 0; burst < 6; burst++) {
      for (let i = burst * 10; i < burst * 10 + 10; i++) first.send(i, tokens[i]);
      await new Promise((r) => setTimeout(r, 20));
    }
    const end = await first.exited;
    expect(end.signal).toBe('SIGKILL');
    const acked = [...first.replies.entries()].filter(([, l]) => l.startsWith('ok')).map(([i]) => i).sort((a, b) => a - b);
    expect(acked.length).toBe(25);

    // restarted: every token answered before the crash is refused, tried one by one from the lowest
    const second = await startAcceptor(dir, devId, 0);
    for (const i of acked) {
      second.send(i, tokens[i]);
      expect(await second.reply(i)).toMatch(/^no \d+ (REPLAY|COUNTER_ROLLBACK)$/);
    }
    // and the device is not locked out: its next reconnect is accepted
    const next = await device.connectCredentials();
    second.send(1000, next.password);
    expect(await second.reply(1000)).toBe('ok 1000');
  });
});
