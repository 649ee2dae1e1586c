/**
 * SecureMqttLink (firmware/app/secure-link.ts) with the real glue
 * (SecureMqttClient), the real DeviceSecureSession and ServerHandshake, and a
 * loopback MQTT client that hands CONNECT/PUBLISH straight to the server side
 * (no sockets): phase 1 and 2, a tampered KX2 fails fast, a refused resume
 * drops the ticket so the next open is phase 1, a close before ready rejects,
 * a close after ready reports onDown once, and stale callbacks are ignored.
 */
import { describe, it, expect } from 'vitest';
import { randomFillSync } from 'node:crypto';
import { SecureMqttLink, type ConnectableMqttClient, type GlueHooks } from '../../firmware/app/secure-link.js';
import { SecureMqttClient } from '../../firmware/app/secure-mqtt.js';
import { DeviceSecureSession, ServerHandshake, MemoryTicketStore, KX_TOPIC, type ServerSession } from '../../firmware/secure/index.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { MqsecError } from '../../firmware/core/errors.js';
import { flush } from './fakes.js';

const random = { fill: (b: Uint8Array) => void randomFillSync(b) };
const suite = createNobleSuite(random);
const KEY = new Uint8Array(32).fill(9);
const DEV = 'link-0001';

class World {
  store = new MemoryTicketStore();
  revoked = false;
  server = new ServerHandshake({ suite, clock: { now: () => Date.now() }, lookupDevice: () => ({ deviceKey: KEY, status: this.revoked ? 'revoked' : 'active' }), ticketStore: this.store });
  storage = new MemoryStorage();
  session = new DeviceSecureSession({ suite, devId: DEV, deviceKey: KEY, storage: this.storage, storageKey: 'mqsec-state' });
  tamperKx2 = false;
  /** An on-path attacker answered CONNACK 0 itself: no confirmation ever comes. */
  withholdConfirm = false;
  serverSession: ServerSession | undefined;
  opened: string[] = [];
  clients: LoopbackClient[] = [];
}

class LoopbackClient implements ConnectableMqttClient {
  private pending: any;
  closed = false;
  constructor(
    private readonly w: World,
    readonly hooks: GlueHooks,
  ) {
    w.clients.push(this);
  }
  async start() {
    const c = await this.hooks.credentials();
    let r;
    try {
      r = await this.w.server.acceptConnect(c.clientId, c.username, c.password);
    } catch (e) {
      this.closed = true;
      this.hooks.onClose({ returnCode: 5 });
      return;
    }
    this.hooks.onConnect({ returnCode: 0 });
    if (r.kind === 'phase1') {
      this.pending = r.pending;
      const payload = r.reply.payload.slice();
      if (this.w.tamperKx2) payload[payload.length - 1] ^= 1;
      this.hooks.onMessage({ topic: r.reply.topic, payload });
    } else if (r.kind === 'phase2') {
      this.w.serverSession = r.session;
      // §6.4: the broker's confirmation follows the CONNACK (an on-path attacker cannot make it)
      if (!this.w.withholdConfirm) this.hooks.onMessage({ topic: r.reply.topic, payload: r.reply.payload });
    }
  }
  async publish(topic: string, payload: Uint8Array) {
    if (this.closed) throw new MqsecError('NOT_CONNECTED', 'closed');
    if (topic === KX_TOPIC) this.w.serverSession = await this.w.server.completePhase1(this.pending, payload);
    else this.w.opened.push(`${topic}=${new TextDecoder().decode(this.w.serverSession!.open(topic, payload))}`);
  }
  async subscribe() {
    return [1];
  }
  async disconnect() {
    if (this.closed) return;
    this.closed = true;
    this.hooks.onClose();
  }
  /** The network drops the connection. */
  drop() {
    this.closed = true;
    this.hooks.onClose(new MqsecError('CONNECTION_CLOSED', 'dropped'));
  }
}

function link(w: World) {
  return new SecureMqttLink({ createGlue: (cb) => new SecureMqttClient({ session: w.session, ...cb }), createClient: (hooks) => new LoopbackClient(w, hooks) });
}

function events() {
  const downs: string[] = [];
  const messages: string[] = [];
  return { downs, messages, ev: { onMessage: (t: string) => messages.push(t), onDown: (e?: MqsecError) => downs.push(e?.code ?? 'none') } };
}

describe('SecureMqttLink over the real glue and session', () => {
  it('opens with phase 1, publishes sealed, reopens with phase 2 after a drop (onDown once)', async () => {
    const w = new World();
    const l = link(w);
    const e = events();
    expect(await l.open(e.ev)).toEqual({ phase: 1 });
    await l.publish('sensors/link-0001/t', new TextEncoder().encode('21.5'));
    expect(w.opened).toEqual(['sensors/link-0001/t=21.5']);
    w.clients.at(-1)!.drop();
    w.clients.at(-1)!.drop();
    await flush();
    expect(e.downs).toEqual(['CONNECTION_CLOSED']);
    await expect(l.publish('sensors/link-0001/t', new Uint8Array(1))).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    expect(await l.open(events().ev)).toEqual({ phase: 2 });
    await l.publish('sensors/link-0001/t', new TextEncoder().encode('22'));
    expect(w.opened.at(-1)).toBe('sensors/link-0001/t=22');
    await l.close();
    expect(w.clients.at(-1)!.closed).toBe(true);
  });

  it('a CONNACK 0 without the broker confirmation never opens the link: QoS 1 readings stay queued, sealed later under a confirmed session (§6.4)', async () => {
    const w = new World();
    const l = link(w);
    expect(await l.open(events().ev)).toEqual({ phase: 1 });
    w.clients.at(-1)!.drop();
    await flush();
    await l.publish('sensors/link-0001/t', new TextEncoder().encode('kept')).catch(() => undefined); // link down: kept unsealed
    w.withholdConfirm = true;
    let settled = false;
    const opening = l.open(events().ev).then(
      () => (settled = true),
      () => (settled = true),
    );
    await flush();
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBe(false); // CONNACK 0 came, the link is not open
    expect(l.unacknowledged()).toBe(1);
    expect(w.opened).toEqual([]); // nothing was sealed or sent on the unconfirmed connection
    w.clients.at(-1)!.drop();
    await opening;
    w.withholdConfirm = false;
    expect(await l.open(events().ev)).toEqual({ phase: 2 });
    await flush();
    expect(w.opened).toEqual(['sensors/link-0001/t=kept']);
  });

  it('a KX2 that does not verify fails the open at once with the session error', async () => {
    const w = new World();
    w.tamperKx2 = true;
    await expect(link(w).open(events().ev)).rejects.toBeInstanceOf(MqsecError);
    expect(w.clients.at(-1)!.closed).toBe(true);
  });

  it('a refused resume rejects with CONNECTION_REFUSED and the next open runs phase 1', async () => {
    const w = new World();
    const l = link(w);
    await l.open(events().ev);
    await l.close();
    await w.store.revokeDevice(DEV); // tickets gone on the broker: the resume token is refused
    await expect(l.open(events().ev)).rejects.toMatchObject({ code: 'CONNECTION_REFUSED' });
    expect(await l.open(events().ev)).toEqual({ phase: 1 });
  });

  it('close() while opening abandons the attempt; late callbacks of that client are ignored', async () => {
    const w = new World();
    const l = link(w);
    const e = events();
    const p = l.open(e.ev);
    await l.close();
    const settled = await Promise.race([p.then(() => 'resolved', () => 'rejected'), flush(50).then(() => 'pending')]);
    expect(['pending', 'rejected']).toContain(settled);
    w.clients.at(-1)?.drop();
    await flush();
    expect(e.downs).toEqual([]);
  });
});
