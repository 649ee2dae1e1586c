/**
 * Account logins (issue: backend leg, client-id takeover, name enumeration):
 * the TLS listener with a certificate generated at first start (MQTT.js and
 * mosquitto_sub --cafile against it), password logins over plain TCP refused
 * from non-local addresses, client ids bound to accounts, and refusals that do
 * not tell registered names from unknown ones.
 *
 * Loopback is all a test may use, so "remote" is made honestly: the broker is
 * told that only 127.0.0.1/32 is local, and the remote client binds its socket
 * to 127.0.0.2 (also loopback on Linux, but outside that block).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { RunningBroker } from '../../broker/server.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { TestApp, TestDevice, tempDir, testBroker, tryLogin, waitFor } from './helpers.js';

const REMOTE = '127.0.0.2';

describe('accounts: TLS, plain-TCP refusal, client-id binding, refusals', () => {
  const dir = tempDir();
  let broker: RunningBroker;
  let ca: Buffer;
  let deviceKey: Uint8Array;
  const devStorage = new MemoryStorage(); // one device: its counter lives on across connections

  beforeAll(async () => {
    broker = await testBroker(dir.path, {
      tls: { port: 0 },
      localAddresses: ['127.0.0.1/32'],
      limits: { passwordPerAddress: { ratePerSec: 100, burst: 100 } },
    });
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    await broker.registry.addAccount('other', 'app', 'other-password');
    deviceKey = (await broker.registry.addDevice('dev1', 'sensor')).key;
    await broker.syncRegistry();
    ca = readFileSync(broker.tls!.certPath);
  });
  afterAll(async () => {
    await broker.stop();
    dir.remove();
  });

  const overTls = (username: string, password: string, clientId: string, localAddress?: string) =>
    mqtt.connectAsync({
      protocol: 'mqtts', host: '127.0.0.1', port: broker.tls!.port, ca, username, password, clientId, reconnectPeriod: 0, connectTimeout: 5000,
      ...(localAddress ? { localAddress } : {}),
    } as mqtt.IClientOptions);

  it('generates the certificate at first start (key 0600) and keeps it across restarts', async () => {
    expect(statSync(join(dir.path, 'tls', 'key.pem')).mode & 0o777).toBe(0o600);
    expect(broker.tls!.certPath).toBe(join(dir.path, 'tls', 'cert.pem'));
    const before = broker.tls!.fingerprint;
    await broker.stop();
    broker = await testBroker(dir.path, { tls: { port: 0 }, localAddresses: ['127.0.0.1/32'], limits: { passwordPerAddress: { ratePerSec: 100, burst: 100 } } });
    expect(broker.tls!.fingerprint).toBe(before);
    // a client that does not trust it is refused by its own TLS check
    await expect(mqtt.connectAsync({ protocol: 'mqtts', host: '127.0.0.1', port: broker.tls!.port, username: 'backend', password: 'backend-password', clientId: 'backend', reconnectPeriod: 0, connectTimeout: 5000 })).rejects.toThrow();
  });

  it('password logins over plain TCP: refused (5) from a non-local address without any password work, accepted over TLS from there and over plain TCP from a local one; devices keep plain TCP', async () => {
    const checks = await broker.metrics.value('mqsec_password_checks_total');
    expect(await tryLogin(broker, { clientId: 'backend', username: 'backend', password: 'backend-password', localAddress: REMOTE })).toBe(5);
    expect(await tryLogin(broker, { clientId: 'nobody', username: 'nobody', password: 'nobody-password', localAddress: REMOTE })).toBe(5);
    expect(await broker.metrics.value('mqsec_password_checks_total')).toBe(checks);
    const remoteTls = await overTls('backend', 'backend-password', 'backend/remote', REMOTE);
    expect(remoteTls.connected).toBe(true);
    expect(await tryLogin(broker, { clientId: 'backend/local', username: 'backend', password: 'backend-password' })).toBe(0);
    // a device from the "remote" address over plain TCP: phase 1, and its reading reaches the TLS subscriber
    await remoteTls.subscribeAsync('sensors/#', { qos: 1 });
    const got: string[] = [];
    remoteTls.on('message', (_t, p) => got.push(p.toString()));
    const dev = new TestDevice({ host: broker.host, port: broker.port }, 'dev1', deviceKey, devStorage);
    expect(await dev.connect()).toMatchObject({ ok: true });
    await dev.publish('sensors/dev1/t', 'over-tls');
    await waitFor(() => got.includes('over-tls'));
    await dev.end();
    await remoteTls.endAsync();
  });

  it('mosquitto_sub --cafile reads a device reading over the TLS listener', async () => {
    const sub = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(broker.tls!.port), '--cafile', broker.tls!.certPath, '-u', 'backend', '-P', 'backend-password', '-i', 'backend/mosq', '-t', 'sensors/#', '-q', '1', '-C', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    sub.stdout.on('data', (d) => (out += d));
    sub.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => sub.once('exit', (c) => r(c)));
    try {
      await waitFor(() => Object.keys((broker.aedes as unknown as { clients: Record<string, unknown> }).clients).includes('backend/mosq'), 10_000, `mosquitto_sub connected (${err})`);
      await new Promise((r) => setTimeout(r, 200)); // its SUBSCRIBE follows the CONNACK
      const dev = new TestDevice({ host: broker.host, port: broker.port }, 'dev1', deviceKey, devStorage);
      expect(await dev.connect()).toMatchObject({ ok: true });
      await dev.publish('sensors/dev1/t', 'to-mosquitto');
      expect(await exited).toBe(0);
      expect(out.trim()).toBe('to-mosquitto');
      await dev.end();
    } finally {
      if (sub.exitCode === null) sub.kill();
    }
  });

  it('client-id takeover: another account cannot evict or wipe a client of this account; its own ids work', async () => {
    const victim = await TestApp.connect(broker, 'backend', 'backend-password', 'backend/worker');
    expect(await tryLogin(broker, { clientId: 'backend/worker', username: 'other', password: 'other-password' })).toBe(2);
    expect(await tryLogin(broker, { clientId: 'backend', username: 'other', password: 'other-password' })).toBe(2);
    await new Promise((r) => setTimeout(r, 100));
    expect(victim.closed).toBe(false);
    expect(await tryLogin(broker, { clientId: 'other', username: 'other', password: 'other-password' })).toBe(0);
    expect(await tryLogin(broker, { clientId: 'other/x', username: 'other', password: 'other-password' })).toBe(0);
    await victim.end();
  });

  it('refusals do not tell registered names from unknown ones: same CONNACK code and the same password work (one scrypt)', async () => {
    const cases: [string, { clientId: string; username?: string; password?: string | Buffer }, { clientId: string; username?: string; password?: string | Buffer }][] = [
      ['device id vs unknown id, plain password', { clientId: 'dev1', username: 'dev1', password: 'password1' }, { clientId: 'nodev', username: 'nodev', password: 'password1' }],
      ['account with a foreign client id vs unknown account', { clientId: 'dev1', username: 'backend', password: 'wrong-password' }, { clientId: 'dev1', username: 'noacct', password: 'wrong-password' }],
      ['account, bad client id, vs unknown account, own-looking id', { clientId: 'other/x', username: 'backend', password: 'wrong-password' }, { clientId: 'noacct', username: 'noacct', password: 'wrong-password' }],
    ];
    const times: string[] = [];
    for (const [what, known, unknown] of cases) {
      const c0 = await broker.metrics.value('mqsec_password_checks_total');
      const t0 = performance.now();
      const a = await tryLogin(broker, known);
      const t1 = performance.now();
      const c1 = await broker.metrics.value('mqsec_password_checks_total');
      const b = await tryLogin(broker, unknown);
      const t2 = performance.now();
      const c2 = await broker.metrics.value('mqsec_password_checks_total');
      expect(a, what).toBe(b);
      expect(a, what).toBe(4);
      expect([c1 - c0, c2 - c1], what).toEqual([1, 1]);
      times.push(`${what}: ${(t1 - t0).toFixed(0)} vs ${(t2 - t1).toFixed(0)} ms`);
    }
    // mqsec-form passwords: a forged KX1 for a registered id and for an unknown id, both 4 with no scrypt
    const forged = new TestDevice({ host: broker.host, port: broker.port }, 'dev1', new Uint8Array(32).fill(9));
    const forgedUnknown = new TestDevice({ host: broker.host, port: broker.port }, 'nodev', new Uint8Array(32).fill(9));
    const c0 = await broker.metrics.value('mqsec_password_checks_total');
    expect((await forged.connect()).code).toBe(4);
    expect((await forgedUnknown.connect()).code).toBe(4);
    expect(await broker.metrics.value('mqsec_password_checks_total')).toBe(c0);
    console.log('refusal timings (not asserted; one scrypt each):\n  ' + times.join('\n  '));
  });
});
