/**
 * connectApp({ persistent: true }): the app keeps its MQTT session across
 * connections, so QoS 1 end-to-end readings routed while it is away (its
 * connection lost, or the broker restarting, which re-keys every group) are
 * queued for it by the broker and opened when it is back: the previous
 * epoch's keys are still in its keyring. A clean-session app (the default)
 * misses them: the difference is the option.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { Transform } from 'node:stream';
import memoryPersistence from 'aedes-persistence';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import type { RunningBroker } from '../../broker/server.js';
import { tempDir, testBroker, waitFor } from '../broker/helpers.js';
import { freePort } from '../helpers/brokers.js';

const dir = tempDir('mqsec-sdk-persistent-');
let port = 0;
let broker: RunningBroker;
const keys = new Map<string, Uint8Array>();
const flash = new Map<string, MemoryStorage>();
const open: MqsecApp[] = [];

/** Between the apps and the broker: `closed` cuts every connection and refuses new ones (the apps are away). */
class Gate {
  closed = false;
  /** Holds each app -> broker chunk that starts with a SUBSCRIBE (0x82) this long; later bytes wait behind it. */
  subscribeDelayMs = 0;
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}
  static async start(upstream: () => number): Promise<Gate> {
    let gate!: Gate;
    const server = net.createServer((c) => {
      if (gate.closed) return c.destroy();
      const up = net.connect(upstream(), '127.0.0.1');
      for (const s of [c, up]) {
        gate.sockets.add(s);
        s.on('error', () => {});
        s.once('close', () => (gate.sockets.delete(s), c.destroy(), up.destroy()));
      }
      const hold = new Transform({
        transform(chunk: Buffer, _enc, done) {
          if (gate.subscribeDelayMs > 0 && chunk[0] === 0x82) setTimeout(() => done(null, chunk), gate.subscribeDelayMs);
          else done(null, chunk);
        },
      });
      c.pipe(hold).pipe(up);
      up.pipe(c);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    gate = new Gate(server, (server.address() as net.AddressInfo).port);
    return gate;
  }
  close(): void {
    this.closed = true;
    for (const s of this.sockets) s.destroy();
  }
  async stop(): Promise<void> {
    this.close();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
let gate: Gate;
// one message store for both broker incarnations, as a durable store (or the simulator's) keeps it
const persistence = memoryPersistence();

async function app(id: string, persistent: boolean, viaGate = true): Promise<MqsecApp> {
  if (!flash.has(id)) flash.set(id, new MemoryStorage());
  const a = await connectApp({ url: `mqtt://127.0.0.1:${viaGate ? gate.port : port}`, id, key: keys.get(id)!, storage: flash.get(id), persistent, reconnect: { initialMs: 100, maxMs: 500 } });
  open.push(a);
  return a;
}

beforeAll(async () => {
  port = await freePort();
  broker = await testBroker(dir.path, { port, revisionPollMs: 50, persistence });
  const r = broker.registry;
  await r.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
  for (const [id, role] of [
    ['pdev1', 'sensor'],
    ['keeper', 'app'],
    ['forgetter', 'app'],
    ['pdev2', 'sensor'],
    ['listener', 'app'],
  ] as const)
    keys.set(id, (await r.addDevice(id, role)).key);
  await broker.syncRegistry();
  gate = await Gate.start(() => port);
});

afterAll(async () => {
  for (const a of open) await a.end().catch(() => {});
  await gate?.stop();
  await broker?.stop();
  dir.remove();
});

describe('SDK persistent session', () => {
  it('readings routed while the apps are away across a broker restart (new epochs) reach the persistent app once, not the clean one', async () => {
    const dev = await app('pdev1', false, false);
    const keeper = await app('keeper', true);
    const forgetter = await app('forgetter', false);
    const kept: string[] = [];
    const forgotten: string[] = [];
    keeper.on('message', (_t, p) => kept.push(p.toString()));
    forgetter.on('message', (_t, p) => forgotten.push(p.toString()));
    await keeper.subscribe('sensors/#');
    await forgetter.subscribe('sensors/#');
    await dev.publish('sensors/pdev1/t', 'before', { qos: 1 });
    await waitFor(() => kept.includes('before') && forgotten.includes('before'), 5000, 'before');
    const epochBefore = keeper.groups().find((g) => g.filter === 'sensors/pdev1/#')!.epoch;

    // the apps are cut off; the broker restarts (re-keying every group); the device comes back and publishes
    gate.close();
    await waitFor(() => keeper.state !== 'online' && forgetter.state !== 'online', 5000, 'apps away');
    await broker.stop();
    broker = await testBroker(dir.path, { port, revisionPollMs: 50, persistence });
    await dev.publish('sensors/pdev1/t', 'while away', { qos: 1 }); // resolves at the new broker's PUBACK

    // the apps come back by themselves; `online` comes once their subscriptions are acknowledged
    const back = Promise.all([keeper, forgetter].map((a) => new Promise((r) => a.once('online', r))));
    gate.closed = false;
    await back;
    await waitFor(() => kept.includes('while away'), 5000, 'the queued reading');
    expect(keeper.groups().find((g) => g.filter === 'sensors/pdev1/#')!.epoch).toBeGreaterThan(epochBefore);
    await dev.publish('sensors/pdev1/t', 'after', { qos: 1 });
    await waitFor(() => kept.includes('after') && forgotten.includes('after'), 5000, 'after');
    expect(kept).toEqual(['before', 'while away', 'after']);
    expect(forgotten).toEqual(['before', 'after']); // a clean session: nothing was kept for it
  }, 30_000);

  it('after a reconnect, online means receiving: a reading published at that moment reaches a clean-session app whose SUBSCRIBE the network held back', async () => {
    const dev = await app('pdev2', false, false);
    const listener = await app('listener', false);
    const got: string[] = [];
    listener.on('message', (_t, p) => got.push(p.toString()));
    await listener.subscribe('sensors/#');
    await dev.publish('sensors/pdev2/t', 'first', { qos: 1 });
    await waitFor(() => got.includes('first'), 5000, 'first');

    // the connection drops; on the next one the SUBSCRIBE is slow to reach the broker
    gate.subscribeDelayMs = 400;
    const back = new Promise((r) => listener.once('online', r));
    gate.close();
    gate.closed = false;
    await back;
    // published the moment the app says it is online (the SDK's online before its SUBACK loses this one)
    await dev.publish('sensors/pdev2/t', 'at online', { qos: 1 });
    gate.subscribeDelayMs = 0;
    await waitFor(() => got.includes('at online'), 5000, 'the reading published at online');
  }, 30_000);
});
