/**
 * mqsec beside a stock Mosquitto 2.0 with dynamic security (docs/protocol.md
 * §15): the real broker (Debian package, started here on a free port), the
 * key service as an MQTT client of it, devices running the firmware session
 * through MQTT.js. Phase 1 over PUBLISH, phase 2 with one-connection tokens,
 * readings end to end, and the attacks the broker must refuse because of
 * what the key service told it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
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
import { MosquittoKeyService } from '../../broker/stock/mosquitto-key-service.js';
import { registrySource } from '../../broker/stock/registry-source.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { StockDevice } from '../../host-sim/stock-device.js';
import { hasMosquittoDynsec, startDynsecMosquitto, type RunningDynsecMosquitto } from '../helpers/mosquitto-dynsec.js';

const suite = createNodeCryptoSuite();
const run = hasMosquittoDynsec() ? describe : describe.skip;

/** Connects a plain MQTT.js client and reports the CONNACK code (0 = accepted). */
function tryConnect(url: string, o: mqtt.IClientOptions): Promise<{ code: number; client?: mqtt.MqttClient }> {
  return new Promise((resolve) => {
    const c = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...o });
    c.once('connect', () => resolve({ code: 0, client: c }));
    c.once('error', (e: Error & { code?: number }) => {
      c.end(true);
      resolve({ code: typeof e.code === 'number' ? e.code : -1 });
    });
  });
}

/** Granted QoS per filter (128 = refused); MQTT.js rejects a SUBACK with a refusal, the codes are in the packet. */
async function grants(c: mqtt.MqttClient, filters: string[]): Promise<number[]> {
  try {
    return (await c.subscribeAsync(filters, { qos: 1 })).map((g) => g.qos);
  } catch (e) {
    const granted = (e as { packet?: { granted?: number[] } }).packet?.granted;
    if (!granted) throw e;
    return granted;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

run('key service beside stock Mosquitto with dynamic security (§15)', () => {
  let broker: RunningDynsecMosquitto;
  let dir: string;
  let registry: SqliteRegistry;
  let ksStore: SqliteKeyServiceStore;
  let ks: MosquittoKeyService;
  const keys = new Map<string, Uint8Array>();
  const received: { topic: string; text: string; publisher: string }[] = [];

  function device(id: string, extra: Partial<ConstructorParameters<typeof StockDevice>[0]> = {}): StockDevice {
    const key = keys.get(id)!;
    const session = new DeviceSecureSession({ suite, devId: id, deviceKey: key, storage: new MemoryStorage() });
    return new StockDevice({ url: broker.url, id, key, suite, session, ...extra });
  }

  beforeAll(async () => {
    broker = await startDynsecMosquitto();
    dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-stock-'));
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
    ks = new MosquittoKeyService({
      url: broker.url,
      adminUser: broker.adminUser,
      adminPassword: broker.adminPassword,
      suite,
      source: registrySource(registry, ksStore),
      tickets: new RegistryTicketStore(registry),
      keyStore: ksStore,
    });
    await ks.start();
  }, 30_000);

  afterAll(async () => {
    await ks?.stop();
    await broker?.stop();
    registry?.close();
    ksStore?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('devices run phase 1 over PUBLISH, then phase 2; an app reads every reading end to end', async () => {
    const app = device('app1', { onMessage: (m) => received.push({ topic: m.topic, text: utf8Decode(m.plaintext), publisher: m.publisher }) });
    const first = await app.connect();
    expect(first.phase1).toBe(true);
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
        sent.push(`${topic}=${text}`);
        await s.end();
      }
      // the key service replaces each token when the broker log shows its connection ended (§15.3)
      for (const id of ['s1', 's2', 's3']) await until(() => ks.credentialReady(id));
    }
    await until(() => received.length >= sent.length);
    expect(received.map((m) => `${m.topic}=${m.text}`).sort()).toEqual(sent.sort());
    expect(received.every((m) => m.topic.startsWith(`sensors/${m.publisher}/`))).toBe(true);
    expect(ks.counters.phase1).toBeGreaterThanOrEqual(4);
    expect(ks.counters.phase2).toBeGreaterThanOrEqual(10);
    await app.end();
  }, 60_000);

  it('wire budget with an 8-character id: phase 1 over PUBLISH, phase 2 one round trip (CONNECT only; RC on the subscription the session kept)', async () => {
    const s = device('sensor01');
    const first = await s.connect();
    expect(first.phase1).toBe(true);
    const p1 = s.stats;
    // MQTT.js waits for each answer: CONNACK, SUBACK, then KX2 (3 round trips after TCP); DISCONNECT ends it
    expect(p1.packets.phase1).toEqual(['connect', 'subscribe', 'publish', 'disconnect']);
    await s.end();
    await until(() => ks.credentialReady('sensor01'));
    await s.connect();
    const p2 = s.stats;
    expect(p2.packets.phase1).toEqual([]);
    // one round trip: CONNECT, then CONNACK and RC (QoS 0, on the subscription the session kept) arrive
    expect(p2.packets.phase2).toEqual(['connect']);
    expect(p2.packets.keys).toEqual(['publish', 'puback']); // GKREQ up, GKDEL (QoS 1) down
    console.log(
      `stock mosquitto, id sensor01: phase 1 ${p1.phase1.sent} B sent + ${p1.phase1.received} B received; first phase 2 ${p1.phase2.sent} + ${p1.phase2.received} B (${p1.packets.phase2.join(',')}); ` +
        `phase 2 ${p2.phase2.sent} + ${p2.phase2.received} B; group keys ${p2.keys.sent} + ${p2.keys.received} B`,
    );
    await s.end();
  }, 30_000);

  it('the broker never holds a key or a reading: its JSON has token hashes only, payloads are group envelopes', async () => {
    const json = JSON.stringify(await broker.readConfig());
    for (const k of keys.values()) expect(json).not.toContain(Buffer.from(k).toString('hex'));
    expect(json).not.toMatch(/"password":\s*"~/); // dynamic security stores salted PBKDF2 hashes, not the token
  });

  it('a recorded token is refused once its connection ended (replay after the fact)', async () => {
    let token = '';
    const s = device('s1');
    const origSocketPassword = (s as unknown as { socket(o: mqtt.IClientOptions): mqtt.MqttClient }).socket.bind(s);
    (s as unknown as { socket(o: mqtt.IClientOptions): mqtt.MqttClient }).socket = (o) => {
      if (o.username === 's1') token = String(o.password);
      return origSocketPassword(o);
    };
    await s.connect();
    expect(token.startsWith('~')).toBe(true);
    await s.end();
    await until(() => ks.credentialReady('s1'));
    const replay = await tryConnect(broker.url, { clientId: 's1', username: 's1', password: token, clean: false });
    replay.client?.end(true);
    expect(replay.code).not.toBe(0);
  }, 30_000);

  it('a second connection on a live token is kicked at once (replay during the connection)', async () => {
    let token = '';
    const s = device('s2');
    const sock = (s as unknown as { socket(o: mqtt.IClientOptions): mqtt.MqttClient }).socket.bind(s);
    (s as unknown as { socket(o: mqtt.IClientOptions): mqtt.MqttClient }).socket = (o) => {
      if (o.username === 's2') token = String(o.password);
      return sock(o);
    };
    await s.connect();
    const kicked = ks.counters.replaysKicked + ks.counters.rotations;
    const thief = await tryConnect(broker.url, { clientId: 's2', username: 's2', password: token, clean: true });
    // Mosquitto accepts the password (it is still the live token) and hands the thief the session;
    // the key service sees the second connection on one token in the broker log and kicks it.
    expect(thief.code).toBe(0);
    const closed = await Promise.race([
      new Promise<boolean>((resolve) => thief.client!.once('close', () => resolve(true))),
      sleep(3000).then(() => false),
    ]);
    expect(closed).toBe(true);
    await until(() => ks.counters.replaysKicked + ks.counters.rotations > kicked);
    thief.client?.end(true);
    // and the token does not come back
    const again = await tryConnect(broker.url, { clientId: 's2', username: 's2', password: token, clean: true });
    again.client?.end(true);
    expect(again.code).not.toBe(0);
    await s.end();
  }, 30_000);

  it('forged tokens and plain passwords (downgrade) are refused; the bootstrap user can only carry the handshake', async () => {
    const forged = await tryConnect(broker.url, { clientId: 's3', username: 's3', password: toTextForm(suite.randomBytes(24)) });
    expect(forged.code).not.toBe(0);
    const plain = await tryConnect(broker.url, { clientId: 's3', username: 's3', password: 'password' });
    expect(plain.code).not.toBe(0);
    const anon = await tryConnect(broker.url, { clientId: 'x' });
    expect(anon.code).not.toBe(0);
    // someone holding the bootstrap password (recorded: it is static) gets no reading in and none out
    const boot = await tryConnect(broker.url, { clientId: bootUsername('s3'), username: bootUsername('s3'), password: bootPassword(suite, deriveDeviceKeys(suite, keys.get('s3')!, 's3').authKey, 's3') });
    expect(boot.code).toBe(0);
    expect(await grants(boot.client!, ['sensors/#', 'cmd/s3/#', downTopic('s1')])).toEqual([128, 128, 128]);
    boot.client!.end(true);
  }, 30_000);

  it("another device's topics, the key service's topics and $-topics are refused by the broker", async () => {
    const seen: string[] = [];
    const app = device('app1', { onMessage: (m) => seen.push(m.topic), onDropped: (t) => seen.push(`dropped:${t}`) });
    await app.connect();
    await app.subscribe('sensors/#');
    const s = device('s1');
    await s.connect();
    const raw = s.raw!;
    expect(await grants(raw, ['sensors/s2/#', 'cmd/s2/#', downTopic('s2'), upTopic('s2'), '$SYS/#', '$CONTROL/dynamic-security/#', '#'])).toEqual([128, 128, 128, 128, 128, 128, 128]);
    // publishes the policy does not grant are dropped by the broker (MQTT 3.1.1 has no negative PUBACK)
    await raw.publishAsync('sensors/s2/temp', Buffer.from('forged'), { qos: 1 });
    await raw.publishAsync(upTopic('s2'), Buffer.from([0x11, 1, 2, 3]), { qos: 1 });
    await raw.publishAsync('$CONTROL/dynamic-security/v1', JSON.stringify({ commands: [{ command: 'setClientPassword', username: 's2', password: 'owned' }] }), { qos: 1 });
    await s.publish('sensors/s1/temp', utf8Encode('ok'), 1);
    await until(() => seen.includes('sensors/s1/temp'));
    await sleep(200);
    expect(seen).toEqual(['sensors/s1/temp']);
    const owned = await tryConnect(broker.url, { clientId: 's2', username: 's2', password: 'owned' });
    owned.client?.end(true);
    expect(owned.code).not.toBe(0);
    await s.end();
    await app.end();
  }, 30_000);

  it("a role with '#' rules still cannot touch dynamic security, the broker's \$SYS or other principals' protocol topics", async () => {
    const root = device('root1');
    await root.connect();
    const raw = root.raw!;
    expect(await grants(raw, ['$CONTROL/dynamic-security/#', '$SYS/#', downTopic('s1'), 'mqsec/#'])).toEqual([128, 128, 128, 128]);
    const seen: string[] = [];
    raw.on('message', (t) => seen.push(t));
    expect(await grants(raw, ['#'])).toEqual([1]);
    await raw.publishAsync('$CONTROL/dynamic-security/v1', JSON.stringify({ commands: [{ command: 'setClientPassword', username: 's2', password: 'owned' }] }), { qos: 1 });
    // a device's handshake and key traffic meanwhile: none of it reaches the '#' subscriber
    const s = device('s2');
    await s.connect();
    await s.publish('sensors/s2/temp', utf8Encode('x'), 1);
    await s.end();
    await sleep(300);
    expect(seen).toEqual(['sensors/s2/temp']);
    const owned = await tryConnect(broker.url, { clientId: 's2', username: 's2', password: 'owned' });
    owned.client?.end(true);
    expect(owned.code).not.toBe(0);
    await root.end();
  }, 30_000);

  it('an app reads only what its policy grants: no subscription, no group key', async () => {
    const nosy = device('nosy1');
    await nosy.connect();
    expect(await grants(nosy.raw!, ['sensors/#'])).toEqual([128]);
    expect(nosy.keyring.list().map((g) => g.filter)).toEqual([]);
    await nosy.end();
  }, 30_000);

  it('revocation disables both clients and kicks the live connection', async () => {
    const s = device('s3');
    await s.connect();
    const raw = s.raw!;
    const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    await registry.revokeDevice('s3');
    await ks.revoke('s3');
    await closed;
    const again = device('s3');
    await expect(again.connect()).rejects.toThrow();
    const boot = await tryConnect(broker.url, { clientId: bootUsername('s3'), username: bootUsername('s3'), password: bootPassword(suite, deriveDeviceKeys(suite, keys.get('s3')!, 's3').authKey, 's3') });
    boot.client?.end(true);
    expect(boot.code).not.toBe(0);
  }, 30_000);
});
