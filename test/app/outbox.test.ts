import { describe, it, expect } from 'vitest';
import { Outbox, OUTBOX_MAX_ATTEMPTS, type OutboxPublisher } from '../../firmware/app/outbox.js';

/** A publisher whose QoS 1 publishes stay pending until the test acks or fails them. */
function fakePublisher() {
  const sent: { topic: string; payload: Uint8Array; ack: () => void; fail: () => void }[] = [];
  const pub: OutboxPublisher = {
    publish: (topic, payload) =>
      new Promise<void>((resolve, reject) => sent.push({ topic, payload, ack: resolve, fail: () => reject(new Error('connection lost')) })),
  };
  return { pub, sent };
}

const bytes = (...b: number[]) => new Uint8Array(b);
const flush = () => new Promise((r) => setTimeout(r, 0));

describe('Outbox (unacknowledged QoS 1 across connections)', () => {
  it('forgets a message once acknowledged', async () => {
    const ob = new Outbox();
    const c1 = fakePublisher();
    const p = ob.publish(c1.pub, 1, 'sensors/a/t', bytes(1), { qos: 1 });
    expect(ob.size).toBe(1);
    c1.sent[0].ack();
    await p;
    expect(ob.size).toBe(0);
  });

  it('keeps a message whose connection died and resends it, as is or re-sealed, on the next connection only', async () => {
    const ob = new Outbox();
    const c1 = fakePublisher();
    const p = ob.publish(c1.pub, 1, 'sensors/a/t', bytes(1), { qos: 1 });
    c1.sent[0].fail();
    await expect(p).rejects.toThrow();
    expect(ob.size).toBe(1);
    // same connection: nothing is resent
    ob.resend(c1.pub, 1, () => null);
    expect(c1.sent).toHaveLength(1);
    // next connection, envelope still acceptable: sent as is
    const c2 = fakePublisher();
    ob.resend(c2.pub, 2, () => null);
    expect(c2.sent.map((s) => s.payload)).toEqual([bytes(1)]);
    c2.sent[0].fail();
    await flush();
    // third connection: the session re-seals it
    const c3 = fakePublisher();
    ob.resend(c3.pub, 3, () => bytes(9));
    expect(c3.sent.map((s) => s.payload)).toEqual([bytes(9)]);
    c3.sent[0].ack();
    await flush();
    expect(ob.size).toBe(0);
  });

  it('passes QoS 0, immediate and protocol messages straight through', async () => {
    const ob = new Outbox();
    const c = fakePublisher();
    void ob.publish(c.pub, 1, 'sensors/a/t', bytes(1), { qos: 0 });
    void ob.publish(c.pub, 1, '$mqsec/kx', bytes(2), { qos: 1 });
    void ob.publish(c.pub, 1, 'sensors/a/t', bytes(3), { qos: 1, immediate: true });
    expect(c.sent).toHaveLength(3);
    expect(ob.size).toBe(0);
  });

  it('is bounded: the oldest message goes when full, and a message is tried on at most OUTBOX_MAX_ATTEMPTS connections', async () => {
    const ob = new Outbox(2);
    const c = fakePublisher();
    for (const n of [1, 2, 3]) void ob.publish(c.pub, 1, 't', bytes(n), { qos: 1 }).catch(() => {});
    expect(ob.size).toBe(2);
    expect(ob.dropped).toBe(1);
    let gen = 1;
    for (let i = 1; i < OUTBOX_MAX_ATTEMPTS; i++) {
      const ci = fakePublisher();
      ob.resend(ci.pub, ++gen, () => null);
      expect(ci.sent).toHaveLength(2);
      for (const s of ci.sent) s.fail();
      await flush();
    }
    const last = fakePublisher();
    ob.resend(last.pub, ++gen, () => null);
    expect(last.sent).toHaveLength(0);
    expect(ob.size).toBe(0);
    expect(ob.dropped).toBe(3);
  });

  it('drops a message the session cannot re-seal', () => {
    const ob = new Outbox();
    const c = fakePublisher();
    void ob.publish(c.pub, 1, 't', bytes(1), { qos: 1 }).catch(() => {});
    ob.resend(fakePublisher().pub, 2, () => {
      throw new Error('keys gone');
    });
    expect(ob.size).toBe(0);
    expect(ob.dropped).toBe(1);
  });

  it('whenEmpty waits for the last acknowledgement, or for release() when the connection dies', async () => {
    const ob = new Outbox();
    await ob.whenEmpty();
    const c = fakePublisher();
    void ob.publish(c.pub, 1, 't', bytes(1), { qos: 1 });
    let done = false;
    void ob.whenEmpty().then(() => (done = true));
    await flush();
    expect(done).toBe(false);
    c.sent[0].ack();
    await flush();
    expect(done).toBe(true);
    void ob.publish(c.pub, 1, 't', bytes(2), { qos: 1 }).catch(() => {});
    let released = false;
    void ob.whenEmpty().then(() => (released = true));
    ob.release();
    await flush();
    expect(released).toBe(true);
  });
});

describe('SecureMqttLink keeps QoS 1 readings published while the link is down', () => {
  it('seals them under the next session and counts them as unacknowledged until then', async () => {
    const { SecureMqttLink } = await import('../../firmware/app/secure-link.js');
    const published: { topic: string; payload: Uint8Array }[] = [];
    let readyCb: ((phase: 1 | 2) => void) | undefined;
    const link = new SecureMqttLink({
      createGlue: (cb) => {
        readyCb = cb.onReady;
        return {
          hooks: {} as never,
          attach() {},
          publish: async (topic: string, payload: Uint8Array) => {
            published.push({ topic, payload });
          },
          subscribe: async () => {},
        };
      },
      createClient: () => ({
        start() {},
        publish: async () => {},
        subscribe: async () => {},
        disconnect: async () => {},
      }),
    });
    // not open yet: the reading is kept, the caller told
    await expect(link.publish('sensors/a/t', bytes(1, 2), 1)).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    await expect(link.publish('sensors/a/t', bytes(9), 0)).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    expect(link.unacknowledged()).toBe(1);
    const opened = link.open({ onMessage() {}, onDown() {} });
    readyCb!(2);
    await opened;
    await flush();
    // only the QoS 1 one, sealed (published through the glue) under the new session
    expect(published).toEqual([{ topic: 'sensors/a/t', payload: bytes(1, 2) }]);
  });
});
