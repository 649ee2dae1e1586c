/**
 * Deterministic fakes of the platform services for the sensor-node tests.
 * Platform-free (no Node APIs) so the very same scenarios run under Node and
 * inside the XS engine. Time is a manual clock: nothing here waits for real.
 */
import { MqsecError } from '../../firmware/core/errors.js';
import type { Random, Storage, Timer, TimerHandle } from '../../firmware/core/platform.js';
import type { Network, Reading, SecureLink, SecureLinkEvents, SecureLinkOpened, Sensor, Sleep, WakeCause } from '../../firmware/app/ports.js';
import type { ConnectableMqttClient, GlueHooks } from '../../firmware/app/secure-link.js';
import { utf8Decode } from '../../firmware/core/utf8.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { ServerHandshake, connackCodeFor, type PendingPhase1, type ServerSession } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';

/** Lets pending promise reactions run (XS and Node both drain microtasks between awaits). */
export async function flush(rounds = 30): Promise<void> {
  for (let i = 0; i < rounds; i++) await Promise.resolve();
}

interface Pending {
  id: number;
  at: number;
  cb: () => void;
}

export class ManualTimer implements Timer {
  now = 0;
  private seq = 0;
  private pending: Pending[] = [];
  set(cb: () => void, ms: number): TimerHandle {
    const t = { id: ++this.seq, at: this.now + Math.max(0, ms), cb };
    this.pending.push(t);
    return t.id;
  }
  clear(handle: TimerHandle): void {
    this.pending = this.pending.filter((t) => t.id !== handle);
  }
  get armed(): number {
    return this.pending.length;
  }
  /** Runs every timer due within `ms`, in time order, letting promises settle after each. */
  async advance(ms: number): Promise<void> {
    const target = this.now + ms;
    await flush();
    for (;;) {
      let next: Pending | undefined;
      for (const t of this.pending) if (t.at <= target && (!next || t.at < next.at || (t.at === next.at && t.id < next.id))) next = t;
      if (!next) break;
      this.pending = this.pending.filter((t) => t !== next);
      this.now = next.at;
      next.cb();
      await flush();
    }
    this.now = target;
    await flush();
  }
  /** Advances in steps until `done()` or `limitMs` of simulated time has passed. */
  async runUntil(done: () => boolean, limitMs: number, stepMs = 100): Promise<boolean> {
    for (let t = 0; t <= limitMs; t += stepMs) {
      if (done()) return true;
      await this.advance(stepMs);
    }
    return done();
  }
}

/** Deterministic "randomness" (xorshift); tests only. */
export function seededRandom(seed = 0x12345678): Random {
  let s = seed >>> 0 || 1;
  return {
    fill(b: Uint8Array) {
      for (let i = 0; i < b.length; i++) {
        s ^= s << 13;
        s >>>= 0;
        s ^= s >>> 17;
        s ^= s << 5;
        s >>>= 0;
        b[i] = s & 0xff;
      }
    },
  };
}

export class MapStorage implements Storage {
  readonly data = new Map<string, Uint8Array>();
  writes = 0;
  failPuts = false;
  async get(key: string) {
    const v = this.data.get(key);
    return v ? v.slice() : undefined;
  }
  async put(key: string, value: Uint8Array) {
    if (this.failPuts) throw new MqsecError('STORAGE', 'injected write failure');
    this.writes++;
    this.data.set(key, value.slice());
  }
  async delete(key: string) {
    this.data.delete(key);
  }
}

export class FakeNetwork implements Network {
  failuresLeft = 0;
  hang = false;
  connects = 0;
  radioOffs = 0;
  async connect(): Promise<void> {
    this.connects++;
    if (this.hang) return new Promise<void>(() => {});
    if (this.failuresLeft > 0) {
      this.failuresLeft--;
      throw new MqsecError('CONNECTION_REFUSED', 'no access point');
    }
  }
  disconnect(): void {
    this.radioOffs++;
  }
}

export class FakeSensor implements Sensor {
  reads = 0;
  failuresLeft = 0;
  constructor(private readonly kinds: string[] = ['temperature', 'humidity']) {}
  async read(): Promise<Reading[]> {
    this.reads++;
    if (this.failuresLeft > 0) {
      this.failuresLeft--;
      throw new MqsecError('TIMEOUT', 'sensor did not answer');
    }
    return this.kinds.map((kind, i) => ({ kind, value: 20 + i + this.reads / 10, unit: i === 0 ? 'C' : '%' }));
  }
}

export class FakeSleep implements Sleep {
  requests: number[] = [];
  constructor(
    readonly deepSleepSupported: boolean,
    private readonly cause: WakeCause = 'cold',
  ) {}
  deepSleep(ms: number): void {
    this.requests.push(ms);
  }
  wakeCause(): WakeCause {
    return this.cause;
  }
}

/**
 * A scripted stand-in for the secure client: phase 1 the first time (no
 * "ticket" in Storage), phase 2 afterwards; publishes are recorded; the test
 * can inject commands, refuse connects, or drop the link.
 */
export class FakeSecureLink implements SecureLink {
  opens = 0;
  closes = 0;
  refuseNext: string[] = [];
  hangOpen = false;
  published: { topic: string; text: string }[] = [];
  subscriptions: string[] = [];
  phases: (1 | 2)[] = [];
  private events: SecureLinkEvents | undefined;
  private up = false;

  constructor(private readonly storage: Storage) {}

  async open(events: SecureLinkEvents): Promise<SecureLinkOpened> {
    this.opens++;
    if (this.hangOpen) return new Promise<SecureLinkOpened>(() => {});
    const code = this.refuseNext.shift();
    if (code) throw new MqsecError(code as any, 'scripted refusal');
    const ticket = await this.storage.get('sec-ticket');
    const phase: 1 | 2 = ticket ? 2 : 1;
    if (!ticket) await this.storage.put('sec-ticket', new Uint8Array([1]));
    this.events = events;
    this.up = true;
    this.phases.push(phase);
    return { phase };
  }
  async publish(topic: string, payload: Uint8Array): Promise<void> {
    if (!this.up) throw new MqsecError('NOT_CONNECTED', 'link down');
    let text = '';
    for (const b of payload) text += String.fromCharCode(b);
    this.published.push({ topic, text });
  }
  async subscribe(filter: string): Promise<void> {
    if (!this.up) throw new MqsecError('NOT_CONNECTED', 'link down');
    this.subscriptions.push(filter);
  }
  async close(): Promise<void> {
    if (this.up) this.closes++;
    this.up = false;
    this.events = undefined;
  }
  /** The broker delivers a (decrypted) command. */
  command(topic: string, text: string): void {
    const b = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) b[i] = text.charCodeAt(i);
    this.events?.onMessage(topic, b);
  }
  /** The connection dies (broker restart, Wi-Fi loss). */
  drop(): void {
    const ev = this.events;
    this.up = false;
    this.events = undefined;
    ev?.onDown(new MqsecError('CONNECTION_CLOSED', 'dropped by test'));
  }
}

/**
 * The real protocol end to end without sockets: the broker's ServerHandshake
 * (noble suite, seeded) behind a loopback MQTT client that a SecureMqttLink
 * drives like the firmware client (CONNECT carries the glue's credentials, the
 * broker's protocol message follows CONNACK, a counter hint is followed by a
 * close). Platform-free, so it runs in XS too.
 */
export class LoopbackBroker {
  readonly store = new MemoryTicketStore();
  readonly server: ServerHandshake;
  /** Readings the broker opened, as `topic=text`. */
  readonly readings: string[] = [];
  readonly counts = { phase1: 0, phase2: 0, hints: 0, refused: 0 };
  constructor(deviceKey: Uint8Array, random: Random) {
    this.server = new ServerHandshake({
      suite: createNobleSuite(random),
      clock: { now: () => 1_700_000_000_000 },
      lookupDevice: () => ({ deviceKey, status: 'active' }),
      ticketStore: this.store,
    });
  }
  client(hooks: GlueHooks): ConnectableMqttClient {
    const broker = this;
    let closed = false;
    let pending: PendingPhase1 | undefined;
    let session: ServerSession | undefined;
    const close = () => {
      if (closed) return;
      closed = true;
      hooks.onClose();
    };
    return {
      async start() {
        const c = await hooks.credentials();
        let r;
        try {
          r = await broker.server.acceptConnect(c.clientId, c.username, c.password);
        } catch (e) {
          broker.counts.refused++;
          closed = true;
          hooks.onClose({ returnCode: connackCodeFor(e) });
          return;
        }
        hooks.onConnect({ returnCode: 0 });
        if (r.kind === 'phase1') pending = r.pending;
        else if (r.kind === 'phase2') {
          session = r.session;
          broker.counts.phase2++;
        } else if (r.kind === 'counter-hint') broker.counts.hints++;
        else return close();
        hooks.onMessage({ topic: r.reply.topic, payload: r.reply.payload });
        if (r.kind === 'counter-hint') close();
      },
      async publish(topic: string, payload: Uint8Array) {
        if (closed) throw new MqsecError('NOT_CONNECTED', 'closed');
        if (topic === KX_TOPIC) {
          session = await broker.server.completePhase1(pending!, payload);
          broker.counts.phase1++;
          return;
        }
        broker.readings.push(`${topic}=${utf8Decode(session!.open(topic, payload))}`);
      },
      async subscribe() {
        return [1];
      },
      async disconnect() {
        close();
      },
    };
  }
}
