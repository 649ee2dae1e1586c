/**
 * The firmware MQTT client, on the Node host adapters, against real brokers:
 * in-process Aedes and a Mosquitto process, with MQTT.js as the unmodified
 * peer. Covers connect, subscribe, QoS 0/1 both ways, keepalive pings, a
 * refused CONNACK, and a broker crash with a QoS 1 message in flight that is
 * re-sent (through onResend) and delivered after the reconnect.
 */
import mqtt from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MqsecError } from '../../firmware/core/errors.js';
import type { Connection, Transport, TransportEvents } from '../../firmware/core/platform.js';
import { ConnectionRefusedError, MqttClient, type MqttClientOptions, type ResendMessage } from '../../firmware/mqtt/client.js';
import { MqttParser, type MqttPacket, type PublishPacket } from '../../firmware/mqtt/codec.js';
import { createNodePlatform } from '../../host-sim/adapters/node-platform.js';
import { hasMosquitto, startAedes, startMosquitto, type RunningAedes, type RunningMosquitto } from '../helpers/brokers.js';

const te = new TextEncoder();
const td = new TextDecoder();

/** Polls until `cond` holds; fails with `what` after timeoutMs (a hang guard, not a speed check). */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Wraps a transport to record the packets each way, so tests can see PINGREQ/PINGRESP and DUP. */
class TappedTransport implements Transport {
  readonly sent: MqttPacket[] = [];
  readonly received: MqttPacket[] = [];
  constructor(private readonly inner: Transport) {}
  connect(endpoint: { host: string; port: number }, events: TransportEvents): Connection {
    const out = new MqttParser({ maxPacketSize: 1 << 20 });
    const inp = new MqttParser({ maxPacketSize: 1 << 20 });
    const conn = this.inner.connect(endpoint, {
      onConnect: () => events.onConnect(),
      onData: (chunk) => {
        inp.feed(chunk, (p) => this.received.push(p));
        events.onData(chunk);
      },
      onClose: (e) => events.onClose(e),
    });
    return {
      write: (bytes) => {
        out.feed(bytes, (p) => this.sent.push(p));
        conn.write(bytes);
      },
      close: () => conn.close(),
    };
  }
}

interface Broker {
  port: number;
  /** Makes the broker stop acknowledging (Aedes: hold PUBLISH authorisation; Mosquitto: SIGSTOP). */
  freeze(): Promise<void>;
  /** Kills the broker (losing all state) and starts a fresh one on the same port. */
  crashAndRestart(): Promise<void>;
  stop(): Promise<void>;
}

async function aedesBroker(): Promise<Broker> {
  let frozen = false;
  let a: RunningAedes | undefined;
  a = await startAedes({
    aedes: {
      // While frozen, PUBLISH authorisation never completes: the PUBACK never comes.
      authorizePublish: (_client, _packet, cb) => {
        if (!frozen) cb(null);
      },
    },
  });
  return {
    port: a.port,
    async freeze() {
      frozen = true;
    },
    async crashAndRestart() {
      await a!.kill();
      frozen = false;
      await a!.start();
    },
    stop: () => a!.stop(),
  };
}

async function mosquittoBroker(): Promise<Broker> {
  const m: RunningMosquitto = await startMosquitto();
  return {
    port: m.port,
    async freeze() {
      process.kill(m.pid, 'SIGSTOP');
    },
    crashAndRestart: () => m.restart(),
    stop: () => m.stop(),
  };
}

const brokers: [string, () => Promise<Broker>, boolean][] = [
  ['Aedes', aedesBroker, true],
  ['Mosquitto', mosquittoBroker, hasMosquitto()],
];

describe.each(brokers)('firmware client against %s', (_name, startBroker, available) => {
  let broker: Broker;
  const cleanup: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    if (available) broker = await startBroker();
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c().catch(() => {});
  });
  afterAll(async () => {
    await broker?.stop();
  });

  function makeClient(id: string, opts: Partial<MqttClientOptions> = {}) {
    const platform = createNodePlatform();
    const tap = new TappedTransport(platform.transport);
    const messages: PublishPacket[] = [];
    const errors: MqsecError[] = [];
    const client = new MqttClient(
      { ...platform, transport: tap },
      {
        endpoint: { host: '127.0.0.1', port: broker.port },
        credentials: async () => ({ clientId: id }),
        keepaliveSec: 30,
        reconnect: { minMs: 20, maxMs: 200 },
        connectTimeoutMs: 5000,
        onMessage: (p) => messages.push(p),
        onError: (e) => errors.push(e),
        ...opts,
      },
    );
    cleanup.push(() => client.disconnect());
    return { client, tap, messages, errors };
  }

  async function mqttJs(): Promise<mqtt.MqttClient> {
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, { reconnectPeriod: 50, connectTimeout: 5000 });
    cleanup.push(() => c.endAsync(true));
    return c;
  }

  it.runIf(available)('connects, subscribes, and round-trips QoS 0 and QoS 1 through itself', async () => {
    const { client, messages, tap } = makeClient('fw-roundtrip');
    const connacks: unknown[] = [];
    client.onConnect = (c) => connacks.push(c);
    client.start();
    await waitFor(() => client.state === 'connected', 'CONNACK');
    expect(connacks).toEqual([{ type: 'connack', sessionPresent: false, returnCode: 0 }]);
    expect(await client.subscribe(['rt/+', 'other/#'], 1)).toEqual([1, 1]);
    await client.publish('rt/q0', te.encode('zero'), { qos: 0 });
    await client.publish('rt/q1', te.encode('one'), { qos: 1 });
    await waitFor(() => messages.length === 2, 'both messages back');
    expect(messages.map((m) => [m.topic, td.decode(m.payload), m.qos])).toEqual([
      ['rt/q0', 'zero', 0],
      ['rt/q1', 'one', 1],
    ]);
    // The broker's QoS 1 delivery was acknowledged by the client.
    expect(tap.sent.filter((p) => p.type === 'puback')).toHaveLength(1);
    await client.unsubscribe('rt/+');
    await client.publish('rt/q0', te.encode('gone'), { qos: 1 });
    await client.publish('other/x', te.encode('marker'), { qos: 1 });
    await waitFor(() => messages.length === 3, 'marker');
    expect(td.decode(messages[2].payload)).toBe('marker');
  });

  it.runIf(available)('interoperates with an unmodified MQTT.js client both ways', async () => {
    const js = await mqttJs();
    const jsGot: [string, string][] = [];
    js.on('message', (t, p) => jsGot.push([t, p.toString()]));
    await js.subscribeAsync('to-js/#', { qos: 1 });
    const { client, messages } = makeClient('fw-interop');
    client.start();
    await waitFor(() => client.state === 'connected', 'CONNACK');
    await client.subscribe('to-fw', 1);
    await client.publish('to-js/a', te.encode('hello js'), { qos: 1 });
    await js.publishAsync('to-fw', Buffer.from([0, 1, 2, 255]), { qos: 1 });
    await waitFor(() => jsGot.length === 1 && messages.length === 1, 'messages both ways');
    expect(jsGot).toEqual([['to-js/a', 'hello js']]);
    expect([...messages[0].payload]).toEqual([0, 1, 2, 255]);
  });

  it.runIf(available)('what the app issues inside onConnect reaches the broker once: one SUBACK, one retained copy, one delivery', async () => {
    const js = await mqttJs();
    await js.publishAsync('oc-ret/state', Buffer.from('retained'), { qos: 1, retain: true });
    const jsGot: string[] = [];
    js.on('message', (t, p) => jsGot.push(`${t}:${p.toString()}`));
    await js.subscribeAsync('oc-up/#', { qos: 1 });
    const granted: number[][] = [];
    const { client, messages, tap } = makeClient('fw-onconnect');
    client.onConnect = () => {
      void client.subscribe('oc-ret/#', 1).then((g) => granted.push(g));
      void client.publish('oc-up/hello', te.encode('hello'), { qos: 1 });
    };
    client.start();
    await waitFor(() => granted.length === 1 && jsGot.length >= 1, 'SUBACK and the delivery');
    // A marker round trip through the same subscription: everything sent before it has been answered.
    await client.publish('oc-ret/marker', te.encode('marker'), { qos: 1 });
    await waitFor(() => messages.some((m) => m.topic === 'oc-ret/marker'), 'marker');
    await js.publishAsync('oc-up/marker', Buffer.from('marker'), { qos: 1 });
    await waitFor(() => jsGot.includes('oc-up/marker:marker'), 'marker at MQTT.js');
    expect(tap.sent.filter((p) => p.type === 'subscribe')).toHaveLength(1);
    expect(tap.received.filter((p) => p.type === 'suback')).toHaveLength(1);
    expect(messages.filter((m) => m.topic === 'oc-ret/state').map((m) => [td.decode(m.payload), m.retain])).toEqual([['retained', true]]);
    expect(tap.sent.filter((p) => p.type === 'publish' && p.topic === 'oc-up/hello')).toHaveLength(1);
    expect(jsGot.filter((g) => g.startsWith('oc-up/hello'))).toEqual(['oc-up/hello:hello']);
  });

  it.runIf(available)('keeps the connection alive with PINGREQ/PINGRESP', async () => {
    const { client, tap } = makeClient('fw-ping', { keepaliveSec: 1 });
    client.start();
    await waitFor(() => tap.received.filter((p) => p.type === 'pingresp').length >= 2, 'two PINGRESPs');
    expect(tap.sent.filter((p) => p.type === 'pingreq').length).toBeGreaterThanOrEqual(2);
    expect(client.state).toBe('connected');
    expect(client.stats.connects).toBe(1);
  });

  it.runIf(available)('reconnects after a broker crash and delivers the QoS 1 message that was in flight', async () => {
    const resent: ResendMessage[] = [];
    const { client, messages, tap } = makeClient('fw-crash', {
      // The security layer would re-seal under the new session keys here.
      onResend: (m) => {
        resent.push(m);
        return te.encode(`resealed:${td.decode(m.payload)}`);
      },
    });
    client.start();
    await waitFor(() => client.state === 'connected', 'CONNACK');
    expect(await client.subscribe('crash/#', 1)).toEqual([1]);

    await broker.freeze();
    const inflight = client.publish('crash/a', te.encode('in flight'), { qos: 1 });
    await waitFor(() => tap.sent.some((p) => p.type === 'publish' && p.topic === 'crash/a'), 'PUBLISH written');
    expect(client.inflightCount).toBe(1);

    await broker.crashAndRestart();
    const queued = client.publish('crash/b', te.encode('queued'), { qos: 1 });
    await inflight;
    await queued;
    await waitFor(() => messages.length >= 2, 'both messages delivered after the restart');

    expect(client.stats.connects).toBe(2);
    expect(resent.map((m) => [td.decode(m.payload), m.dup])).toContainEqual(['in flight', true]);
    const retransmit = tap.sent.filter((p): p is PublishPacket => p.type === 'publish' && p.topic === 'crash/a');
    expect(retransmit.map((p) => p.dup)).toEqual([false, true]);
    expect(retransmit[0].messageId).toBe(retransmit[1].messageId);
    // Delivered once, as re-sealed (the re-subscription went out before the retransmission);
    // the copy sealed under the old connection never reached the frozen broker's subscribers.
    const got = messages.map((m) => td.decode(m.payload));
    expect(got.filter((g) => g.endsWith('in flight'))).toEqual(['resealed:in flight']);
    // 'queued' is re-sealed only if it was published before the client had reconnected.
    expect(got).toContain(resent.some((m) => td.decode(m.payload) === 'queued') ? 'resealed:queued' : 'queued');
  });
});

describe.runIf(hasMosquitto())('refused connections', () => {
  it('Mosquitto without anonymous access refuses with return code 5, and the client backs off', async () => {
    const m = await startMosquitto({ allowAnonymous: false });
    const errors: MqsecError[] = [];
    const platform = createNodePlatform();
    const client = new MqttClient(platform, {
      endpoint: { host: '127.0.0.1', port: m.port },
      credentials: async () => ({ clientId: 'nobody' }),
      reconnect: { minMs: 20, maxMs: 40 },
      onError: (e) => errors.push(e),
    });
    try {
      client.start();
      await waitFor(() => errors.length >= 2, 'two refusals');
      expect(errors[0]).toBeInstanceOf(ConnectionRefusedError);
      expect((errors[0] as ConnectionRefusedError).returnCode).toBe(5);
      expect(client.stats.connects).toBe(0);
    } finally {
      await client.disconnect();
      await m.stop();
    }
  });
});

describe('Aedes-specific', () => {
  it('a refused authentication gives CONNECTION_REFUSED 4 and fresh credentials on the retry', async () => {
    const passwords: string[] = [];
    const a = await startAedes({
      aedes: {
        authenticate: (_client, _username, password, cb) => {
          passwords.push(password ? password.toString('hex') : '');
          const ok = passwords.length >= 3;
          if (ok) cb(null, true);
          else cb(Object.assign(new Error('bad password'), { returnCode: 4 }) as never, false);
        },
      },
    });
    let n = 0;
    const errors: MqsecError[] = [];
    const client = new MqttClient(createNodePlatform(), {
      endpoint: { host: '127.0.0.1', port: a.port },
      credentials: async () => ({ clientId: 'dev-auth', username: 'dev-auth', password: new Uint8Array([++n]) }),
      reconnect: { minMs: 10, maxMs: 20 },
      onError: (e) => errors.push(e),
    });
    try {
      client.start();
      await waitFor(() => client.state === 'connected', 'accepted third attempt');
      expect(passwords).toEqual(['01', '02', '03']);
      expect(errors.map((e) => [e.code, (e as ConnectionRefusedError).returnCode])).toEqual([
        ['CONNECTION_REFUSED', 4],
        ['CONNECTION_REFUSED', 4],
      ]);
    } finally {
      await client.disconnect();
      await a.stop();
    }
  });

  it('a PUBLISH pushed to one client with client.publish arrives without SUBSCRIBE', async () => {
    const a = await startAedes({
      setup: (aedes) =>
        aedes.on('clientReady', (c) => {
          c.publish({ cmd: 'publish', topic: `$mqsec/kx/${c.id}`, payload: Buffer.from('kx2'), qos: 0, dup: false, retain: false }, () => {});
        }),
    });
    const messages: PublishPacket[] = [];
    const client = new MqttClient(createNodePlatform(), {
      endpoint: { host: '127.0.0.1', port: a.port },
      credentials: async () => ({ clientId: 'dev-kx' }),
      onMessage: (p) => messages.push(p),
    });
    try {
      client.start();
      await waitFor(() => messages.length === 1, 'pushed PUBLISH');
      expect(messages[0].topic).toBe('$mqsec/kx/dev-kx');
      expect(td.decode(messages[0].payload)).toBe('kx2');
    } finally {
      await client.disconnect();
      await a.stop();
    }
  });
});
