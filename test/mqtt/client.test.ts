/**
 * The firmware MQTT client against a scripted broker with manual time: every
 * state transition, timer and failure path, deterministically.
 */
import { describe, expect, it } from 'vitest';
import { MqsecError } from '../../firmware/core/errors.js';
import { ConnectionRefusedError, MqttClient, type MqttClientOptions, type ResendMessage } from '../../firmware/mqtt/client.js';
import { encodePacket } from '../../firmware/mqtt/codec.js';
import { runOnConnectScenario } from './client-scenario.js';
import { fakeServices, settle } from './fake-platform.js';

const te = new TextEncoder();

function setup(opts: Partial<MqttClientOptions> = {}) {
  const services = fakeServices();
  let n = 0;
  const events: string[] = [];
  const errors: MqsecError[] = [];
  const client = new MqttClient(services, {
    endpoint: { host: '127.0.0.1', port: 1883 },
    credentials: async () => ({ clientId: 'dev1', username: 'dev1', password: new Uint8Array([++n]) }),
    keepaliveSec: 10,
    reconnect: { minMs: 100, maxMs: 1000 },
    connectTimeoutMs: 5000,
    onConnect: () => events.push('connect'),
    onClose: (e) => events.push(`close:${e?.code ?? 'clean'}`),
    onError: (e) => {
      errors.push(e);
      events.push(`error:${e.code}`);
    },
    ...opts,
  });
  const { time, transport } = services;
  /** Runs start/reconnect up to an accepted CONNACK. */
  async function connect(sessionPresent = false) {
    await settle();
    const c = transport.last;
    c.accept();
    c.send({ type: 'connack', sessionPresent, returnCode: 0 });
    await settle();
    return c;
  }
  return { client, time, transport, events, errors, connect };
}

describe('MqttClient', () => {
  it('connects with fresh credentials each time and goes through its states', async () => {
    const t = setup();
    expect(t.client.state).toBe('idle');
    t.client.start();
    expect(t.client.state).toBe('connecting');
    await settle();
    const c1 = t.transport.last;
    expect(c1.endpoint).toEqual({ host: '127.0.0.1', port: 1883 });
    c1.accept();
    expect(t.client.state).toBe('awaiting-connack');
    expect(c1.sent('connect')).toEqual([
      { type: 'connect', clientId: 'dev1', cleanSession: true, keepalive: 10, username: 'dev1', password: new Uint8Array([1]) },
    ]);
    c1.send({ type: 'connack', sessionPresent: false, returnCode: 0 });
    expect(t.client.state).toBe('connected');
    c1.drop();
    expect(t.client.state).toBe('backoff');
    t.time.advance(t.time.nextDelay()!);
    const c2 = await t.connect();
    expect(c2.sent('connect')[0].password).toEqual(new Uint8Array([2]));
    expect(t.events).toEqual(['connect', 'close:CONNECTION_CLOSED', 'connect']);
    expect(t.client.stats.connects).toBe(2);
  });

  it('publishes QoS 0 at once and resolves QoS 1 on PUBACK, within the in-flight window', async () => {
    const t = setup({ maxInflight: 2 });
    t.client.start();
    const c = await t.connect();
    await t.client.publish('s/t', te.encode('zero'));
    const done: number[] = [];
    const ps = [1, 2, 3].map((i) => t.client.publish('s/t', te.encode(`m${i}`), { qos: 1 }).then(() => done.push(i)));
    await settle();
    const pubs = c.sent('publish');
    expect(pubs.map((p) => [p.qos, new TextDecoder().decode(p.payload)])).toEqual([
      [0, 'zero'],
      [1, 'm1'],
      [1, 'm2'],
    ]);
    expect(t.client.inflightCount).toBe(2);
    c.send({ type: 'puback', messageId: pubs[1].messageId! });
    await settle();
    expect(done).toEqual([1]);
    expect(c.sent('publish')).toHaveLength(4); // m3 went out once the window opened
    c.send({ type: 'puback', messageId: pubs[2].messageId! });
    c.send({ type: 'puback', messageId: c.sent('publish')[3].messageId! });
    await Promise.all(ps);
    expect(done).toEqual([1, 2, 3]);
    expect(t.client.inflightCount).toBe(0);
  });

  it('queues while disconnected, bounded by maxQueued, and sends after connecting', async () => {
    const t = setup({ maxQueued: 2 });
    const a = t.client.publish('a', te.encode('1'));
    const b = t.client.publish('a', te.encode('2'), { qos: 1 });
    await expect(t.client.publish('a', te.encode('3'))).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    t.client.start();
    const c = await t.connect();
    await a;
    expect(c.sent('publish').map((p) => p.payload[0])).toEqual([0x31, 0x32]);
    c.send({ type: 'puback', messageId: c.sent('publish')[1].messageId! });
    await b;
  });

  it('refuses bad publishes without touching the connection', async () => {
    const t = setup({ maxPacketSize: 64 });
    t.client.start();
    await t.connect();
    await expect(t.client.publish('a/+', new Uint8Array(1))).rejects.toMatchObject({ code: 'PROTOCOL_VIOLATION' });
    await expect(t.client.publish('a', new Uint8Array(1), { qos: 2 as never })).rejects.toMatchObject({ code: 'PROTOCOL_VIOLATION' });
    await expect(t.client.publish('a', new Uint8Array(100))).rejects.toMatchObject({ code: 'OVERSIZE' });
    await expect(t.client.subscribe('a/#/b')).rejects.toMatchObject({ code: 'PROTOCOL_VIOLATION' });
    await expect(t.client.subscribe('a', 2 as never)).rejects.toMatchObject({ code: 'PROTOCOL_VIOLATION' });
    expect(t.client.state).toBe('connected');
  });

  it('subscribes, unsubscribes, and re-subscribes after a reconnect without a session', async () => {
    const t = setup();
    t.client.start();
    const c1 = await t.connect();
    const granted = t.client.subscribe(['a/#', 'b/+'], 1);
    await settle();
    const sub = c1.sent('subscribe')[0];
    expect(sub.subscriptions).toEqual([
      { topic: 'a/#', qos: 1 },
      { topic: 'b/+', qos: 1 },
    ]);
    c1.send({ type: 'suback', messageId: sub.messageId, granted: [1, 0x80] });
    expect(await granted).toEqual([1, 0x80]);
    const sub2 = t.client.subscribe('c', 0);
    const unsub = t.client.unsubscribe('a/#');
    await settle();
    c1.send({ type: 'suback', messageId: c1.sent('subscribe')[1].messageId, granted: [0] });
    c1.send({ type: 'unsuback', messageId: c1.sent('unsubscribe')[0].messageId });
    await sub2;
    await unsub;
    c1.drop();
    t.time.advance(t.time.nextDelay()!);
    const c2 = await t.connect(false);
    // 'a/#' was unsubscribed and 'b/+' refused: only 'c' is re-subscribed.
    expect(c2.sent('subscribe').map((s) => s.subscriptions)).toEqual([[{ topic: 'c', qos: 0 }]]);
  });

  it('what the app subscribes, unsubscribes and publishes inside onConnect goes out once per connection', async () => {
    expect(await runOnConnectScenario(false)).toEqual([
      '# connection 1 (nothing answered)',
      'connect',
      'subscribe cmd/1/# #1',
      'unsubscribe old/1 #2',
      'publish hello/1 #3 dup=false',
      '# connection 2',
      'connect',
      // sent by the app in onConnect ...
      'subscribe cmd/2/# #4',
      'unsubscribe old/2 #5',
      'publish hello/2 #6 dup=false',
      // ... then what the first connection left unanswered, once
      'subscribe cmd/1/# #1',
      'unsubscribe old/1 #2',
      'publish hello/1 #3 dup=true',
    ]);
  });

  it('held after CONNACK: an immediate QoS 1 publish from onConnect is not sent again by release()', async () => {
    expect(await runOnConnectScenario(true)).toEqual([
      '# connection 1 (nothing answered), held',
      'connect',
      'publish hello/1 #3 dup=false',
      '# connection 1 (nothing answered)',
      'connect',
      'publish hello/1 #3 dup=false',
      'subscribe cmd/1/# #1',
      'unsubscribe old/1 #2',
      '# connection 2, held',
      'connect',
      'publish hello/2 #6 dup=false',
      '# connection 2',
      'connect',
      'publish hello/2 #6 dup=false',
      'subscribe cmd/1/# #1',
      'unsubscribe old/1 #2',
      'subscribe cmd/2/# #4',
      'unsubscribe old/2 #5',
      'publish hello/1 #3 dup=true',
    ]);
  });

  it('re-sends a SUBSCRIBE still unanswered when the connection dropped', async () => {
    const t = setup();
    t.client.start();
    const c1 = await t.connect();
    const granted = t.client.subscribe('x', 1);
    await settle();
    c1.drop();
    t.time.advance(t.time.nextDelay()!);
    const c2 = await t.connect();
    expect(c2.sent('subscribe')).toHaveLength(1);
    c2.send({ type: 'suback', messageId: c2.sent('subscribe')[0].messageId, granted: [1] });
    expect(await granted).toEqual([1]);
  });

  it('delivers every PUBLISH and acknowledges QoS 1 after the callback', async () => {
    const got: string[] = [];
    const t = setup({ onMessage: (p) => got.push(`${p.topic}:${p.qos}`) });
    t.client.start();
    const c = await t.connect();
    c.send({ type: 'publish', topic: '$mqsec/kx/dev1', payload: new Uint8Array([1]), qos: 0, dup: false, retain: false });
    c.send({ type: 'publish', topic: 'x', payload: new Uint8Array([2]), qos: 1, dup: false, retain: false, messageId: 77 });
    expect(got).toEqual(['$mqsec/kx/dev1:0', 'x:1']);
    expect(c.sent('puback')).toEqual([{ type: 'puback', messageId: 77 }]);
  });

  it('a throwing onMessage is contained', async () => {
    const t = setup({
      onMessage: () => {
        throw new Error('app bug');
      },
    });
    t.client.start();
    const c = await t.connect();
    c.send({ type: 'publish', topic: 'x', payload: new Uint8Array([2]), qos: 1, dup: false, retain: false, messageId: 5 });
    expect(t.client.state).toBe('connected');
    expect(c.sent('puback')).toHaveLength(1);
  });

  it('a QoS 2 PUBLISH, a server-only packet or garbage closes the connection with a typed error', async () => {
    for (const [bad, code] of [
      [encodePacket({ type: 'publish', topic: 'x', payload: new Uint8Array(0), qos: 2, dup: false, retain: false, messageId: 1 }), 'PROTOCOL_VIOLATION'],
      [encodePacket({ type: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 0 }] }), 'PROTOCOL_VIOLATION'],
      [new Uint8Array([0x00, 0x00]), 'UNKNOWN_TYPE'],
      [new Uint8Array([0x30, 0xff, 0xff, 0xff, 0x7f]), 'OVERSIZE'],
    ] as const) {
      const t = setup();
      t.client.start();
      const c = await t.connect();
      expect(() => c.send(bad)).not.toThrow();
      expect(t.errors.map((e) => e.code)).toEqual([code]);
      expect(c.closed).toBe(true);
      expect(t.client.state).toBe('backoff');
      expect(t.events.at(-1)).toBe(`close:${code}`);
    }
  });

  it('a PUBLISH that arrives in the same chunk as garbage is delivered (and acknowledged) before the close', async () => {
    const got: string[] = [];
    const t = setup({ onMessage: (p) => got.push(new TextDecoder().decode(p.payload)) });
    t.client.start();
    const c = await t.connect();
    const pub = encodePacket({ type: 'publish', topic: 'x', payload: te.encode('last words'), qos: 1, dup: false, retain: false, messageId: 9 });
    c.send(new Uint8Array([...pub, 0xf0, 0x00]));
    expect(got).toEqual(['last words']);
    expect(c.sent('puback')).toEqual([{ type: 'puback', messageId: 9 }]);
    expect(t.errors.map((e) => e.code)).toEqual(['UNKNOWN_TYPE']);
    expect(c.closed).toBe(true);
  });

  it('reports one error per failed connection, even if bytes keep coming before the close', async () => {
    const t = setup();
    t.client.start();
    const c = await t.connect();
    // A transport whose close is reported later (as with a real socket).
    c.close = () => {
      c.closed = true;
    };
    c.send(new Uint8Array([0x00, 0x00]));
    c.send(new Uint8Array([0xc0, 0x00]));
    c.send({ type: 'publish', topic: 'x', payload: new Uint8Array(0), qos: 1, dup: false, retain: false, messageId: 3 });
    t.time.advance(60_000); // no keepalive activity on a closing connection
    expect(t.errors.map((e) => e.code)).toEqual(['UNKNOWN_TYPE']);
    expect(c.sent('puback')).toHaveLength(0);
    c.events.onClose();
    expect(t.client.state).toBe('backoff');
    expect(t.events.at(-1)).toBe('close:UNKNOWN_TYPE');
  });

  it('a packet other than CONNACK first is a protocol violation', async () => {
    const t = setup();
    t.client.start();
    await settle();
    t.transport.last.accept();
    t.transport.last.send({ type: 'pingresp' });
    expect(t.errors[0].code).toBe('PROTOCOL_VIOLATION');
    expect(t.client.state).toBe('backoff');
  });

  it('a refused CONNACK reports CONNECTION_REFUSED with the return code and backs off exponentially', async () => {
    const t = setup();
    t.client.start();
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      await settle();
      const c = t.transport.last;
      c.accept();
      c.send({ type: 'connack', sessionPresent: false, returnCode: 5 });
      expect(c.closed).toBe(true);
      expect(t.client.state).toBe('backoff');
      delays.push(t.time.nextDelay()!);
      t.time.advance(t.time.nextDelay()!);
    }
    expect(t.errors[0]).toBeInstanceOf(ConnectionRefusedError);
    expect((t.errors[0] as ConnectionRefusedError).returnCode).toBe(5);
    expect(t.errors.every((e) => e.code === 'CONNECTION_REFUSED')).toBe(true);
    // minMs 100, maxMs 1000, random bytes 0x80808080 -> unit 0.50196: base/2 + base/2 * unit,
    // base 100, 200, 400, 800, 1000 (capped), 1000.
    expect(delays).toEqual([75, 150, 300, 601, 751, 751]);
    // A successful connect resets the backoff.
    await t.connect();
    t.transport.last.drop();
    expect(t.time.nextDelay()).toBe(75);
  });

  it('times out a connect without CONNACK, and one whose credentials never come', async () => {
    const t = setup({ connectTimeoutMs: 3000 });
    t.client.start();
    await settle();
    t.transport.last.accept();
    t.time.advance(3000);
    expect(t.errors.map((e) => e.code)).toEqual(['TIMEOUT']);
    expect(t.transport.last.closed).toBe(true);

    const hang = setup({ connectTimeoutMs: 3000, credentials: () => new Promise(() => {}) });
    hang.client.start();
    hang.time.advance(3000);
    expect(hang.errors.map((e) => e.code)).toEqual(['TIMEOUT']);
    expect(hang.client.state).toBe('backoff');
    expect(hang.transport.connections).toHaveLength(0);
  });

  it('failing credentials are reported and retried', async () => {
    let calls = 0;
    const t = setup({
      credentials: async () => {
        if (++calls === 1) throw new MqsecError('STORAGE', 'nvs read failed');
        return { clientId: 'dev1' };
      },
    });
    t.client.start();
    await settle();
    expect(t.errors.map((e) => e.code)).toEqual(['STORAGE']);
    expect(t.client.state).toBe('backoff');
    t.time.advance(t.time.nextDelay()!);
    await t.connect();
    expect(t.client.state).toBe('connected');
  });

  it('sends PINGREQ when idle and reconnects when the broker stops answering', async () => {
    const t = setup({ keepaliveSec: 10 });
    t.client.start();
    const c1 = await t.connect();
    t.time.advance(10_000);
    expect(c1.sent('pingreq')).toHaveLength(1);
    c1.send({ type: 'pingresp' });
    t.time.advance(10_000);
    expect(c1.sent('pingreq')).toHaveLength(2);
    // No PINGRESP this time: dead after 1.5 x keepalive of silence.
    t.time.advance(4_999);
    expect(t.client.state).toBe('connected');
    t.time.advance(1);
    expect(t.errors.map((e) => e.code)).toEqual(['TIMEOUT']);
    expect(c1.closed).toBe(true);
    t.time.advance(t.time.nextDelay()!);
    await t.connect();
    expect(t.client.state).toBe('connected');
  });

  it('pings while only publishing QoS 0 (nothing received)', async () => {
    const t = setup({ keepaliveSec: 10 });
    t.client.start();
    const c = await t.connect();
    for (let i = 0; i < 4; i++) {
      t.time.advance(3_000);
      await t.client.publish('t', new Uint8Array(1));
    }
    expect(c.sent('pingreq')).toHaveLength(1);
    c.send({ type: 'pingresp' });
    t.time.advance(3_000);
    expect(t.client.state).toBe('connected');
  });

  it('re-sends unacknowledged QoS 1 with DUP after a reconnect, through onResend', async () => {
    const seen: ResendMessage[] = [];
    const t = setup({
      onResend: (m) => {
        seen.push(m);
        return m.payload[0] === 0x64 /* d */ ? null : te.encode(`resealed-${new TextDecoder().decode(m.payload)}`);
      },
    });
    t.client.start();
    const c1 = await t.connect();
    const keep = t.client.publish('s', te.encode('keep'), { qos: 1 });
    const drop = t.client.publish('s', te.encode('drop'), { qos: 1 });
    await settle();
    const firstIds = c1.sent('publish').map((p) => p.messageId);
    c1.drop();
    const queued = t.client.publish('s', te.encode('later'), { qos: 0 });
    t.time.advance(t.time.nextDelay()!);
    const c2 = await t.connect();
    await expect(drop).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await queued;
    expect(seen.map((m) => [new TextDecoder().decode(m.payload), m.dup])).toEqual([
      ['keep', true],
      ['drop', true],
      ['later', false],
    ]);
    const resent = c2.sent('publish');
    expect(resent.map((p) => [new TextDecoder().decode(p.payload), p.dup, p.messageId])).toEqual([
      ['resealed-keep', true, firstIds[0]],
      ['resealed-later', false, undefined],
    ]);
    c2.send({ type: 'puback', messageId: firstIds[0]! });
    await keep;
  });

  it('holdAfterConnect: only immediate publishes go out until release(), then the rest in order', async () => {
    const resent: string[] = [];
    const t = setup({
      holdAfterConnect: true,
      onResend: (m) => {
        resent.push(new TextDecoder().decode(m.payload));
        return m.payload;
      },
    });
    t.client.start();
    const c1 = await t.connect();
    expect(t.client.state).toBe('connected');
    t.client.release();
    void t.client.subscribe('cmd/#', 1);
    const first = t.client.publish('d', te.encode('old'), { qos: 1 });
    await settle();
    c1.drop();
    t.time.advance(t.time.nextDelay()!);
    const queued = t.client.publish('d', te.encode('queued'));
    const c2 = await t.connect();
    // Held: nothing but what is marked immediate (the key-exchange message).
    expect(c2.packets.map((p) => p.type)).toEqual(['connect']);
    const kx3 = t.client.publish('$mqsec/kx/dev1', te.encode('kx3'), { immediate: true });
    const sub = t.client.subscribe('late', 0);
    await kx3;
    expect(c2.packets.map((p) => p.type)).toEqual(['connect', 'publish']);
    // The broker can still talk to a held client (KX2 arrives this way).
    c2.send({ type: 'publish', topic: '$mqsec/kx/dev1', payload: te.encode('kx2'), qos: 0, dup: false, retain: false });
    expect(resent).toEqual([]);
    t.client.release();
    await settle();
    expect(resent).toEqual(['old', 'queued']);
    expect(c2.packets.map((p) => (p.type === 'publish' ? `publish:${new TextDecoder().decode(p.payload)}` : p.type))).toEqual([
      'connect',
      'publish:kx3',
      'subscribe', // cmd/#, unanswered when the first connection dropped
      'subscribe', // the one requested while held
      'publish:old',
      'publish:queued',
    ]);
    await queued;
    c2.send({ type: 'puback', messageId: c2.sent('publish')[1].messageId! });
    await first;
    c2.send({ type: 'suback', messageId: c2.sent('subscribe')[1].messageId, granted: [0] });
    expect(await sub).toEqual([0]);
  });

  it('disconnect() sends DISCONNECT, rejects what is pending and stops reconnecting', async () => {
    const t = setup();
    t.client.start();
    const c = await t.connect();
    const pending = t.client.publish('s', te.encode('x'), { qos: 1 });
    await settle();
    await t.client.disconnect();
    await expect(pending).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    expect(c.sent('disconnect')).toHaveLength(1);
    expect(c.closed).toBe(true);
    expect(t.client.state).toBe('closed');
    expect(t.events.at(-1)).toBe('close:clean');
    expect(t.time.pending).toBe(0);
    await expect(t.client.publish('s', te.encode('y'))).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await t.client.disconnect(); // idempotent
  });

  it('disconnect() during backoff or before start leaves no timers behind', async () => {
    const t = setup();
    t.client.start();
    await t.connect();
    t.transport.last.drop();
    expect(t.client.state).toBe('backoff');
    await t.client.disconnect();
    expect(t.time.pending).toBe(0);
    const idle = setup();
    await idle.client.disconnect();
    expect(idle.client.state).toBe('closed');
  });

  it('without reconnect, a lost connection ends in closed and rejects pending work', async () => {
    const t = setup({ reconnect: false });
    t.client.start();
    const c = await t.connect();
    const p = t.client.publish('s', te.encode('x'), { qos: 1 });
    await settle();
    c.drop();
    expect(t.client.state).toBe('closed');
    await expect(p).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });
});
