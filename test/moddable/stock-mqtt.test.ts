/**
 * StockMqttAdapter (firmware/platform/moddable/stock-mqtt.ts): the Moddable
 * SDK's stock `mqtt` client presented to the secure glue. Tested against a
 * fake with the stock client's interface and behaviour as read from the SDK
 * (modules/network/mqtt/mqtt.js): password as ArrayBuffer, onConnected when
 * TCP is up, onReady only on CONNACK 0, onClose for every failure including
 * a refused CONNACK, publish/subscribe throw unless connected, QoS 0 only.
 */
import { describe, it, expect } from 'vitest';
import { StockMqttAdapter, ASSUMED_REFUSAL_CODE, type StockMqttClient, type StockMqttClientOptions, type SecureGlueHooks } from '../../firmware/platform/moddable/stock-mqtt.js';
import { flush } from '../app/fakes.js';

class FakeStockClient implements StockMqttClient {
  static instances: FakeStockClient[] = [];
  onConnected?: () => void;
  onReady?: () => void;
  onMessage?: (topic: string, payload: ArrayBuffer) => void;
  onClose?: () => void;
  state = 0;
  sent: { kind: string; topic: string; data?: number[]; flags?: unknown }[] = [];
  closedWith: (boolean | undefined)[] = [];
  constructor(readonly options: StockMqttClientOptions) {
    if (!options.host) throw new Error('parameter host is required');
    FakeStockClient.instances.push(this);
  }
  publish(topic: string, data: ArrayBuffer | string, flags?: unknown) {
    if (this.state < 2) throw new Error('connection closed');
    this.sent.push({ kind: 'publish', topic, data: [...new Uint8Array(data as ArrayBuffer)], flags });
  }
  subscribe(topic: string) {
    if (this.state < 2) throw new Error('connection closed');
    this.sent.push({ kind: 'subscribe', topic });
  }
  close(immediate?: boolean) {
    this.closedWith.push(immediate);
    this.state = -1;
  }
  // drivers, mirroring the SDK client's internals
  tcpUp() {
    this.state = 1;
    this.onConnected?.();
  }
  /** As in the SDK: every parsed packet goes through dispatch; a refused CONNACK fails the client. */
  dispatch(msg: { code?: number; returnCode?: number }) {
    if (msg.code === 0x20) {
      if (msg.returnCode) return this.fail();
      this.state = 2;
      this.onReady?.();
    }
  }
  connack(rc: number) {
    this.dispatch({ code: 0x20, returnCode: rc });
  }
  fail() {
    this.onClose?.();
    this.close();
  }
  deliver(topic: string, bytes: number[]) {
    this.onMessage?.(topic, new Uint8Array(bytes).buffer);
  }
}

function hooks(password = new Uint8Array([0x01, 0x02, 0xff, 0x00])) {
  const calls: string[] = [];
  const messages: { topic: string; payload: number[] }[] = [];
  let credentialCalls = 0;
  let failCredentials = false;
  const h: SecureGlueHooks = {
    credentials: async () => {
      credentialCalls++;
      if (failCredentials) throw Object.assign(new Error('no flash'), { code: 'STORAGE' });
      return { clientId: 'dev-0001', username: 'dev-0001', password };
    },
    onConnect: (connack) => calls.push(`connect:${connack?.returnCode}`),
    onMessage: (p) => messages.push({ topic: p.topic, payload: [...p.payload] }),
    onClose: (error) => calls.push(error ? `close:${(error as { returnCode: number }).returnCode}` : 'close'),
  };
  return {
    h,
    calls,
    messages,
    get credentialCalls() {
      return credentialCalls;
    },
    failCredentials() {
      failCredentials = true;
    },
  };
}

function adapter(hk: SecureGlueHooks) {
  return new StockMqttAdapter({ Client: FakeStockClient, host: '127.0.0.1', port: 1883, keepaliveMs: 30_000, hooks: hk });
}

describe('StockMqttAdapter', () => {
  it('passes fresh binary credentials to the stock client, password as an exact ArrayBuffer', async () => {
    const hk = hooks();
    const a = adapter(hk.h);
    await a.start();
    const c = FakeStockClient.instances.at(-1)!;
    expect(c.options).toMatchObject({ host: '127.0.0.1', port: 1883, id: 'dev-0001', user: 'dev-0001', timeout: 30_000 });
    expect(c.options.password).toBeInstanceOf(ArrayBuffer);
    expect([...new Uint8Array(c.options.password!)]).toEqual([0x01, 0x02, 0xff, 0x00]);
    expect(hk.credentialCalls).toBe(1);
  });

  it('onReady becomes onConnect(0); PUBLISH (subscribed or not) reaches the glue as bytes', async () => {
    const hk = hooks();
    const a = adapter(hk.h);
    await a.start();
    const c = FakeStockClient.instances.at(-1)!;
    c.tcpUp();
    c.connack(0);
    expect(a.connected).toBe(true);
    c.deliver('$mqsec/kx', [9, 8, 7]);
    expect(hk.calls).toEqual(['connect:0']);
    expect(hk.messages).toEqual([{ topic: '$mqsec/kx', payload: [9, 8, 7] }]);
  });

  it('publishes bytes at QoS 0 (the stock client has no QoS 1) and subscribes', async () => {
    const hk = hooks();
    const a = adapter(hk.h);
    await a.start();
    const c = FakeStockClient.instances.at(-1)!;
    c.tcpUp();
    c.connack(0);
    const payload = new Uint8Array([1, 2, 3, 4]);
    await a.publish('sensors/dev-0001/t', payload.subarray(1, 3), { qos: 1 });
    await a.publish('$mqsec/kx', new Uint8Array([5]), { qos: 0, retain: true });
    expect(await a.subscribe('cmd/dev-0001/#', 1)).toEqual([0]);
    expect(c.sent).toEqual([
      { kind: 'publish', topic: 'sensors/dev-0001/t', data: [2, 3], flags: undefined },
      { kind: 'publish', topic: '$mqsec/kx', data: [5], flags: { retain: true } },
      { kind: 'subscribe', topic: 'cmd/dev-0001/#' },
    ]);
  });

  it('a refused CONNACK reaches the glue with its exact return code (read through dispatch)', async () => {
    const hk = hooks();
    const a = adapter(hk.h);
    await a.start();
    const c = FakeStockClient.instances.at(-1)!;
    c.tcpUp();
    c.connack(4); // the stock client only traces the code and calls onClose
    expect(hk.calls).toEqual(['close:4']);
    expect(a.connected).toBe(false);
  });

  it('a network failure after TCP-up (no CONNACK) is a plain close: the ticket survives', async () => {
    const hk = hooks();
    const a = adapter(hk.h);
    await a.start();
    const c = FakeStockClient.instances.at(-1)!;
    c.tcpUp();
    c.fail();
    expect(hk.calls).toEqual(['close']);
  });

  it('without dispatch (a different SDK), a close after TCP-up and before onReady counts as refusal 5', async () => {
    class NoDispatch extends FakeStockClient {
      declare dispatch: never;
    }
    Object.defineProperty(NoDispatch.prototype, 'dispatch', { value: undefined });
    const hk = hooks();
    const a = new StockMqttAdapter({ Client: NoDispatch, host: '127.0.0.1', port: 1883, hooks: hk.h });
    await a.start();
    const c = FakeStockClient.instances.at(-1)!;
    c.tcpUp();
    c.fail();
    expect(hk.calls).toEqual([`close:${ASSUMED_REFUSAL_CODE}`]);
  });

  it('a failure before TCP is up is a plain close (not a refusal: the ticket must survive)', async () => {
    const hk = hooks();
    const a = adapter(hk.h);
    await a.start();
    FakeStockClient.instances.at(-1)!.fail();
    expect(hk.calls).toEqual(['close']);
  });

  it('publish/subscribe when not connected reject with NOT_CONNECTED; a throwing stock publish with CONNECTION_CLOSED', async () => {
    const hk = hooks();
    const a = adapter(hk.h);
    await expect(a.publish('t', new Uint8Array(1), { qos: 0 })).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await a.start();
    const c = FakeStockClient.instances.at(-1)!;
    await expect(a.subscribe('t')).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    c.tcpUp();
    c.connack(0);
    c.state = 1; // the socket died under it
    await expect(a.publish('t', new Uint8Array(1), { qos: 0 })).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });

  it('disconnect closes the stock client once and reports one close; late callbacks of an old client are ignored', async () => {
    const hk = hooks();
    const a = adapter(hk.h);
    await a.start();
    const c = FakeStockClient.instances.at(-1)!;
    c.tcpUp();
    c.connack(0);
    await a.disconnect();
    await a.disconnect();
    expect(c.closedWith).toEqual([undefined]); // DISCONNECT sent (not immediate)
    c.deliver('x', [1]);
    c.onClose?.();
    expect(hk.calls).toEqual(['connect:0', 'close']);
    expect(hk.messages).toEqual([]);
  });

  it('no credentials (e.g. the counter could not be persisted): nothing is sent, close is reported', async () => {
    const hk = hooks();
    hk.failCredentials();
    const before = FakeStockClient.instances.length;
    const a = adapter(hk.h);
    await a.start();
    await flush();
    expect(FakeStockClient.instances.length).toBe(before);
    expect(hk.calls).toEqual(['close']);
  });
});
