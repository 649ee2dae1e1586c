/**
 * Broker limits that only show on a live broker: the per-device phase-1
 * budget (spent only after the KX1 MAC verified, so nobody can lock a device
 * out by forging its KX1), the connection cap, and the per-second audit
 * budget that keeps a flood of failures out of the database. Each test starts
 * its own broker with a small limit on a free loopback port.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { connect as tcpConnect, type Socket } from 'node:net';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { tempDir, testBroker, TestDevice, TestApp, tryLogin, waitFor } from './helpers.js';
import type { RunningBroker } from '../../broker/server.js';

let broker: RunningBroker | undefined;
let dir: ReturnType<typeof tempDir> | undefined;
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await broker?.stop();
  broker = undefined;
  dir?.remove();
  dir = undefined;
});

async function start(limits: NonNullable<Parameters<typeof testBroker>[1]>['limits']) {
  dir = tempDir();
  broker = await testBroker(dir.path, { limits });
  return broker;
}

/**
 * Runs phase 1 for `devId` and disconnects: the ticket in `storage` is dropped
 * first, the counter kept (the broker refuses a counter it has seen).
 */
async function freshPhase1(b: RunningBroker, devId: string, key: Uint8Array, storage = new MemoryStorage()): Promise<number | 'hint' | undefined> {
  const d = new TestDevice(b, devId, key, storage);
  await d.session.forgetTicket();
  const r = await d.connect();
  await d.end();
  if (!r.ok && d.hints.length > 0) return 'hint'; // §5.5: a used counter, answered with a counter hint
  return r.ok ? 0 : r.code;
}

describe('live broker limits', () => {
  it('per-device phase-1 budget: spent only by valid KX1s, per device, audited', async () => {
    const b = await start({ phase1PerDevice: { ratePerSec: 0.001, burst: 2 } });
    const key = (await b.registry.addDevice('dev1', 'sensor')).key;
    const key2 = (await b.registry.addDevice('dev2', 'sensor')).key;
    await b.syncRegistry();
    // Forged KX1s for dev1 (wrong key) are refused at the MAC and do not spend dev1's budget.
    for (let i = 0; i < 5; i++) expect(await freshPhase1(b, 'dev1', new Uint8Array(32).fill(i + 1))).toBe(4);
    const state = new MemoryStorage();
    expect(await freshPhase1(b, 'dev1', key, state)).toBe(0);
    expect(await freshPhase1(b, 'dev1', key, state)).toBe(0);
    // the third genuine phase 1 within the window is refused: server unavailable (3)
    expect(await freshPhase1(b, 'dev1', key, state)).toBe(3);
    // another device has its own budget
    const resumer = new MemoryStorage();
    expect(await freshPhase1(b, 'dev2', key2, resumer)).toBe(0);
    expect((await b.registry.listAudit({ kind: 'auth.fail', subject: 'dev1' })).filter((a) => a.detail === 'RATE_LIMITED')).toHaveLength(1);
    // a device that still holds its ticket resumes: phase 2 is not subject to the phase-1 budget
    expect(await freshPhase1(b, 'dev2', key2)).toBe('hint'); // a fresh state sends counter 0 again: a hint, no session
    for (let i = 0; i < 3; i++) {
      const again = new TestDevice(b, 'dev2', key2, resumer);
      expect(await again.connect()).toMatchObject({ ok: true, phase: 2 });
      await again.end();
    }
  });

  it('connection cap: sockets over maxConnections are closed at once; a freed slot is usable again', async () => {
    const b = await start({ maxConnections: 3 });
    await b.registry.addAccount('app', 'app', 'app-password');
    await b.syncRegistry();
    const apps: TestApp[] = [];
    for (let i = 0; i < 3; i++) {
      const a = await TestApp.connect(b, 'app', 'app-password', `app/${i}`);
      apps.push(a);
      cleanups.push(() => a.end());
    }
    // a fourth connection never gets a CONNACK: the server drops the socket
    expect(await tryLogin(b, { clientId: 'app/3', username: 'app', password: 'app-password' })).toBe('closed');
    const raw: Socket = tcpConnect(b.port, b.host);
    const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    raw.on('error', () => {});
    await closed;
    // the live clients are unaffected
    expect(apps.every((a) => a.client.connected)).toBe(true);
    await apps[0]!.end();
    await waitFor(() => (b.aedes as unknown as { connectedClients: number }).connectedClients === 2, 5000, 'the freed slot');
    expect(await tryLogin(b, { clientId: 'app/4', username: 'app', password: 'app-password' })).toBe(0);
  });

  it('audit budget: a flood of failures writes at most auditPerSecond rows per second', async () => {
    const perSecond = 5;
    const b = await start({ auditPerSecond: perSecond, authPerAddress: { ratePerSec: 1e6, burst: 1e6 }, phase1PerAddress: { ratePerSec: 1e6, burst: 1e6 } });
    await b.registry.addDevice('victim', 'sensor');
    await b.syncRegistry();
    const attempts = 40;
    const codes = await Promise.all(Array.from({ length: attempts }, (_, i) => freshPhase1(b, 'victim', new Uint8Array(32).fill(i + 7))));
    expect(codes.every((c) => c === 4)).toBe(true);
    const rows = await b.registry.listAudit({ kind: 'auth.fail', limit: 1000 });
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.length).toBeLessThan(attempts);
    const perSec = new Map<number, number>();
    for (const r of rows) perSec.set(Math.floor(r.at / 1000), (perSec.get(Math.floor(r.at / 1000)) ?? 0) + 1);
    for (const n of perSec.values()) expect(n).toBeLessThanOrEqual(perSecond);
    // the metrics still count every failure
    expect(await b.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'fail' })).toBe(attempts);
  });
});
