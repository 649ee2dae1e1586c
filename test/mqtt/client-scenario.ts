/**
 * A scripted run of the MQTT client on the fake platform, returning a
 * transcript (events and the bytes of every packet sent). It uses no Node
 * APIs, so the same scenario runs under Node and inside XS, and the two
 * transcripts must be identical.
 */
import { toHex } from '../../firmware/core/bytes.js';
import { MqttClient } from '../../firmware/mqtt/client.js';
import { fakeServices, settle } from './fake-platform.js';

export async function runClientScenario(): Promise<string[]> {
  const log: string[] = [];
  const s = fakeServices();
  let n = 0;
  const client = new MqttClient(s, {
    endpoint: { host: '127.0.0.1', port: 1883 },
    credentials: async () => ({ clientId: 'dev1', username: 'dev1', password: new Uint8Array([0xa0, ++n]) }),
    keepaliveSec: 5,
    reconnect: { minMs: 100, maxMs: 1000 },
    onConnect: (c) => log.push(`connect sp=${c.sessionPresent}`),
    onMessage: (p) => log.push(`message ${p.topic} ${toHex(p.payload)} q${p.qos}`),
    onClose: (e) => log.push(`close ${e ? e.code : 'clean'}`),
    onError: (e) => log.push(`error ${e.code}`),
    onResend: (m) => {
      log.push(`resend ${m.topic} dup=${m.dup}`);
      return new Uint8Array([0xee, ...m.payload]);
    },
  });
  const sentSoFar = new Map<object, number>();
  const flush = () => {
    for (const c of s.transport.connections) {
      const from = sentSoFar.get(c) ?? 0;
      for (const b of c.written.slice(from)) log.push(`sent ${toHex(b)}`);
      sentSoFar.set(c, c.written.length);
    }
  };
  const step = async (what: string, f: () => void | Promise<unknown>) => {
    log.push(`# ${what}`);
    await f();
    await settle();
    flush();
    log.push(`state ${client.state}`);
  };

  await step('start', () => client.start());
  await step('tcp up', () => s.transport.last.accept());
  await step('connack', () => s.transport.last.send({ type: 'connack', sessionPresent: false, returnCode: 0 }));
  let sub: Promise<number[]> = Promise.resolve([]);
  await step('subscribe', () => {
    sub = client.subscribe(['a/#', 'b'], 1);
  });
  await step('suback', () => s.transport.last.send({ type: 'suback', messageId: 1, granted: [1, 0] }));
  log.push(`granted ${(await sub).join(',')}`);
  let pub: Promise<void> = Promise.resolve();
  await step('publish qos1', () => {
    pub = client.publish('a/x', new Uint8Array([1, 2, 3]), { qos: 1 });
  });
  await step('incoming qos1', () =>
    s.transport.last.send({ type: 'publish', topic: 'a/y', payload: new Uint8Array([9]), qos: 1, dup: false, retain: false, messageId: 300 }),
  );
  await step('keepalive', () => s.time.advance(5000));
  await step('pingresp', () => s.transport.last.send({ type: 'pingresp' }));
  await step('broker dies', () => s.transport.last.drop());
  await step('backoff', () => s.time.advance(s.time.nextDelay() ?? 0));
  await step('tcp up again', () => s.transport.last.accept());
  await step('connack again', () => s.transport.last.send({ type: 'connack', sessionPresent: false, returnCode: 0 }));
  await step('acks', () => {
    s.transport.last.send({ type: 'puback', messageId: 2 });
    s.transport.last.send({ type: 'suback', messageId: 3, granted: [1, 0] });
  });
  await pub;
  log.push('publish resolved');
  await step('garbage', () => s.transport.last.send(new Uint8Array([0xf0, 0x00])));
  await step('disconnect', () => client.disconnect());
  log.push(`stats ${JSON.stringify(client.stats)}`);
  return log;
}

/**
 * The application subscribes, unsubscribes and publishes QoS 1 inside
 * onConnect, as most MQTT applications do, over two connections: nothing
 * answered on the first (all of it is pending when it drops), then a
 * reconnect. With `held`, the client holds after CONNACK (holdAfterConnect,
 * as the mqsec layer does during phase 1) and the publish is `immediate`, so
 * it goes out while held; release() follows each CONNACK. Returns, per
 * connection, what the client sent (type, topics, packet id, DUP): each
 * operation must appear once per connection.
 */
export async function runOnConnectScenario(held: boolean): Promise<string[]> {
  const log: string[] = [];
  const s = fakeServices();
  let connection = 0;
  const client: MqttClient = new MqttClient(s, {
    endpoint: { host: '127.0.0.1', port: 1883 },
    credentials: async () => ({ clientId: 'dev1' }),
    keepaliveSec: 0,
    reconnect: { minMs: 100, maxMs: 100 },
    holdAfterConnect: held,
    onConnect: () => {
      connection++;
      void client.subscribe(`cmd/${connection}/#`, 1).catch(() => {});
      void client.unsubscribe(`old/${connection}`).catch(() => {});
      void client.publish(`hello/${connection}`, new Uint8Array([connection]), { qos: 1, immediate: held }).catch(() => {});
    },
  });
  const summary = () =>
    s.transport.last.packets.map((p) => {
      if (p.type === 'publish') return `publish ${p.topic} #${p.messageId} dup=${p.dup}`;
      if (p.type === 'subscribe') return `subscribe ${p.subscriptions.map((x) => x.topic).join(',')} #${p.messageId}`;
      if (p.type === 'unsubscribe') return `unsubscribe ${p.unsubscriptions.join(',')} #${p.messageId}`;
      return p.type;
    });
  const connect = async (what: string) => {
    await settle();
    s.transport.last.accept();
    s.transport.last.send({ type: 'connack', sessionPresent: false, returnCode: 0 });
    await settle();
    if (held) {
      log.push(`# ${what}, held`, ...summary());
      client.release();
      await settle();
    }
    log.push(`# ${what}`, ...summary());
  };
  client.start();
  await connect('connection 1 (nothing answered)');
  s.transport.last.drop();
  s.time.advance(s.time.nextDelay() ?? 0);
  await connect('connection 2');
  await client.disconnect();
  return log;
}
