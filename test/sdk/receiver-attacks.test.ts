/**
 * Receivers refuse what the path between broker and app can do to a group
 * envelope (docs/protocol.md §14.7), through the SDK on a live broker. The
 * keyring's checks themselves are unit-tested byte by byte in
 * test/secure/group.test.ts (every bit flip, every truncation, slots,
 * windows); here an on-path attacker rewrites real deliveries on their way to
 * an app made with connectApp, and the test checks that the app reports each
 * as a typed `dropped` event, hands nothing of it to `message`, and still
 * opens the next genuine reading (no state moved).
 *
 * The one defence that belongs to the SDK and not to the keyring: a topic of
 * a group the app holds is opened only under the group key. The broker holds
 * the app's session keys, so a broker that turns curious can seal its own
 * hop-by-hop envelope (§8) on an e2e topic; an SDK that fell back to the
 * session keys would hand that to the application as a reading.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import type { RunningBroker } from '../../broker/server.js';
import { tempDir, testBroker, waitFor } from '../broker/helpers.js';

type Rewrite = (p: mqttPacket.IPublishPacket) => mqttPacket.IPublishPacket[];

/** On-path attacker between the broker and one app: broker->app PUBLISHes go through `rewrite`. */
class RewritingProxy {
  rewrite: Rewrite | undefined;
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(upstreamPort: number): Promise<RewritingProxy> {
    let proxy!: RewritingProxy;
    const server = net.createServer((c) => proxy.accept(c, upstreamPort));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    proxy = new RewritingProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  private accept(client: net.Socket, upstreamPort: number): void {
    const up = net.connect(upstreamPort, '127.0.0.1');
    for (const s of [client, up]) {
      this.sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => (client.destroy(), up.destroy()));
    }
    client.pipe(up);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (p) => {
      const out = p.cmd === 'publish' && this.rewrite ? this.rewrite(p) : [p];
      for (const q of out) client.write(mqttPacket.generate(q));
    });
    up.on('data', (d) => parser.parse(d));
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const dir = tempDir('mqsec-sdk-attacks-');
let broker: RunningBroker;
let proxy: RewritingProxy;
let dev: MqsecApp;
let app: MqsecApp;
const got: { topic: string; text: string; mode: string }[] = [];
const dropped: { topic: string; code: string }[] = [];
const TOPIC = 'sensors/dev1/temp';

beforeAll(async () => {
  broker = await testBroker(dir.path, { revisionPollMs: 50 });
  const r = broker.registry;
  await r.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
  const devKey = (await r.addDevice('dev1', 'sensor')).key;
  const appKey = (await r.addDevice('backend', 'app')).key;
  await broker.syncRegistry();
  proxy = await RewritingProxy.start(broker.port);
  dev = await connectApp({ url: `mqtt://127.0.0.1:${broker.port}`, id: 'dev1', key: devKey });
  app = await connectApp({ url: `mqtt://127.0.0.1:${proxy.port}`, id: 'backend', key: appKey, reconnect: false, keyTimeoutMs: 1000 });
  app.on('message', (topic, p, info) => got.push({ topic, text: p.toString(), mode: info.mode }));
  app.on('dropped', (topic, e) => dropped.push({ topic, code: e.code }));
  await app.subscribe('sensors/#');
});

afterAll(async () => {
  await app?.end();
  await dev?.end();
  await proxy?.stop();
  await broker?.stop();
  dir.remove();
});

/** The device publishes `text`; the attacker applies `rewrite` to that one delivery; then a genuine reading must still open. */
async function attack(text: string, rewrite: Rewrite): Promise<{ got: typeof got; dropped: typeof dropped }> {
  got.length = 0;
  dropped.length = 0;
  let used = false;
  proxy.rewrite = (p) => {
    if (used || p.topic !== TOPIC) return [p];
    used = true;
    return rewrite(p);
  };
  await dev.publish(TOPIC, text, { qos: 1 });
  await waitFor(() => used, 5000, 'the delivery passed the attacker');
  proxy.rewrite = undefined;
  await dev.publish(TOPIC, `after ${text}`, { qos: 1 });
  await waitFor(() => got.some((m) => m.text === `after ${text}`), 5000, 'the genuine reading after the attack');
  return { got: [...got], dropped: [...dropped] };
}

const withPayload = (p: mqttPacket.IPublishPacket, payload: Buffer, topic = p.topic): mqttPacket.IPublishPacket => ({ ...p, topic, payload });

describe('an app refuses rewritten group envelopes (on-path attacker between broker and app)', () => {
  it('replayed: the same delivery twice -> one message, one REPLAY', async () => {
    const r = await attack('replay-me', (p) => [p, { ...p, messageId: (p.messageId ?? 0) + 1000 }]);
    expect(r.got.map((m) => m.text)).toEqual(['replay-me', 'after replay-me']);
    expect(r.dropped).toEqual([{ topic: TOPIC, code: 'REPLAY' }]);
  });

  it('forged: one bit of the ciphertext flipped -> DECRYPT_FAILED, nothing delivered', async () => {
    const r = await attack('forge-me', (p) => {
      const b = Buffer.from(p.payload as Buffer);
      b[b.length - 20] ^= 0x01;
      return [withPayload(p, b)];
    });
    expect(r.got.map((m) => m.text)).toEqual(['after forge-me']);
    expect(r.dropped).toEqual([{ topic: TOPIC, code: 'DECRYPT_FAILED' }]);
  });

  it('re-topiced: moved to another topic of the same group -> DECRYPT_FAILED', async () => {
    const r = await attack('move-me', (p) => [withPayload(p, p.payload as Buffer, 'sensors/dev1/door')]);
    expect(r.got.map((m) => m.text)).toEqual(['after move-me']);
    expect(r.dropped).toEqual([{ topic: 'sensors/dev1/door', code: 'DECRYPT_FAILED' }]);
  });

  it('truncated: tag cut short -> DECRYPT_FAILED; cut below a tag -> TRUNCATED', async () => {
    const r1 = await attack('cut-me', (p) => [withPayload(p, (p.payload as Buffer).subarray(0, (p.payload as Buffer).length - 4))]);
    expect(r1.got.map((m) => m.text)).toEqual(['after cut-me']);
    expect(r1.dropped).toEqual([{ topic: TOPIC, code: 'DECRYPT_FAILED' }]);
    const r2 = await attack('cut-more', (p) => [withPayload(p, (p.payload as Buffer).subarray(0, 10))]);
    expect(r2.got.map((m) => m.text)).toEqual(['after cut-more']);
    expect(r2.dropped).toEqual([{ topic: TOPIC, code: 'TRUNCATED' }]);
  });

  it('a curious broker seals its own hop-by-hop envelope on an e2e topic with the app session keys: refused, never a message', async () => {
    got.length = 0;
    dropped.length = 0;
    const ctx = broker.context;
    const client = ctx.liveDevices.get('backend')!;
    const state = ctx.states.get(client)!;
    if (state.kind !== 'device') throw new Error('backend has no session at the broker');
    // what the broker does for a hop topic (authorize-forward), here on the e2e topic
    const forged = state.session.seal(TOPIC, new TextEncoder().encode('broker-made reading'));
    client.publish({ cmd: 'publish', topic: TOPIC, payload: Buffer.from(forged), qos: 0, retain: false, dup: false }, () => {});
    await waitFor(() => dropped.length === 1, 5000, 'the forged delivery reported');
    await dev.publish(TOPIC, 'genuine', { qos: 1 });
    await waitFor(() => got.length === 1, 5000, 'genuine reading');
    expect(got).toEqual([{ topic: TOPIC, text: 'genuine', mode: 'e2e' }]);
    expect(['DECRYPT_FAILED', 'UNKNOWN_SESSION', 'MALFORMED']).toContain(dropped[0].code);
  });
});
