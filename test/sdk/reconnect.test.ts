/**
 * The SDK's connection life on a real mqsec broker (docs/protocol.md §14.5,
 * §14.6, §8.5):
 * - QoS 1 across a lost connection: PUBACKs lost -> the messages are sent
 *   again after the reconnect with the same group envelope and a new channel
 *   trailer, the broker accepts the new trailer, and the reader drops every
 *   copy as REPLAY (nothing lost, nothing twice); PUBLISHes lost -> they
 *   arrive after the reconnect, once each;
 * - a broker restart: both apps come back by themselves (phase 2), subscribe
 *   again, hold the key service's new epochs, and readings flow; a publish
 *   made while the broker is down is acknowledged after it is back;
 * - re-key: pushes refresh the keys of a connected app; a reading sealed
 *   under an epoch whose push the reader missed is held, the keys asked for
 *   again, and the reading opened (not lost);
 * - end(): group keys, K_ks and the session's keys are zeroised.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { GK_TOPIC } from '../../firmware/secure/group.js';
import type { RunningBroker } from '../../broker/server.js';
import { tempDir, testBroker, waitFor } from '../broker/helpers.js';
import { freePort } from '../helpers/brokers.js';

/** A link that can lose everything in one direction and be cut, between one app and the broker. */
class LossyLink {
  dropUp = false;
  dropDown = false;
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}
  static async start(upstreamPort: number): Promise<LossyLink> {
    let link!: LossyLink;
    const server = net.createServer((c) => link.accept(c, upstreamPort));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    link = new LossyLink(server, (server.address() as net.AddressInfo).port);
    return link;
  }
  private accept(c: net.Socket, port: number): void {
    const up = net.connect(port, '127.0.0.1');
    for (const s of [c, up]) {
      this.sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => (this.sockets.delete(s), c.destroy(), up.destroy()));
    }
    c.on('data', (d) => this.dropUp || up.write(d));
    up.on('data', (d) => this.dropDown || c.write(d));
  }
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }
  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const dir = tempDir('mqsec-sdk-reconnect-');
let port = 0;
let broker: RunningBroker;
let link: LossyLink;
let dev: MqsecApp;
let reader: MqsecApp;
const got: { text: string; epoch?: number; mode?: string }[] = [];
const dropped: string[] = [];
const devEvents: string[] = [];
const readerEvents: string[] = [];
const TOPIC = 'sensors/dev1/temp';
const epochOf = (a: MqsecApp) => a.groups().find((g) => g.filter === 'sensors/dev1/#')?.epoch ?? 0;

beforeAll(async () => {
  port = await freePort();
  broker = await testBroker(dir.path, { port, revisionPollMs: 50 });
  const r = broker.registry;
  await r.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
  await r.addRule('sensor', 'publish', 'status/%u'); // hop by hop
  await r.addRule('app', 'subscribe', 'status/#');
  const devKey = (await r.addDevice('dev1', 'sensor')).key;
  const appKey = (await r.addDevice('backend', 'app')).key;
  await broker.syncRegistry();
  link = await LossyLink.start(port);
  const reconnect = { initialMs: 50, maxMs: 500 };
  dev = await connectApp({ url: `mqtt://127.0.0.1:${link.port}`, id: 'dev1', key: devKey, storage: new MemoryStorage(), reconnect });
  reader = await connectApp({ url: `mqtt://127.0.0.1:${port}`, id: 'backend', key: appKey, storage: new MemoryStorage(), reconnect });
  for (const [a, ev] of [
    [dev, devEvents],
    [reader, readerEvents],
  ] as const) {
    a.on('online', (i) => ev.push(`online phase ${i.phase}`));
    a.on('offline', () => ev.push('offline'));
  }
  reader.on('message', (_t, p, info) => got.push({ text: p.toString(), epoch: info.epoch, mode: info.mode }));
  reader.on('dropped', (_t, e) => dropped.push(e.code));
  await reader.subscribe('sensors/#');
  await reader.subscribe('status/#');
}, 60_000);

afterAll(async () => {
  await dev?.end();
  await reader?.end();
  await link?.stop();
  await broker?.stop();
  dir.remove();
});

function reset() {
  got.length = 0;
  dropped.length = 0;
  devEvents.length = 0;
  readerEvents.length = 0;
}

describe('QoS 1 across a lost connection', () => {
  it('PUBACKs lost: resent after the reconnect with the same group envelope and a new trailer; the reader drops each copy as REPLAY', async () => {
    reset();
    link.dropDown = true; // the broker's answers never arrive
    const sent = [0, 1, 2, 3, 4].map((i) => dev.publish(TOPIC, `acklost-${i}`, { qos: 1 }));
    await waitFor(() => got.length === 5, 5000, 'the reader got the five');
    expect(dev.pending).toBe(5); // none acknowledged
    link.cut();
    link.dropDown = false;
    await Promise.all(sent); // acknowledged on the new connection
    await waitFor(() => dropped.length === 5, 5000, 'the five copies');
    await new Promise((r) => setTimeout(r, 200));
    expect(got.map((m) => m.text)).toEqual([0, 1, 2, 3, 4].map((i) => `acklost-${i}`));
    expect(dropped).toEqual(['REPLAY', 'REPLAY', 'REPLAY', 'REPLAY', 'REPLAY']);
    expect(devEvents).toEqual(['offline', 'online phase 2']);
    expect(dev.pending).toBe(0);
  });

  it('PUBLISHes lost: they arrive after the reconnect, once each, in order', async () => {
    reset();
    link.dropUp = true;
    const sent = [0, 1, 2].map((i) => dev.publish(TOPIC, `publost-${i}`, { qos: 1 }));
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toEqual([]);
    link.cut();
    link.dropUp = false;
    await Promise.all(sent);
    await waitFor(() => got.length === 3, 5000, 'the three');
    expect(got.map((m) => m.text)).toEqual(['publost-0', 'publost-1', 'publost-2']);
    expect(dropped).toEqual([]);
  });
});

describe('QoS 1 on a hop-by-hop topic across a lost connection (§8.5)', () => {
  it('PUBACKs lost: resent unchanged under the previous connection keys; the broker opens them with its grace keys and its window drops the copies', async () => {
    reset();
    link.dropDown = true;
    const sent = [0, 1, 2].map((i) => dev.publish('status/dev1', `hop-${i}`, { qos: 1 }));
    await waitFor(() => got.length === 3, 5000, 'the reader got the three');
    link.cut();
    link.dropDown = false;
    await Promise.all(sent);
    await new Promise((r) => setTimeout(r, 300));
    expect(got.map((m) => `${m.mode} ${m.text}`)).toEqual(['hop hop-0', 'hop hop-1', 'hop hop-2']);
    expect(dropped).toEqual([]); // the broker dropped the copies: the reader never saw them
  });
});

describe('broker restart', () => {
  it('both apps reconnect by themselves (phase 2), subscribe again, take the new epochs; a publish made while the broker is down is acknowledged after', async () => {
    reset();
    const before = epochOf(reader);
    await broker.stop();
    await waitFor(() => devEvents.includes('offline') && readerEvents.includes('offline'), 5000, 'both offline');
    const duringOutage = dev.publish(TOPIC, 'while-down', { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    broker = await testBroker(dir.path, { port, revisionPollMs: 50 });
    await waitFor(() => dev.state === 'online' && reader.state === 'online', 20_000, 'both back online');
    await duringOutage;
    expect(devEvents).toEqual(['offline', 'online phase 2']);
    expect(readerEvents).toEqual(['offline', 'online phase 2']);
    // a restarted key service re-keys every group (it never stores a group key); epochs continue
    expect(epochOf(reader)).toBeGreaterThan(before);
    expect(epochOf(dev)).toBe(epochOf(reader));
    await waitFor(() => broker.context.liveDevices.size === 2, 5000, 'both sessions at the broker');
    await new Promise((r) => setTimeout(r, 200)); // the reader's SUBSCRIBE, sent at reconnect, is in
    got.length = 0;
    await dev.publish(TOPIC, 'after-restart', { qos: 1 });
    await waitFor(() => got.some((m) => m.text === 'after-restart'), 5000, 'reading after the restart');
    expect(got.find((m) => m.text === 'after-restart')!.epoch).toBe(epochOf(reader));
  }, 60_000);
});

describe('re-key', () => {
  it('a push refreshes the keys of connected apps; readings continue under the new epoch', async () => {
    reset();
    const e0 = epochOf(reader);
    const pushed: string[][] = [];
    reader.on('keys', (f) => pushed.push(f));
    broker.context.keyService!.rotate('sensors/dev1/#');
    await waitFor(() => epochOf(reader) === e0 + 1 && epochOf(dev) === e0 + 1, 2000, 'both re-keyed');
    expect(pushed).toEqual([['sensors/dev1/#']]);
    await dev.publish(TOPIC, 'new-epoch', { qos: 1 });
    await waitFor(() => got.length === 1, 5000, 'reading');
    expect(got).toEqual([{ text: 'new-epoch', epoch: e0 + 1, mode: 'e2e' }]);
  });

  it('a reader that missed the push holds the reading, asks again and opens it: nothing lost', async () => {
    reset();
    const e0 = epochOf(reader);
    // the next key push to the reader is lost on the way
    const r = reader as unknown as { incoming(t: string, p: Uint8Array): void };
    const orig = r.incoming.bind(reader);
    let lost = 0;
    r.incoming = (t, p) => (t === GK_TOPIC && lost === 0 ? void lost++ : orig(t, p));
    broker.context.keyService!.rotate('sensors/dev1/#');
    await waitFor(() => lost === 1 && epochOf(dev) === e0 + 1, 2000, 'push lost, writer re-keyed');
    expect(epochOf(reader)).toBe(e0);
    await dev.publish(TOPIC, 'sealed-under-the-missed-epoch', { qos: 1 });
    await waitFor(() => got.length === 1, 5000, 'the reading, after the reader asked again');
    r.incoming = orig;
    expect(got).toEqual([{ text: 'sealed-under-the-missed-epoch', epoch: e0 + 1, mode: 'e2e' }]);
    expect(dropped).toEqual([]);
    expect(epochOf(reader)).toBe(e0 + 1);
  });
});

describe('sequence ranges (§14.4)', () => {
  it('a writer publishing far past its range asks for the next ones on the same connection: all delivered, no reconnect, seq numbers never reused', async () => {
    reset();
    const small = tempDir('mqsec-sdk-range-');
    const b = await testBroker(small.path, { groupSeqBlock: 8, revisionPollMs: 50 });
    try {
      await b.registry.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
      const wKey = (await b.registry.addDevice('w1', 'sensor')).key;
      const rKey = (await b.registry.addDevice('r1', 'app')).key;
      await b.syncRegistry();
      const w = await connectApp({ url: `mqtt://127.0.0.1:${b.port}`, id: 'w1', key: wKey, reconnect: false });
      const rd = await connectApp({ url: `mqtt://127.0.0.1:${b.port}`, id: 'r1', key: rKey, reconnect: false });
      await waitFor(() => w.groups().length === 1 && rd.groups().length === 1, 2000, 'groups');
      const texts: string[] = [];
      const drops: string[] = [];
      rd.on('message', (_t, p) => texts.push(p.toString()));
      rd.on('dropped', (_t, e) => drops.push(e.code));
      await rd.subscribe('sensors/#');
      let offline = 0;
      w.on('offline', () => offline++);
      const n = 60; // 7.5 ranges of 8, all at once: sealing outruns the deliveries
      await Promise.all(Array.from({ length: n }, (_, i) => w.publish('sensors/w1/x', `m${i}`, { qos: 1 })));
      await waitFor(() => texts.length === n, 10_000, `all ${n} (got ${texts.length})`);
      expect(texts).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));
      expect(drops).toEqual([]);
      expect(offline).toBe(0);
      expect(w.keyring.sequence.next).toBeGreaterThan(n - 1);
      await w.end();
      await rd.end();
    } finally {
      await b.stop();
      small.remove();
    }
  });
});

describe('refused for good', () => {
  it('an app revoked while connected stops retrying: close with CONNECTION_REFUSED, keys wiped', async () => {
    const key = (await broker.registry.addDevice('short-lived', 'app')).key;
    await broker.syncRegistry();
    const a = await connectApp({ url: `mqtt://127.0.0.1:${port}`, id: 'short-lived', key, reconnect: { initialMs: 20, maxMs: 100 } });
    const events: string[] = [];
    a.on('offline', () => events.push('offline'));
    a.on('online', () => events.push('online'));
    const closed = new Promise<string | undefined>((r) => a.on('close', (e) => r(e?.code)));
    await broker.registry.revokeDevice('short-lived');
    expect(await closed).toBe('CONNECTION_REFUSED');
    expect(events).toEqual(['offline']);
    expect(a.state).toBe('closed');
    expect(a.groups()).toEqual([]);
  });
});

describe('end()', () => {
  it('zeroises the group keys, K_ks and the session keys it held', async () => {
    const k = reader.keyring as unknown as { ksKey: Uint8Array; groups: { current: { groupKey: Uint8Array }; previous?: { groupKey: Uint8Array } }[] };
    const s = reader.session as unknown as { authKey: Uint8Array; pskKey: Uint8Array; ticket?: { authKey: Uint8Array; chainKey: Uint8Array } };
    const held = [k.ksKey, s.authKey, s.pskKey, s.ticket!.authKey, s.ticket!.chainKey, ...k.groups.flatMap((g) => [g.current.groupKey, ...(g.previous ? [g.previous.groupKey] : [])])];
    expect(held.length).toBeGreaterThanOrEqual(6);
    for (const b of held) expect(b.some((x) => x !== 0)).toBe(true);
    const closed = new Promise<void>((r) => reader.once('close', () => r()));
    await reader.end();
    await closed;
    for (const b of held) expect(b.every((x) => x === 0)).toBe(true);
    expect(reader.groups()).toEqual([]);
    expect(reader.state).toBe('closed');
    await expect(reader.publish(TOPIC, 'x')).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });
});
