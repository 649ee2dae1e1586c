/**
 * Attack suite against the running broker. A genuine device keeps publishing
 * QoS 1 readings to a genuine app between attacks; after every attack the
 * broker must still serve both and must have lost nothing they sent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import type { RunningBroker } from '../../broker/server.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { TestApp, TestDevice, replayLogin, tempDir, testBroker, tryLogin, waitFor } from './helpers.js';
import { MSG_COUNTER_HINT } from '../../firmware/secure/constants.js';

const results: { attack: string; result: string }[] = [];

/** Opens a raw TCP connection; resolves once connected. */
function rawSocket(port: number): Promise<net.Socket & { closedP: Promise<void>; isClosed: () => boolean; data: Buffer[] }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }) as net.Socket & {
      closedP: Promise<void>;
      isClosed: () => boolean;
      data: Buffer[];
    };
    let closed = false;
    s.data = [];
    s.on('data', (d) => s.data.push(d));
    s.closedP = new Promise((r) => s.once('close', () => ((closed = true), r())));
    s.isClosed = () => closed;
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function connectPacket(clientId: string, keepalive = 30, extra: Record<string, unknown> = {}): Buffer {
  return mqttPacket.generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    clientId,
    keepalive,
    ...extra,
  } as mqttPacket.IConnectPacket);
}

describe('attack suite', () => {
  const dir = tempDir();
  let broker: RunningBroker;
  let genuine: TestDevice;
  let key: Uint8Array;
  let app: TestApp;
  let seq = 0;
  const pendingKeys: Uint8Array[] = [];

  beforeAll(async () => {
    broker = await testBroker(dir.path, {
      limits: {
        connectTimeoutMs: 400,
        packetTimeoutMs: 300,
        phase1TimeoutMs: 400,
        maxPacketSize: 64 * 1024,
        maxKeepaliveSec: 120,
        phase1PerAddress: { ratePerSec: 5, burst: 20 },
        maxPending: 3,
        passwordPerAddress: { ratePerSec: 2, burst: 15 },
        maxOutgoingBytes: 64 * 1024,
      },
    });
    key = (await broker.registry.addDevice('gen1', 'sensor')).key;
    await broker.registry.addDevice('other', 'sensor');
    for (let i = 0; i < 4; i++) pendingKeys.push((await broker.registry.addDevice(`pc${i}`, 'sensor')).key);
    await broker.registry.addAccount('backend', 'app', 'backend-password');
    genuine = new TestDevice(broker, 'gen1', key, new MemoryStorage());
    expect((await genuine.connect()).ok).toBe(true);
    await genuine.subscribe('cmd/gen1/#');
    app = await TestApp.connect(broker, 'backend', 'backend-password');
    await app.subscribe('sensors/#');
  });

  afterAll(async () => {
    console.log('\nattack suite results:\n' + results.map((r) => `  ${r.attack.padEnd(44)} ${r.result}`).join('\n'));
    await genuine.end();
    await app.end();
    await broker.stop();
    dir.remove();
  });

  /** The genuine pair still works and nothing sent with QoS 1 was lost or duplicated. */
  async function genuineIntact(attack: string, result: string): Promise<void> {
    expect(genuine.closed).toBe(false);
    const n = ++seq;
    await genuine.publish('sensors/gen1/seq', String(n), 1);
    await waitFor(() => app.received.filter((m) => m.topic === 'sensors/gen1/seq').length === n, 5000, `reading ${n}`);
    const got = app.received.filter((m) => m.topic === 'sensors/gen1/seq').map((m) => Number(m.payload));
    expect(got).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    await app.client.publishAsync('cmd/gen1/ping', `p${n}`, { qos: 1 });
    await waitFor(() => genuine.received.some((m) => m.payload === `p${n}`), 5000, 'command to genuine');
    results.push({ attack, result });
  }

  it('forged CONNECTs: random KX1-shaped passwords, wrong keys, garbage', async () => {
    const codes = new Set<number | string>();
    for (let i = 0; i < 10; i++) {
      const forger = new TestDevice(broker, 'gen1', new Uint8Array(32).fill(i + 1));
      const r = await forger.connect();
      expect(r.ok).toBe(false);
      codes.add(r.code ?? 'closed');
    }
    for (const pw of [Buffer.from([0x11, 1, 2, 3]), Buffer.alloc(200, 0x11), Buffer.from('~!!!'), Buffer.alloc(0)]) {
      const c = await tryLogin(broker, { clientId: 'gen1', username: 'gen1', password: pw });
      expect(c).not.toBe(0);
      codes.add(c);
    }
    await genuineIntact('forged CONNECT (14 variants)', `refused, CONNACK codes ${[...codes].join(',')}`);
  });

  it('downgrade: registered device id with a plain password, or without one', async () => {
    expect(await tryLogin(broker, { clientId: 'gen1', username: 'gen1', password: 'password1' })).toBe(4);
    expect(await tryLogin(broker, { clientId: 'gen1', username: 'gen1' })).toBe(4);
    expect(await tryLogin(broker, { clientId: 'gen1' })).not.toBe(0);
    await genuineIntact('downgrade to plain password', 'refused (4, as an unknown name), no session');
  });

  it('client-id takeover attempts by others: account login and forged device login with the live id', async () => {
    expect(await tryLogin(broker, { clientId: 'gen1', username: 'backend', password: 'backend-password' })).toBe(2);
    const replay = await replayLogin(broker, { clientId: 'gen1', password: genuine.lastPassword! }); // replayed KX1: hint and close (§5.5)
    expect([replay.connack, replay.kx.map((k) => k[0]), replay.closedByBroker]).toEqual([0, [MSG_COUNTER_HINT], true]);
    await genuineIntact('client-id takeover (account, replayed KX1)', 'refused, live session untouched');
  });

  it('oversize remaining length is refused on the fixed header, before buffering', async () => {
    const s = await rawSocket(broker.port);
    s.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f])); // CONNECT claiming 256 MB
    await s.closedP;
    const s2 = await rawSocket(broker.port);
    s2.write(connectPacket('backend/x-over', 30, { username: 'backend', password: Buffer.from('backend-password') }));
    await waitFor(() => s2.data.length > 0);
    s2.write(Buffer.from([0x30, 0x80, 0x80, 0x10])); // PUBLISH claiming 256 KiB > 64 KiB limit
    await s2.closedP;
    expect(await broker.metrics.value('mqsec_connection_rejects_total', { reason: 'oversize' })).toBe(2);
    await genuineIntact('oversize remaining length', 'closed at the header (2/2)');
  });

  it('truncated, malformed and random packets close only the offending connection', async () => {
    const s = await rawSocket(broker.port);
    s.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01])); // 5-byte remaining length
    await s.closedP;
    const t = await rawSocket(broker.port);
    t.write(Buffer.from([0x30, 0x02, 0x00])); // PUBLISH before CONNECT, truncated
    await t.closedP;
    const u = await rawSocket(broker.port);
    u.write(connectPacket('trunc').subarray(0, 9)); // truncated CONNECT, then silence
    await u.closedP; // packet / connect timeout
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 64 }), async (bytes) => {
        const g = await rawSocket(broker.port);
        g.write(Buffer.from(bytes));
        await g.closedP;
      }),
      { numRuns: 40 },
    );
    await genuineIntact('truncated / malformed / 40 random packets', 'offending sockets closed');
  });

  it('500 half-open sockets are closed by the CONNECT timeout while genuine traffic flows', async () => {
    const sockets = await Promise.all(Array.from({ length: 500 }, () => rawSocket(broker.port)));
    await genuineIntact('(during 500 half-open sockets)', 'served');
    await Promise.all(sockets.map((s) => s.closedP));
    expect(sockets.every((s) => s.isClosed())).toBe(true);
    await genuineIntact('500 half-open sockets', 'all closed by the broker (connect timeout)');
  });

  it('slow clients: keepalive 0 / too long refused, a silent client is dropped, a trickled packet is cut', async () => {
    const k0 = await rawSocket(broker.port);
    k0.write(connectPacket('backend/ka0', 0, { username: 'backend', password: Buffer.from('backend-password') }));
    await k0.closedP;
    expect(k0.data.length).toBe(0); // no CONNACK
    const kBig = await rawSocket(broker.port);
    kBig.write(connectPacket('backend/kabig', 65535, { username: 'backend', password: Buffer.from('backend-password') }));
    await kBig.closedP;
    const silent = await rawSocket(broker.port);
    silent.write(connectPacket('backend/silent', 1, { username: 'backend', password: Buffer.from('backend-password') }));
    await waitFor(() => silent.data.length > 0); // CONNACK, then silence: Aedes closes after 1.5 x keepalive
    await silent.closedP;
    const trickle = await rawSocket(broker.port);
    trickle.write(connectPacket('backend/trickle', 60, { username: 'backend', password: Buffer.from('backend-password') }));
    await waitFor(() => trickle.data.length > 0);
    const pub = mqttPacket.generate({ cmd: 'publish', topic: 'cmd/gen1/slow', payload: Buffer.alloc(100), qos: 0, retain: false, dup: false });
    let i = 0;
    const iv = setInterval(() => (i < pub.length && !trickle.isClosed() ? trickle.write(pub.subarray(i, ++i)) : clearInterval(iv)), 50);
    await trickle.closedP;
    clearInterval(iv);
    expect(i).toBeLessThan(pub.length);
    expect(await broker.metrics.value('mqsec_connection_rejects_total', { reason: 'slow-packet' })).toBeGreaterThanOrEqual(1);
    await genuineIntact('slow clients (keepalive 0, 65535, silent, trickle)', 'refused / dropped');
  });

  it('replayed and re-targeted envelopes are dropped, not delivered', async () => {
    const before = app.received.length;
    const envelope = await genuine.publish('sensors/gen1/once', 'once', 1);
    await waitFor(() => app.received.length === before + 1);
    await genuine.client.publishAsync('sensors/gen1/once', envelope, { qos: 1 }); // replay
    await genuine.client.publishAsync('sensors/gen1/other', envelope, { qos: 1 }); // same seq on another topic: the replay window refuses it first (topic binding alone: tested below)
    await genuine.client.publishAsync('sensors/gen1/junk', Buffer.from('not an envelope'), { qos: 1 });
    await genuineIntact('replayed / re-targeted / garbage envelopes', 'dropped');
    expect(app.received.filter((m) => m.payload === 'once')).toHaveLength(1);
    expect(app.received.some((m) => m.topic === 'sensors/gen1/other' || m.topic === 'sensors/gen1/junk')).toBe(false);
    let envelopeDrops = 0;
    for (const reason of ['replay', 'decrypt_failed', 'malformed', 'unknown_session', 'truncated']) {
      envelopeDrops += await broker.metrics.value('mqsec_drops_total', { reason });
    }
    expect(await broker.metrics.value('mqsec_drops_total', { reason: 'replay' })).toBeGreaterThanOrEqual(1);
    expect(envelopeDrops).toBe(3);
  });

  it('publishing to $mqsec/... and to other devices topics is dropped and audited', async () => {
    const root = await TestApp.connect(broker, 'backend', 'backend-password');
    await genuine.publish('sensors/other/temp', 'spoof', 1);
    await genuine.publish('$mqsec/kx', 'x', 1).catch(() => undefined);
    await genuine.client.publishAsync('$mqsec/kx/other', Buffer.from('x'), { qos: 1 });
    await root.client.publishAsync('$mqsec/kx', 'x', { qos: 1 });
    await root.client.publishAsync('sensors/gen1/fake', 'x', { qos: 1 }); // app may not publish sensor data
    await genuineIntact('publish to $mqsec/# and foreign topics', 'dropped + audited');
    expect(app.received.some((m) => m.payload === 'spoof' || m.topic.startsWith('$mqsec') || m.topic === 'sensors/gen1/fake')).toBe(false);
    expect((await broker.registry.listAudit({ kind: 'publish.drop' })).length).toBeGreaterThanOrEqual(4);
    await root.end();
  });

  it('topic binding: an envelope sealed for one topic, moved to another with a fresh sequence number, is refused by the AEAD', async () => {
    // Sealed but never sent on its own topic: its sequence number is new to the broker, so the
    // replay window lets it through and only the topic in the AAD (§8.1) can refuse it.
    for (const [sealedFor, sentTo] of [
      ['sensors/gen1/kitchen', 'sensors/gen1/door'],
      ['sensors/gen1/a', 'sensors/gen1/a/b'],
    ] as const) {
      const before = await broker.metrics.value('mqsec_drops_total', { reason: 'decrypt_failed' });
      const moved = Buffer.from(genuine.session.seal(sealedFor, new TextEncoder().encode(`moved-${sentTo}`)));
      await genuine.client.publishAsync(sentTo, moved, { qos: 1 });
      await genuineIntact(`envelope moved ${sealedFor} -> ${sentTo} (fresh seq)`, 'dropped (decrypt_failed)');
      expect(await broker.metrics.value('mqsec_drops_total', { reason: 'decrypt_failed' })).toBe(before + 1);
      expect(app.received.some((m) => m.payload === `moved-${sentTo}`)).toBe(false);
    }
  });

  describe('KX3 MAC: a pending phase 1 opened with a genuine KX1 (relayed by an on-path attacker) gets no session from a forged KX3', () => {
    let kxKey: Uint8Array;
    const kxStorage = new MemoryStorage();
    let root: TestApp;
    beforeAll(async () => {
      kxKey = (await broker.registry.addDevice('kx3dev', 'sensor')).key;
      await broker.registry.addAccount('kxroot', 'admin', 'kxroot-password');
      await broker.syncRegistry();
      root = await TestApp.connect(broker, 'kxroot', 'kxroot-password', 'kxroot');
      await root.subscribe('sensors/#');
    });
    afterAll(async () => {
      await root.end();
    });

    /** Opens a pending phase 1 for kx3dev (its own KX1, KX3 held back), sends `kx3` instead, and checks that nothing was gained. */
    async function forgedKx3(attack: string, make: (genuineKx3: Uint8Array) => Uint8Array): Promise<void> {
      const tickets = await broker.registry.ticketCount('kx3dev');
      const failsBefore = (await broker.registry.listAudit({ kind: 'auth.fail', subject: 'kx3dev', limit: 1000 })).filter((a) => a.detail === 'KX3 BAD_MAC').length;
      const d = new TestDevice(broker, 'kx3dev', kxKey, kxStorage);
      await d.session.forgetTicket();
      d.holdKx3 = true;
      expect(await d.connect()).toMatchObject({ ok: true, phase: 1 });
      const held = d.heldKx3!;
      d.client.publish(held.topic, Buffer.from(make(held.payload)), { qos: 0 });
      d.client.publish('sensors/kx3dev/t', Buffer.from('after-forged-kx3'), { qos: 0 });
      await waitFor(() => d.closed, 5000, 'connection closed after the forged KX3');
      expect(await broker.registry.ticketCount('kx3dev')).toBe(tickets); // no ticket stored
      expect(broker.context.liveDevices.has('kx3dev')).toBe(false);
      const failsAfter = (await broker.registry.listAudit({ kind: 'auth.fail', subject: 'kx3dev', limit: 1000 })).filter((a) => a.detail === 'KX3 BAD_MAC').length;
      expect(failsAfter).toBe(failsBefore + 1);
      expect(root.received.some((m) => m.topic.startsWith('sensors/kx3dev'))).toBe(false);
      await genuineIntact(attack, 'closed, no ticket, no session');
    }

    it('random tag in a well-formed KX3', async () => {
      await forgedKx3('KX3 with a random tag', (g) => {
        const f = new Uint8Array(g.length);
        f[0] = g[0]!;
        crypto.getRandomValues(f.subarray(1));
        return f;
      });
    });

    it('one bit of the genuine KX3 flipped', async () => {
      await forgedKx3('KX3 with one bit flipped', (g) => {
        const f = g.slice();
        f[f.length - 1]! ^= 0x01;
        return f;
      });
    });

    it('the KX3 of an earlier completed phase 1 (another transcript)', async () => {
      const first = new TestDevice(broker, 'kx3dev', kxKey, kxStorage);
      await first.session.forgetTicket();
      first.holdKx3 = true;
      expect((await first.connect()).ok).toBe(true);
      const earlier = first.heldKx3!.payload.slice();
      await first.sendHeldKx3();
      await waitFor(() => broker.context.liveDevices.has('kx3dev'), 5000, 'earlier phase 1 complete');
      await first.end();
      await waitFor(() => !broker.context.liveDevices.has('kx3dev'), 5000, 'earlier session gone');
      await forgedKx3('KX3 of an earlier handshake', () => earlier);
    });
  });

  describe('device publish policy: a valid envelope (own key, exact topic, fresh sequence number) on a topic the role does not grant is dropped', () => {
    let root: TestApp;
    beforeAll(async () => {
      await broker.registry.addAccount('polroot', 'admin', 'polroot-password');
      await broker.syncRegistry();
      root = await TestApp.connect(broker, 'polroot', 'polroot-password', 'polroot');
      for (const f of ['sensors/other/#', 'cmd/gen1/#', 'lights/#']) await root.subscribe(f);
    });
    afterAll(async () => {
      await root.end();
    });

    for (const [what, topic] of [
      ["another device's reading topic", 'sensors/other/temp'],
      ['its own command topic (granted for subscribe only)', 'cmd/gen1/open'],
      ['a topic no rule names', 'lights/all'],
    ] as const) {
      it(what, async () => {
        const before = await broker.metrics.value('mqsec_drops_total', { reason: 'not-authorized' });
        await genuine.publish(topic, `policy-${topic}`, 1);
        await genuineIntact(`device publish to ${topic}`, 'dropped (not-authorized)');
        expect(await broker.metrics.value('mqsec_drops_total', { reason: 'not-authorized' })).toBe(before + 1);
        expect(root.received.some((m) => m.payload === `policy-${topic}`)).toBe(false);
        expect(genuine.received.some((m) => m.payload === `policy-${topic}`)).toBe(false);
      });
    }
  });

  it('a pending phase-1 client can do nothing but KX3', async () => {
    await broker.registry.addDevice('pend', 'sensor');
    const { key: pk } = { key: (await broker.registry.rotateDevice('pend')).key };
    const p = new TestDevice(broker, 'pend', pk);
    p.holdKx3 = true;
    expect((await p.connect()).ok).toBe(true);
    p.client.publish('sensors/pend/x', Buffer.from('early'), { qos: 0 });
    await waitFor(() => p.closed, 5000, 'pending client closed');
    expect(app.received.some((m) => m.payload === 'early')).toBe(false);
    await genuineIntact('data from a pending (pre-KX3) session', 'connection closed');
  });

  it('pending-session cap: phase-1 logins beyond maxPending are refused until KX3 or timeout frees a slot', async () => {
    const stalled = pendingKeys.slice(0, 3).map((k, i) => {
      const d = new TestDevice(broker, `pc${i}`, k);
      d.holdKx3 = true;
      return d;
    });
    for (const d of stalled) expect((await d.connect()).ok).toBe(true);
    expect(broker.context.pendingCount.value).toBe(3);
    const fourth = new TestDevice(broker, 'pc3', pendingKeys[3]!);
    expect(await fourth.connect()).toMatchObject({ ok: false, code: 3 });
    await Promise.all(stalled.map((d) => waitFor(() => d.closed, 5000, 'pending timeout')));
    expect(broker.context.pendingCount.value).toBe(0);
    expect(await fourth.connect()).toMatchObject({ ok: true, phase: 1 });
    await fourth.end();
    await genuineIntact('pending-session cap (3) + stalled KX3', '4th refused (3), slots freed by timeout');
  });

  it('reserved client ids: an account cannot pose as a pending session', async () => {
    const pend = new TestDevice(broker, 'pc0', pendingKeys[0]!);
    pend.holdKx3 = true;
    // pc0's storage is new: its counter starts over, which the broker refuses as a replay
    expect((await pend.connect()).ok).toBe(false);
    expect(await tryLogin(broker, { clientId: '$pending:gen1:1', username: 'backend', password: 'backend-password' })).toBe(2);
    await genuineIntact('account with a $-client id', 'refused (2)');
  });

  it('a subscriber that stops reading is cut off at its outgoing-queue bound; publishers are unaffected', async () => {
    const slow = await rawSocket(broker.port);
    slow.write(connectPacket('backend/slowreader', 60, { username: 'backend', password: Buffer.from('backend-password') }));
    await waitFor(() => slow.data.length > 0);
    slow.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sensors/gen1/bulk', qos: 0 }] } as mqttPacket.ISubscribePacket));
    await waitFor(() => slow.data.length > 1);
    slow.pause(); // stop reading: kernel buffers fill, then the broker's queue grows
    const chunk = 'x'.repeat(8 * 1024);
    const cut = async () => (await broker.metrics.value('mqsec_connection_rejects_total', { reason: 'slow-consumer' })) === 1;
    let sent = 0;
    while (sent < 4000 && !(sent % 50 === 0 && (await cut()))) {
      await genuine.publish('sensors/gen1/bulk', chunk, 0);
      sent++;
      if (sent % 50 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    expect(await cut()).toBe(true);
    slow.resume(); // a paused socket reports the close only once its data is read
    await slow.closedP;
    await genuineIntact('subscriber that stops reading', 'disconnected at 64 KiB queued');
  });

  it('phase-1 flood from one address is rate limited; genuine phase 2 still works', async () => {
    const attempts = 60;
    const codes: (number | string)[] = [];
    await Promise.all(
      Array.from({ length: attempts }, async (_, i) => {
        const d = new TestDevice(broker, 'other', new Uint8Array(32).fill(i)); // wrong key: forged KX1
        codes.push((await d.connect()).code ?? 'closed');
      }),
    );
    const limited = codes.filter((c) => c === 3).length;
    expect(limited).toBeGreaterThan(0);
    expect(codes.every((c) => c === 3 || c === 4)).toBe(true);
    // the genuine device reconnects (phase 2 is not subject to the phase-1 limit)
    await genuine.end();
    expect(await genuine.connect()).toMatchObject({ ok: true, phase: 2 });
    await genuine.subscribe('cmd/gen1/#');
    await genuineIntact(`phase-1 flood (${attempts} KX1)`, `${limited} rate-limited (3), ${attempts - limited} bad MAC (4)`);
  });

  it('password guessing flood is rate limited before scrypt (last: it spends this address\'s password budget)', async () => {
    const codes = await Promise.all(
      Array.from({ length: 40 }, (_, i) => tryLogin(broker, { clientId: `guess${i}`, username: i % 2 ? 'backend' : 'nobody', password: `guess-${i}` })),
    );
    const limited = codes.filter((c) => c === 3).length;
    expect(limited).toBeGreaterThan(0);
    expect(codes.every((c) => c === 3 || c === 4)).toBe(true);
    await genuineIntact('password guessing flood (40)', `${limited} rate-limited (3), ${40 - limited} refused (4)`);
  });
});
