/**
 * mqsec beside a stock RabbitMQ 3.10 (Debian package: MQTT plugin + HTTP auth
 * backend, started here with its own node name, ports, epmd and data dir):
 * the key service answers the broker's user, vhost, resource and topic checks
 * (docs/protocol.md §15.9). Phase 1 over PUBLISH, phase 2 tokens checked and
 * consumed at login, readings end to end, and the attacks the broker refuses
 * because of what the key service answered. RabbitMQ takes seconds to start:
 * once for the whole file.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { deriveDeviceKeys } from '../../firmware/secure/key-schedule.js';
import { toTextForm } from '../../firmware/secure/messages.js';
import { bootPassword, bootUsername, downTopic, upTopic } from '../../firmware/secure/stock.js';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { HttpAuthKeyService } from '../../broker/stock/http-auth-key-service.js';
import { registrySource } from '../../broker/stock/registry-source.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { StockDevice } from '../../host-sim/stock-device.js';
import { hasRabbitmq, startRabbitmq, type RunningRabbitmq } from '../helpers/rabbitmq.js';
import { startCli } from '../helpers/cli-process.js';

const suite = createNodeCryptoSuite();
const run = hasRabbitmq() ? describe : describe.skip;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tryConnect(url: string, o: mqtt.IClientOptions): Promise<{ code: number; client?: mqtt.MqttClient }> {
  return new Promise((resolve) => {
    const c = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10_000, ...o });
    c.once('connect', () => resolve({ code: 0, client: c }));
    c.once('error', (e: Error & { code?: number }) => {
      c.end(true);
      resolve({ code: typeof e.code === 'number' ? e.code : -1 });
    });
    c.once('close', () => resolve({ code: -1 }));
  });
}

/** A subscription the broker refuses: SUBACK 0x80, or (RabbitMQ) the connection closed. */
async function subscribeRefused(c: mqtt.MqttClient, filter: string): Promise<boolean> {
  const closed = new Promise<boolean>((resolve) => c.once('close', () => resolve(true)));
  const acked = c.subscribeAsync(filter, { qos: 1 }).then(
    (g) => g[0]?.qos === 128,
    (e) => ((e as { packet?: { granted?: number[] } }).packet?.granted?.[0] ?? 128) === 128,
  );
  return Promise.race([acked, closed, sleep(5000).then(() => false)]);
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

run('key service as the HTTP auth backend of stock RabbitMQ (§15.9)', () => {
  let rabbit: RunningRabbitmq;
  let dir: string;
  let registry: SqliteRegistry;
  let ksStore: SqliteKeyServiceStore;
  let ks: HttpAuthKeyService;
  const keys = new Map<string, Uint8Array>();

  function device(id: string, extra: Partial<ConstructorParameters<typeof StockDevice>[0]> = {}): StockDevice {
    const key = keys.get(id)!;
    const session = new DeviceSecureSession({ suite, devId: id, deviceKey: key, storage: new MemoryStorage() });
    return new StockDevice({ url: rabbit.url, id, key, suite, session, timeoutMs: 10_000, ...extra });
  }

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-stock-rmq-'));
    registry = SqliteRegistry.open(dir);
    // provisioning writes each K_ks into the key service's store of this data dir (§14.2)
    ksStore = SqliteKeyServiceStore.open(dir);
    await registry.addRole('stocksensor');
    await registry.addRule('stocksensor', 'publish', 'sensors/%u/#', 'e2e');
    await registry.addRule('stocksensor', 'subscribe', 'cmd/%u/#');
    await registry.addRole('reader');
    await registry.addRule('reader', 'subscribe', 'sensors/#');
    await registry.addRole('nosy');
    await registry.addRule('nosy', 'subscribe', 'weather/#');
    for (const [id, role] of [['s1', 'stocksensor'], ['s2', 'stocksensor'], ['s3', 'stocksensor'], ['app1', 'reader'], ['nosy1', 'nosy'], ['sensor01', 'stocksensor'], ['root1', 'admin']] as const) {
      keys.set(id, (await registry.addDevice(id, role)).key);
    }
    ks = new HttpAuthKeyService({
      url: 'mqtt://127.0.0.1:1', // set below, once the broker's port is known
      serviceUser: 'mqsec-keyservice',
      servicePassword: Buffer.from(suite.randomBytes(18)).toString('base64url'),
      suite,
      source: registrySource(registry, ksStore),
      tickets: new RegistryTicketStore(registry),
      keyStore: ksStore,
      log: process.env.KS_DEBUG ? { debug() {}, info() {}, warn: (m: string, d?: unknown) => console.log('KS', m, d), error: (m: string, d?: unknown) => console.log('KS', m, d) } as never : undefined,
    });
    await ks.listen();
    rabbit = await startRabbitmq({ baseUrl: ks.baseUrl });
    (ks as unknown as { o: { url: string } }).o.url = rabbit.url;
    await ks.start();
  }, 150_000);

  afterAll(async () => {
    await ks?.stop();
    await rabbit?.stop();
    registry?.close();
    ksStore?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('devices run phase 1 over PUBLISH, then phase 2; an app reads every reading end to end', async () => {
    const received: string[] = [];
    const app = device('app1', { onMessage: (m) => received.push(`${m.topic}=${utf8Decode(m.plaintext)}@${m.publisher}`) });
    expect((await app.connect()).phase1).toBe(true);
    expect(await app.subscribe('sensors/#')).toBe(1);
    const sensors = ['s1', 's2', 's3'].map((id) => device(id));
    const sent: string[] = [];
    for (let wake = 0; wake < 3; wake++) {
      for (const [i, s] of sensors.entries()) {
        const r = await s.connect();
        expect(r.phase1).toBe(wake === 0);
        const topic = `sensors/s${i + 1}/temp`;
        const text = `${20 + wake}.${i}`;
        await s.publish(topic, utf8Encode(text), 1);
        sent.push(`${topic}=${text}@s${i + 1}`);
        await s.end();
      }
    }
    await until(() => received.length >= sent.length);
    await sleep(200);
    expect(received.sort()).toEqual(sent.sort());
    await app.end();
  }, 90_000);

  it('wire budget with an 8-character id: phase 2 is one round trip (CONNECT; RC queued on the persistent session)', async () => {
    const s = device('sensor01');
    expect((await s.connect()).phase1).toBe(true);
    const p1 = s.stats;
    expect(p1.packets.phase1).toEqual(['connect', 'subscribe', 'publish', 'disconnect']);
    await s.end();
    const r = await s.connect();
    expect(r.sessionPresent).toBe(true);
    const p2 = s.stats;
    expect(p2.packets.phase2.filter((p) => p !== 'puback')).toEqual(['connect']);
    console.log(
      `stock rabbitmq, id sensor01: phase 1 ${p1.phase1.sent} B sent + ${p1.phase1.received} B received; first phase 2 ${p1.phase2.sent} + ${p1.phase2.received} B (${p1.packets.phase2.join(',')}); ` +
        `phase 2 ${p2.phase2.sent} + ${p2.phase2.received} B (${p2.packets.phase2.join(',')}); group keys ${p2.keys.sent} + ${p2.keys.received} B`,
    );
    await s.end();
  }, 60_000);

  it('a token works for one login: replayed during or after its connection, the key service refuses it', async () => {
    let token = '';
    const s = device('s1');
    const sock = (s as unknown as { socket(o: mqtt.IClientOptions): mqtt.MqttClient }).socket.bind(s);
    (s as unknown as { socket(o: mqtt.IClientOptions): mqtt.MqttClient }).socket = (o) => {
      if (o.username === 's1') token = String(o.password);
      return sock(o);
    };
    await s.connect();
    expect(token.startsWith('~')).toBe(true);
    const during = await tryConnect(rabbit.url, { clientId: 's1', username: 's1', password: token, clean: true });
    during.client?.end(true);
    expect(during.code).not.toBe(0);
    await s.end();
    const after = await tryConnect(rabbit.url, { clientId: 's1', username: 's1', password: token, clean: true });
    after.client?.end(true);
    expect(after.code).not.toBe(0);
    // and the device's own next connection is phase 2 again
    expect((await s.connect()).phase1).toBe(false);
    await s.end();
  }, 60_000);

  it('forged tokens, plain passwords (downgrade), a KX1 as password and a foreign client id are refused; the bootstrap user only carries the handshake', async () => {
    for (const o of [
      { clientId: 's3', username: 's3', password: toTextForm(suite.randomBytes(24)) },
      { clientId: 's3', username: 's3', password: 'password' },
      { clientId: 's3', username: 's3', password: '' },
      { clientId: 'x' },
      { clientId: 'other', username: bootUsername('s3'), password: bootPassword(suite, deriveDeviceKeys(suite, keys.get('s3')!, 's3').authKey, 's3') },
    ]) {
      const r = await tryConnect(rabbit.url, o);
      r.client?.end(true);
      expect(r.code, JSON.stringify(o.username)).not.toBe(0);
    }
    const boot = await tryConnect(rabbit.url, { clientId: bootUsername('s3'), username: bootUsername('s3'), password: bootPassword(suite, deriveDeviceKeys(suite, keys.get('s3')!, 's3').authKey, 's3') });
    expect(boot.code).toBe(0);
    expect(await subscribeRefused(boot.client!, 'sensors/#')).toBe(true);
    boot.client!.end(true);
  }, 60_000);

  it("another device's topics, the key service's topics and $-topics are refused", async () => {
    const s = device('s1');
    await s.connect();
    for (const f of ['sensors/s2/#', downTopic('s2'), '$SYS/#', '#']) {
      const probe = device('s1');
      await probe.connect();
      expect(await subscribeRefused(probe.raw!, f), f).toBe(true);
      await probe.end();
    }
    await s.end();
    // a publish the policy does not grant ends the connection (RabbitMQ has no negative PUBACK either)
    const seen: string[] = [];
    const app = device('app1', { onMessage: (m) => seen.push(m.topic) });
    await app.connect();
    await app.subscribe('sensors/#');
    const bad = device('s1');
    await bad.connect();
    const closed = new Promise<void>((resolve) => bad.raw!.once('close', () => resolve()));
    bad.raw!.publish('sensors/s2/temp', Buffer.from('forged'), { qos: 1 });
    bad.raw!.publish(upTopic('s2'), Buffer.from([0x11, 1]), { qos: 1 });
    await Promise.race([closed, sleep(5000)]);
    await sleep(300);
    expect(seen).toEqual([]);
    await bad.end();
    await app.end();
  }, 90_000);

  it("a role with '#' rules gets no wildcard into the protocol topics and no $-topic", async () => {
    for (const f of ['#', 'mqsec/#', '+/down/+', downTopic('s1'), '$SYS/#']) {
      const root = device('root1');
      await root.connect();
      expect(await subscribeRefused(root.raw!, f), f).toBe(true);
      await root.end();
    }
    const root = device('root1');
    await root.connect();
    expect(await root.subscribe('sensors/#')).toBe(1);
    await root.end();
  }, 90_000);

  it('an app reads only what its policy grants: no subscription, no group key', async () => {
    const nosy = device('nosy1');
    await nosy.connect();
    expect(nosy.keyring.list()).toEqual([]);
    expect(await subscribeRefused(nosy.raw!, 'sensors/#')).toBe(true);
    await nosy.end();
  }, 60_000);

  it('after revocation the key service refuses every login of the device, bootstrap included', async () => {
    const s = device('s3');
    await s.connect();
    await s.end();
    await registry.revokeDevice('s3');
    await ks.revoke('s3');
    await expect(s.connect()).rejects.toThrow();
    const boot = await tryConnect(rabbit.url, { clientId: bootUsername('s3'), username: bootUsername('s3'), password: bootPassword(suite, deriveDeviceKeys(suite, keys.get('s3')!, 's3').authKey, 's3') });
    boot.client?.end(true);
    expect(boot.code).not.toBe(0);
  }, 60_000);

  it('`mqsec keyservice --flavour http-auth` takes over the same checks as its own process', async () => {
    const port = Number(new URL(ks.baseUrl).port);
    const password = (ks as unknown as { o: { servicePassword: string } }).o.servicePassword;
    await ks.stop();
    const pwFile = path.join(dir, 'ks-password');
    await writeFile(pwFile, password + '\n', { mode: 0o600 });
    const proc = startCli(['keyservice', '--flavour', 'http-auth', '--broker', rabbit.url, '--http-port', String(port), '--data', dir, '--username', 'mqsec-keyservice', '--password-file', pwFile]);
    try {
      await until(() => proc.out().includes('linked to'), 30_000).catch((e) => {
        throw new Error(`${(e as Error).message}\n${proc.out()}\n${proc.err()}`);
      });
      // the process reads the same data directory (registry, tickets, K_ks)
      const s = device('s2');
      const first = await s.connect();
      expect(first.phase1).toBe(true); // a fresh session object (no stored ticket): phase 1 over PUBLISH first
      await s.end();
      expect((await s.connect()).phase1).toBe(false);
      await s.end();
      // and a fleet through it: `mqsec sim --flavour stock`
      const sim = startCli(['sim', '--flavour', 'stock', '--broker', rabbit.url, '--data', dir, '--devices', '5', '--duration', '5', '--json']);
      expect(await sim.exited).toBe(0);
      const r = JSON.parse(sim.out().trim().split('\n').pop()!) as { wakes: number; sent: number; verified: number; lost: number; duplicates: number };
      expect(r.wakes).toBeGreaterThanOrEqual(10);
      expect(r.verified).toBe(r.sent);
      expect(r.lost).toBe(0);
      expect(r.duplicates).toBe(0);
    } finally {
      proc.child.kill('SIGTERM');
      expect(await proc.exited).toBe(0);
    }
  }, 90_000);
});
