/**
 * The broker-log lines the Mosquitto key service depends on (docs/protocol.md
 * §15.4), pinned on the installed Mosquitto: each case makes the broker log
 * one event on `$SYS/broker/log/#`, the test asserts the exact line (ports
 * and timestamps masked) and what broker/stock/mosquitto-log.ts makes of it.
 * A Mosquitto whose wording changed fails here first. Plus the parser on
 * arbitrary input (bounded, never throws).
 */
import net from 'node:net';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { MosquittoKeyService } from '../../broker/stock/mosquitto-key-service.js';
import { parseNoticeLine, parseSubscribeLine } from '../../broker/stock/mosquitto-log.js';
import { registrySource } from '../../broker/stock/registry-source.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { hasMosquittoDynsec, startDynsecMosquitto, type RunningDynsecMosquitto } from '../helpers/mosquitto-dynsec.js';

const run = hasMosquittoDynsec() ? describe : describe.skip;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An MQTT 3.1.1 CONNECT (clean session, user name and password) built by hand, for a client that then says nothing. */
function connectPacket(clientId: string, username: string, password: string, keepalive: number): Buffer {
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
  };
  const body = Buffer.concat([str('MQTT'), Buffer.from([4, 0xc2, keepalive >> 8, keepalive & 0xff]), str(clientId), str(username), str(password)]);
  if (body.length > 127) throw new Error('test packet too long');
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

/** Timestamps and ports out, so a line can be compared exactly. */
const mask = (line: string) => line.replace(/^\d+: /, 'T: ').replace(/127\.0\.0\.1:\d+/, '127.0.0.1:P');

run('Mosquitto broker log lines the key service parses (§15.4), on the installed broker', () => {
  let broker: RunningDynsecMosquitto;
  let listener: mqtt.MqttClient;
  const lines: { topic: string; text: string }[] = [];

  const admin = (clientId: string, o: mqtt.IClientOptions = {}) =>
    mqtt.connectAsync(broker.url, { protocolVersion: 4, clientId, username: broker.adminUser, password: broker.adminPassword, reconnectPeriod: 0, ...o });

  /** Lines of one client id (on every log topic), waited for until `n` arrived. */
  async function linesOf(clientId: string, n: number, ms = 5000): Promise<{ topic: string; text: string }[]> {
    const end = Date.now() + ms;
    const word = new RegExp(`\\s${clientId}([\\s.,:]|$)`);
    const mine = () => lines.filter((l) => word.test(l.text));
    while (mine().length < n) {
      if (Date.now() > end) throw new Error(`log lines of ${clientId}: ${JSON.stringify(mine())}`);
      await sleep(20);
    }
    return mine().map((l) => ({ topic: l.topic, text: mask(l.text) }));
  }

  beforeAll(async () => {
    broker = await startDynsecMosquitto();
    listener = await admin('pin-listener');
    listener.on('message', (topic, payload) => lines.push({ topic, text: payload.toString('utf8') }));
    await listener.subscribeAsync('$SYS/broker/log/#', { qos: 0 });
  }, 30_000);

  afterAll(async () => {
    await listener?.endAsync(true);
    await broker?.stop();
  });

  it('connect with a user name, then DISCONNECT', async () => {
    const c = await admin('pin-clean');
    await c.endAsync();
    const got = await linesOf('pin-clean', 2);
    expect(got).toEqual([
      { topic: '$SYS/broker/log/N', text: "T: New client connected from 127.0.0.1:P as pin-clean (p2, c1, k60, u'mqsec-admin')." },
      { topic: '$SYS/broker/log/N', text: 'T: Client pin-clean disconnected.' },
    ]);
    expect(parseNoticeLine(lines.find((l) => l.text.includes('as pin-clean'))!.text)).toEqual({ kind: 'connect', clientId: 'pin-clean', username: 'mqsec-admin' });
    expect(parseNoticeLine(lines.find((l) => l.text.includes('pin-clean disconnected'))!.text)).toEqual({ kind: 'disconnect', clientId: 'pin-clean', reason: 'disconnected' });
  });

  it('TCP closed without DISCONNECT', async () => {
    const c = await admin('pin-closed');
    (c.stream as net.Socket).destroy();
    const got = await linesOf('pin-closed', 2);
    expect(got[1]).toEqual({ topic: '$SYS/broker/log/N', text: 'T: Client pin-closed closed its connection.' });
    expect(parseNoticeLine(lines.find((l) => l.text.includes('pin-closed closed'))!.text)).toMatchObject({ kind: 'disconnect', clientId: 'pin-closed' });
    c.end(true);
  });

  it('keep-alive exceeded (a client that goes silent, as on lost Wi-Fi)', async () => {
    const sock = net.connect(broker.port, '127.0.0.1');
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    sock.write(connectPacket('pin-idle', broker.adminUser, broker.adminPassword, 1));
    // Mosquitto checks keep-alives from its main loop, not at once: seconds, more under load
    const got = await linesOf('pin-idle', 2, 20_000);
    expect(got[0].text).toBe("T: New client connected from 127.0.0.1:P as pin-idle (p2, c1, k1, u'mqsec-admin').");
    expect(got[1]).toEqual({ topic: '$SYS/broker/log/N', text: 'T: Client pin-idle has exceeded timeout, disconnecting.' });
    expect(parseNoticeLine(lines.find((l) => l.text.includes('pin-idle has exceeded'))!.text)).toMatchObject({ kind: 'disconnect', clientId: 'pin-idle' });
    sock.destroy();
  }, 30_000);

  it('kicked by dynamic security (password changed: how the key service replaces a used token, §15.3)', async () => {
    const ctl = await admin('pin-ctl');
    await ctl.subscribeAsync('$CONTROL/dynamic-security/v1/response');
    const answered = () => new Promise<void>((resolve) => ctl.once('message', () => resolve()));
    let a = answered();
    ctl.publish('$CONTROL/dynamic-security/v1', JSON.stringify({ commands: [{ command: 'createClient', username: 'pinkick', password: 'one' }] }));
    await a;
    const victim = await mqtt.connectAsync(broker.url, { protocolVersion: 4, clientId: 'pin-kick', username: 'pinkick', password: 'one', reconnectPeriod: 0 });
    a = answered();
    ctl.publish('$CONTROL/dynamic-security/v1', JSON.stringify({ commands: [{ command: 'setClientPassword', username: 'pinkick', password: 'two' }] }));
    await a;
    const got = await linesOf('pin-kick', 2);
    expect(got).toEqual([
      { topic: '$SYS/broker/log/N', text: "T: New client connected from 127.0.0.1:P as pin-kick (p2, c1, k60, u'pinkick')." },
      { topic: '$SYS/broker/log/N', text: 'T: Client pin-kick been disconnected by administrative action.' },
    ]);
    expect(parseNoticeLine(lines.find((l) => l.text.includes('pin-kick been'))!.text)).toMatchObject({ kind: 'disconnect', clientId: 'pin-kick' });
    victim.end(true);
    await ctl.endAsync();
  });

  it('a second connection on one client id: the new connection is a notice line, the take-over an error line', async () => {
    const first = await admin('pin-dup');
    first.on('error', () => {});
    const second = await admin('pin-dup');
    const got = await linesOf('pin-dup', 3);
    expect(got).toContainEqual({ topic: '$SYS/broker/log/E', text: 'T: Client pin-dup already connected, closing old connection.' });
    // the key service reads N only: it acts on the second connection's own line (§15.3 step 4)
    expect(got.filter((l) => l.topic === '$SYS/broker/log/N' && l.text.startsWith('T: New client connected')).length).toBe(2);
    first.end(true);
    await second.endAsync();
  });

  it('subscriptions (log_type subscribe): "ID QOS FILTER" on $SYS/broker/log/M/subscribe', async () => {
    const c = await admin('pin-sub');
    await c.subscribeAsync('pin/a/+', { qos: 1 });
    const line = await (async () => {
      for (let i = 0; i < 250; i++) {
        const l = lines.find((x) => x.topic === '$SYS/broker/log/M/subscribe' && x.text.includes('pin-sub'));
        if (l) return l;
        await sleep(20);
      }
      throw new Error('no subscribe line');
    })();
    expect(mask(line.text)).toBe('T: pin-sub 1 pin/a/+');
    expect(parseSubscribeLine(line.text)).toEqual({ kind: 'subscribe', clientId: 'pin-sub', qos: 1, filter: 'pin/a/+' });
    await c.endAsync();
  });

  it('parser: arbitrary and mutated lines never throw; over-long lines are ignored', () => {
    const samples = lines.map((l) => l.text);
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    for (let i = 0; i < 5000; i++) {
      const base = samples[rnd(samples.length)] ?? '';
      const chars = [...base];
      for (let k = rnd(4); k >= 0; k--) chars.splice(rnd(chars.length + 1), rnd(3), String.fromCharCode(rnd(0x3000)));
      const s = chars.join('');
      expect(() => parseNoticeLine(s)).not.toThrow();
      expect(() => parseSubscribeLine(s)).not.toThrow();
    }
    const long = `1: New client connected from 127.0.0.1:1 as ${'a'.repeat(2000)} (p2, c1, k60, u'x').`;
    expect(parseNoticeLine(long)).toBeUndefined();
    expect(parseSubscribeLine(`1: a 1 ${'b'.repeat(2000)}`)).toBeUndefined();
  });

  it('a broker whose log is not on $SYS/broker/log (or not in this wording): the key service refuses to start, saying what to fix', async () => {
    // Defence: MosquittoKeyService.checkLog (a probe connection must show up as connect, subscribe and disconnect).
    // Checked: without it, start() succeeds on this broker and tokens would never be replaced.
    const quiet = await startDynsecMosquitto({ logTopic: false });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-stock-log-'));
    const registry = SqliteRegistry.open(dir);
    const store = SqliteKeyServiceStore.open(dir);
    const ks = new MosquittoKeyService({
      url: quiet.url,
      adminUser: quiet.adminUser,
      adminPassword: quiet.adminPassword,
      suite: createNodeCryptoSuite(),
      source: registrySource(registry, store),
      tickets: new RegistryTicketStore(registry),
      keyStore: store,
      controlTimeoutMs: 2000,
    });
    try {
      await expect(ks.start()).rejects.toThrow(/broker log gave no recognisable connect, subscribe, disconnect line .*log_dest topic/);
    } finally {
      await ks.stop();
      await registry.close();
      store.close();
      await quiet.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
