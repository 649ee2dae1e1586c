/**
 * firmware/app/secure-mqtt.ts against a scripted MqttClientLike: event
 * ordering (KX2 right behind CONNACK), KX3 sent `immediate` and the client
 * released only once keys exist, refused resumes dropping the ticket,
 * reserved topics, and re-sealing on resend.
 */
import { describe, it, expect } from 'vitest';
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import { SecureMqttClient, type MqttClientLike } from '../../firmware/app/secure-mqtt.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { connackCodeFor } from '../../firmware/secure/server.js';
import { parseEnvelope } from '../../firmware/secure/messages.js';
import { makeWorld } from './helpers.js';

class FakeClient implements MqttClientLike {
  sent: { topic: string; payload: Uint8Array; opts: { qos?: 0 | 1; retain?: boolean; immediate?: boolean } }[] = [];
  released = 0;
  subs: string[] = [];
  async publish(topic: string, payload: Uint8Array, opts: { qos?: 0 | 1; retain?: boolean; immediate?: boolean }) {
    this.sent.push({ topic, payload, opts });
  }
  async subscribe(filter: string) {
    this.subs.push(filter);
    return [0];
  }
  release() {
    this.released++;
  }
}

async function setup() {
  const w = makeWorld({ seed: 'glue' });
  const client = new FakeClient();
  const got: string[] = [];
  const errors: string[] = [];
  const ready: number[] = [];
  const glue = new SecureMqttClient({
    session: w.device,
    onMessage: (t, p) => got.push(`${t}=${utf8Decode(p)}`),
    onError: (e) => errors.push(e.code),
    onReady: (ph) => ready.push(ph),
  });
  glue.attach(client);
  /** What a broker + MQTT client would do for one connection; returns the server session. */
  const connectOnce = async () => {
    const cred = await glue.hooks.credentials();
    let res;
    try {
      res = await w.server.acceptConnect(cred.clientId, cred.username, cred.password);
    } catch (e) {
      glue.hooks.onClose({ returnCode: connackCodeFor(e) });
      await glue.settled();
      return undefined;
    }
    glue.hooks.onConnect({ returnCode: 0 });
    if (res.kind === 'phase1') {
      glue.hooks.onMessage({ topic: res.reply.topic, payload: res.reply.payload }); // right behind the CONNACK
      await glue.settled();
      const kx3 = client.sent.find((s) => s.topic === KX_TOPIC)!;
      client.sent = client.sent.filter((s) => s !== kx3);
      expect(kx3.opts.immediate).toBe(true);
      return w.server.completePhase1(res.pending, kx3.payload);
    }
    if (res.kind !== 'phase2') throw new Error();
    await glue.settled();
    expect(glue.ready).toBe(false); // a CONNACK alone gives no keys (§6.4)
    glue.hooks.onMessage({ topic: res.reply.topic, payload: res.reply.payload }); // the broker's confirmation
    await glue.settled();
    return res.session;
  };
  return { w, client, glue, got, errors, ready, connectOnce };
}

describe('SecureMqttClient glue', () => {
  it('phase 1 then phase 2: ready, released, sealed both ways', async () => {
    const { client, glue, got, ready, connectOnce } = await setup();
    const pub = glue.publish('sensors/sensor01/t', utf8Encode('1')); // before keys: waits
    const s1 = (await connectOnce())!;
    await pub;
    expect(ready).toEqual([1]);
    expect(client.released).toBe(1);
    expect(utf8Decode(s1.open('sensors/sensor01/t', client.sent[0].payload))).toBe('1');
    glue.hooks.onMessage({ topic: 'cmd/sensor01', payload: s1.seal('cmd/sensor01', utf8Encode('reboot')) });
    await glue.settled();
    expect(got).toEqual(['cmd/sensor01=reboot']);

    glue.hooks.onClose(undefined);
    const s2 = (await connectOnce())!;
    expect(ready).toEqual([1, 2]);
    expect(client.released).toBe(2);
    await glue.publish('sensors/sensor01/t', utf8Encode('2'), { qos: 1 });
    expect(utf8Decode(s2.open('sensors/sensor01/t', client.sent[1].payload))).toBe('2');
    expect(client.sent[1].opts.qos).toBe(1);
  });

  it('a refused resume (CONNACK 4 via onClose) drops the ticket; the next connect is phase 1', async () => {
    const { w, glue, ready, connectOnce } = await setup();
    await connectOnce();
    glue.hooks.onClose(undefined);
    await w.store.revokeDevice('sensor01');
    expect(await connectOnce()).toBeUndefined();
    expect(w.device.hasTicket).toBe(false);
    await connectOnce();
    expect(ready).toEqual([1, 1]);
  });

  it('reserved topics are refused for application publish and subscribe', async () => {
    const { glue } = await setup();
    await expect(glue.publish('$mqsec/kx', new Uint8Array(1))).rejects.toMatchObject({ code: 'NOT_AUTHORIZED' });
    await expect(glue.subscribe('$mqsec/#')).rejects.toMatchObject({ code: 'NOT_AUTHORIZED' });
  });

  it('garbage from the broker is reported, not thrown', async () => {
    const { glue, errors, connectOnce } = await setup();
    await connectOnce();
    glue.hooks.onMessage({ topic: 'x', payload: new Uint8Array([1, 2, 3]) });
    await glue.settled();
    expect(errors).toEqual(['TRUNCATED']);
  });

  it('onResend: previous epoch resent unchanged, older epochs re-sealed', async () => {
    const { glue, client, connectOnce } = await setup();
    await connectOnce();
    await glue.publish('t/1', utf8Encode('a'), { qos: 1 });
    const old = client.sent[0].payload;
    glue.hooks.onClose(undefined);
    await connectOnce();
    expect(glue.hooks.onResend({ topic: 't/1', payload: old })).toBeNull();
    glue.hooks.onClose(undefined);
    const s3 = (await connectOnce())!;
    const resealed = glue.hooks.onResend({ topic: 't/1', payload: old })!;
    expect(parseEnvelope(resealed).epoch).toBe(s3.epoch);
    expect(utf8Decode(s3.open('t/1', resealed))).toBe('a');
  });
});
