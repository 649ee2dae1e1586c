/**
 * End-to-end topic keys on a live broker (docs/protocol.md §14): group keys
 * delivered at connect and on change, readings and commands sealed end to end
 * through the SDK, a removed app locked out after the re-key, the broker
 * refusing a bad channel MAC (connection closed, nothing routed), mixed mode
 * (an e2e topic beside a hop-by-hop topic read by a password account), and
 * what the broker sees on the wire and keeps on disk.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import net from 'node:net';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import { GK_TOPIC, parseGroupEnvelope } from '../../firmware/secure/group.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import type { RunningBroker } from '../../broker/server.js';
import { TestApp, tempDir, testBroker, waitFor } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let broker: RunningBroker;
const keys = new Map<string, Uint8Array>();
/** Every byte any client sent to the broker and the broker sent back, through a recording proxy. */
const wire: Buffer[] = [];
let proxy: net.Server;
const proxySockets = new Set<net.Socket>();
let proxyPort = 0;
const open: MqsecApp[] = [];

function url(viaProxy = true) {
  return `mqtt://127.0.0.1:${viaProxy ? proxyPort : broker.port}`;
}

/** One flash per principal: counters are single-use, a reconnect must continue where the last one stopped. */
const flash = new Map<string, MemoryStorage>();
async function app(id: string): Promise<MqsecApp> {
  if (!flash.has(id)) flash.set(id, new MemoryStorage());
  // one connection each: a second app under the same id below takes over, and must not be taken back
  const a = await connectApp({ url: url(), id, key: keys.get(id)!, storage: flash.get(id), reconnect: false });
  open.push(a);
  return a;
}

function messages(a: MqsecApp) {
  const got: { topic: string; text: string; publisher?: string; epoch?: number; mode: string }[] = [];
  const dropped: string[] = [];
  a.on('message', (topic, payload, info) => got.push({ topic, text: payload.toString('utf8'), publisher: info.publisher, epoch: info.epoch, mode: info.mode }));
  a.on('dropped', (topic, e) => dropped.push(`${topic}:${e.code}`));
  return { got, dropped };
}

beforeAll(async () => {
  dir = tempDir();
  broker = await testBroker(dir.path, { revisionPollMs: 50 });
  const r = broker.registry;
  // sensor readings and commands end to end; status hop by hop, readable by a password account
  await r.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
  await r.addRule('sensor', 'subscribe', 'cmd/%u/#', 'e2e');
  await r.addRule('sensor', 'publish', 'status/%u');
  await r.addRule('app', 'subscribe', 'status/#');
  for (const [id, role] of [
    ['dev1', 'sensor'],
    ['app1', 'app'],
    ['app2', 'app'],
  ] as const)
    keys.set(id, (await r.addDevice(id, role)).key);
  await r.addAccount('viewer', 'app', 'viewer-password');
  await broker.syncRegistry();
  proxy = net.createServer((c) => {
    const up = net.connect(broker.port, '127.0.0.1');
    proxySockets.add(c).add(up);
    c.on('data', (d) => (wire.push(Buffer.from(d)), up.write(d)));
    up.on('data', (d) => (wire.push(Buffer.from(d)), c.write(d)));
    c.on('close', () => up.destroy());
    up.on('close', () => c.destroy());
    c.on('error', () => {});
    up.on('error', () => {});
  });
  await new Promise<void>((res) => proxy.listen(0, '127.0.0.1', () => res()));
  proxyPort = (proxy.address() as net.AddressInfo).port;
});

afterAll(async () => {
  for (const a of open) await a.end().catch(() => {});
  proxy?.close();
  for (const c of proxySockets) c.destroy();
  await broker?.stop();
  dir?.remove();
});

describe('end-to-end topic keys on the broker', () => {
  it('group keys are delivered at connect: each principal gets exactly its groups and roles', async () => {
    const dev = await app('dev1');
    const a1 = await app('app1');
    expect(dev.groups()).toEqual([
      { filter: 'cmd/dev1/#', epoch: expect.any(Number), reader: true, writer: false },
      { filter: 'sensors/dev1/#', epoch: expect.any(Number), reader: false, writer: true },
    ]);
    expect(a1.groups()).toEqual([
      { filter: 'cmd/dev1/#', epoch: expect.any(Number), reader: false, writer: true },
      { filter: 'sensors/dev1/#', epoch: expect.any(Number), reader: true, writer: false },
    ]);
  });

  it('readings and commands travel end to end; a password account reads the hop-by-hop topic and nothing of the e2e one (mixed mode)', async () => {
    const [dev, a1] = open;
    const fromApp = messages(a1);
    const fromDev = messages(dev);
    await a1.subscribe('sensors/#');
    await a1.subscribe('status/#');
    await dev.subscribe('cmd/dev1/#');
    const viewer = await TestApp.connect({ host: '127.0.0.1', port: broker.port }, 'viewer', 'viewer-password');
    expect(await viewer.subscribe('sensors/#')).toBe(1);
    expect(await viewer.subscribe('status/#')).toBe(1);
    await dev.publish('sensors/dev1/reading', '{"t":21.5}', { qos: 1 });
    await dev.publish('status/dev1', 'online', { qos: 1 });
    await a1.publish('cmd/dev1/interval', '30', { qos: 1 });
    await waitFor(() => fromApp.got.length >= 2 && fromDev.got.length >= 1, 5000, 'deliveries');
    expect(fromApp.got).toContainEqual({ topic: 'sensors/dev1/reading', text: '{"t":21.5}', publisher: 'dev1', epoch: expect.any(Number), mode: 'e2e' });
    expect(fromApp.got).toContainEqual({ topic: 'status/dev1', text: 'online', publisher: undefined, epoch: undefined, mode: 'hop' });
    expect(fromDev.got).toEqual([{ topic: 'cmd/dev1/interval', text: '30', publisher: 'app1', epoch: expect.any(Number), mode: 'e2e' }]);
    await waitFor(() => viewer.received.length >= 1, 5000, 'viewer');
    await new Promise((r) => setTimeout(r, 200));
    expect(viewer.received).toEqual([{ topic: 'status/dev1', payload: 'online' }]);
    await viewer.end();
    expect(fromApp.dropped).toEqual([]);
  });

  it('membership changes re-key within 1 s and push to connected members: a new app, then a revoked one, locked out of what is sealed after', async () => {
    const [dev, a1] = open;
    const a2 = await app('app2');
    const epochOf = (a: MqsecApp) => a.groups().find((g) => g.filter === 'sensors/dev1/#')?.epoch ?? 0;
    const e0 = epochOf(a1);
    const pushed: string[][] = [];
    a1.on('keys', (f) => pushed.push(f));
    const tAdd = Date.now();
    keys.set('app3', (await broker.registry.addDevice('app3', 'app')).key);
    await waitFor(() => epochOf(a1) === e0 + 1 && epochOf(a2) === e0 + 1, 1000, 'new reader re-keyed');
    expect(Date.now() - tAdd).toBeLessThan(1000);
    expect(pushed.flat()).toContain('sensors/dev1/#'); // and cmd/dev1/#: app3 is a new writer there
    const epochBefore = epochOf(a1);
    const seen = messages(a1);
    const seen2 = messages(a2);
    await a2.subscribe('sensors/#');
    await dev.publish('sensors/dev1/reading', 'before', { qos: 1 });
    await waitFor(() => seen2.got.length === 1 && seen.got.length === 1, 5000, 'both apps read');
    // raw envelopes as the broker forwards them to app1
    const raw: Buffer[] = [];
    a1.client.on('message', (t, p) => t === 'sensors/dev1/reading' && raw.push(p));
    // app2 turns hostile: it ignores every key push from now on (including "forget this group"),
    // so only the re-key can keep it out
    const hostile = a2 as unknown as { incoming(t: string, p: Uint8Array): void };
    const orig = hostile.incoming.bind(a2);
    hostile.incoming = (t, p) => (t === GK_TOPIC ? undefined : orig(t, p));
    a2.keyring.destroy = () => {}; // and keeps its keys when the broker closes its connection
    const t0 = Date.now();
    await broker.registry.revokeDevice('app2');
    await waitFor(() => (a1.groups().find((g) => g.filter === 'sensors/dev1/#')?.epoch ?? 0) > epochBefore, 1000, 'app1 re-keyed');
    await waitFor(() => (dev.groups().find((g) => g.filter === 'sensors/dev1/#')?.epoch ?? 0) > epochBefore, 1000, 'dev1 re-keyed');
    expect(Date.now() - t0).toBeLessThan(1000);
    await dev.publish('sensors/dev1/reading', 'after', { qos: 1 });
    await waitFor(() => raw.length === 1 && seen.got.length === 2, 5000, 'after');
    expect(seen.got[1]).toMatchObject({ text: 'after', publisher: 'dev1' });
    // app2 kept the keys it had when it was cut off: they no longer open anything
    expect(a2.groups()).toContainEqual(expect.objectContaining({ filter: 'sensors/dev1/#', epoch: epochBefore }));
    let code = 'opened';
    try {
      a2.keyring.open('sensors/dev1/reading', new Uint8Array(raw[0]));
    } catch (e) {
      code = isMqsecError(e) ? e.code : String(e);
    }
    expect(['UNKNOWN_SESSION', 'DECRYPT_FAILED']).toContain(code);
    expect(parseGroupEnvelope(new Uint8Array(raw[0])).epochLow).toBe(a1.groups().find((g) => g.filter === 'sensors/dev1/#')!.epoch % 4);
    expect(seen2.got.map((m) => m.text)).toEqual(['before']);
    // and it cannot come back for keys
    await expect(connectApp({ url: url(), id: 'app2', key: keys.get('app2')!, keyTimeoutMs: 1000 })).rejects.toThrow();
  });

  it('the broker refuses a PUBLISH whose channel MAC does not verify: connection closed, nothing routed', async () => {
    const [, a1] = open;
    const seen = messages(a1);
    const bad = await app('dev1'); // takes over dev1's connection
    const genv = bad.keyring.seal('sensors/dev1/reading', new TextEncoder().encode('forged trailer'));
    const wrapped = bad.session.wrapChannel('sensors/dev1/reading', genv);
    wrapped[wrapped.length - 1] ^= 1;
    const closed = new Promise<void>((r) => bad.client.once('close', () => r()));
    bad.client.publish('sensors/dev1/reading', Buffer.from(wrapped), { qos: 1 });
    await closed;
    await new Promise((r) => setTimeout(r, 200));
    expect(seen.got).toEqual([]);
    const row = await broker.registry.listAudit({ limit: 50 });
    expect(JSON.stringify(row)).toContain('channel bad_mac');
  });

  it('a password account cannot publish into an e2e topic', async () => {
    await broker.registry.addRule('app', 'publish', 'sensors/+/override');
    await broker.syncRegistry();
    const [, a1] = open;
    const seen = messages(a1);
    const viewer = await TestApp.connect({ host: '127.0.0.1', port: broker.port }, 'viewer', 'viewer-password');
    await viewer.client.publishAsync('sensors/dev1/override', 'plaintext', { qos: 1 });
    await new Promise((r) => setTimeout(r, 200));
    expect(seen.got).toEqual([]);
    await viewer.end();
  });

  it('on the wire and on disk the broker meets no reading plaintext and no group key delivery in clear', async () => {
    const secret = 'confidential-reading-4711';
    const dev = await app('dev1');
    const [, a1] = open;
    const seen = messages(a1);
    await dev.publish('sensors/dev1/reading', secret, { qos: 1 });
    await waitFor(() => seen.got.length === 1, 5000, 'reading');
    expect(seen.got[0].text).toBe(secret);
    const all = Buffer.concat(wire);
    expect(all.includes(Buffer.from(secret))).toBe(false);
    expect(all.includes(Buffer.from(GK_TOPIC))).toBe(true); // deliveries did cross this wire
    const groupKeys = (broker.context.keyService as unknown as { groups: Map<string, { key: Uint8Array }> }).groups;
    for (const g of groupKeys.values()) expect(all.includes(Buffer.from(g.key))).toBe(false);
    for (const f of readdirSync(dir.path)) {
      const b = readFileSync(join(dir.path, f));
      expect(b.includes(Buffer.from(secret))).toBe(false);
      for (const g of groupKeys.values()) expect(b.includes(Buffer.from(g.key))).toBe(false);
    }
  });
});
