/**
 * The verifying subscriber: an ordinary backend (an `app` account on an
 * unmodified MQTT.js client) that receives plaintext readings from the broker
 * and checks that every reading a node sent arrives exactly once, intact,
 * and in order per device and sensor (a node that loses power may lose the
 * readings it had not yet got acknowledged; those are counted apart).
 *
 * With `--e2e` (docs/protocol.md §14), and always on a stock broker (§15,
 * `connectApp` with `flavour: 'stock'`), the backend is an app principal on
 * the SDK instead: it holds the group keys, opens every reading
 * itself (the broker cannot) and drops copies by its replay windows (counted
 * by code in `e2eDropped`, never as duplicates). Its session is persistent
 * too, and the SDK reconnects by itself and keeps the previous epoch's keys,
 * so readings queued across a broker restart (which re-keys every group)
 * still open.
 *
 * Readings carry the node's persistent reading sequence `n`
 * (firmware/app/commands.ts encodeReading), which is what makes loss,
 * duplication and reordering visible from outside.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { connectApp, type MqsecApp } from '../../sdk/index.js';

/** The verifying backend as an mqsec app principal (end-to-end mode). */
export interface VerifierApp {
  id: string;
  key: Uint8Array;
  /** The broker kind (docs/protocol.md §15): `stock` for a stock broker with the key service beside it. */
  flavour?: 'mqsec' | 'stock';
}

export interface VerifierCounts {
  received: number;
  verified: number;
  duplicates: number;
  outOfOrder: number;
  malformed: number;
  lost: number;
  sent: number;
  /** Unacknowledged when its node lost power: not counted as lost. */
  forgiven: number;
  /**
   * Readings the broker routed more than once (device -> broker leg). The rest
   * of `duplicates`, if any, are redeliveries on the broker -> backend leg:
   * plain MQTT QoS 1 (at least once) when a backend's persistent session
   * resumes after a broker restart.
   */
  ingestDuplicates: number;
  /** Readings the broker routed, copies included (embedded broker only). */
  ingested: number;
  /** Sent readings the broker never routed (lost on the device -> broker leg; embedded broker only). */
  notIngested: number;
  /** Sent, not delivered, from a node that was revoked (or re-keyed) meanwhile: it cannot deliver them, not a loss. */
  heldByRevoked: number;
}

interface StreamState {
  delivered: Set<number>;
  maxN: number;
  sent: Set<number>;
  forgiven: Set<number>;
  /** How often the broker routed each reading (embedded broker only). */
  ingested: Map<number, number>;
}

/** `sensors/<id>/<kind>` -> `<id>` (firmware/app topic layout). */
function deviceOf(topic: string): string {
  return topic.split('/')[1] ?? '';
}

function parseReading(payload: Uint8Array): { n: number; v: number } | undefined {
  try {
    const o = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload)) as { n?: unknown; v?: unknown };
    if (typeof o.n === 'number' && Number.isSafeInteger(o.n) && typeof o.v === 'number') return { n: o.n, v: o.v };
  } catch {
    // fall through
  }
  return undefined;
}

export class Verifier {
  private client: MqttClient | undefined;
  private app: MqsecApp | undefined;
  /** End-to-end messages refused by the backend's receiver checks, by code (REPLAY: a copy). */
  readonly e2eDropped: Record<string, number> = {};
  private readonly streams = new Map<string, StreamState>();
  private counts = { received: 0, duplicates: 0, outOfOrder: 0, malformed: 0 };
  private subscribed = false;
  /** A few duplicated readings, as topic#n, for the summary. */
  readonly duplicateSample: string[] = [];
  /** Nodes the registry no longer accepts: what they still hold is not counted as lost. */
  private readonly revoked = new Set<string>();

  constructor(
    private readonly url: string,
    private readonly username: string,
    private readonly password: string,
    /** Several broker nodes: on a lost connection MQTT.js moves on to the next one (its `servers` option). */
    private readonly servers?: { host: string; port: number }[],
    /** Set (before start): verify as this app principal on the SDK (end-to-end topics) instead of the password account. */
    public asApp?: VerifierApp,
  ) {}

  private stream(topic: string): StreamState {
    let s = this.streams.get(topic);
    if (!s) {
      s = { delivered: new Set(), maxN: -1, sent: new Set(), forgiven: new Set(), ingested: new Map() };
      this.streams.set(topic, s);
    }
    return s;
  }

  async start(): Promise<void> {
    if (this.asApp) return this.startApp(this.asApp);
    const client = mqtt.connect(this.url, {
      ...(this.servers && this.servers.length > 1 ? { servers: this.servers } : {}),
      username: this.username,
      password: this.password,
      clientId: this.username,
      // a persistent session: QoS 1 readings published while we are away (broker restart)
      // are queued for us, as a real backend would configure it
      clean: false,
      // reconnect quickly after a broker restart so no reading is published before we listen again
      reconnectPeriod: 100,
      connectTimeout: 5000,
      resubscribe: true,
    });
    this.client = client;
    client.on('message', (topic, payload) => this.onMessage(topic, new Uint8Array(payload)));
    client.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync('sensors/#', { qos: 1 });
    // after a reconnect the session is still there (session present): no resubscribe race
    this.subscribed = true;
  }

  private async startApp(a: VerifierApp): Promise<void> {
    const connect = () =>
      connectApp({
        url: this.url,
        // §15: on a stock broker the SDK joins through the key service beside it (its session is always persistent)
        flavour: a.flavour ?? 'mqsec',
        id: a.id,
        key: a.key,
        storage: new MemoryStorage(), // counter and ticket across its reconnects (phase 2)
        persistent: true, // readings routed while it reconnects are queued for it, as for the password backend
        reconnect: { initialMs: 100, maxMs: 1000 },
      });
    let app: MqsecApp;
    // a stock broker's key service follows the registry each second: until it knows the new app, its login is refused
    for (let deadline = Date.now() + 30_000; ; ) {
      try {
        app = await connect();
        break;
      } catch (e) {
        if (a.flavour !== 'stock' || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    this.app = app;
    app.on('message', (topic, payload) => this.onMessage(topic, new Uint8Array(payload)));
    app.on('dropped', (_topic, e) => (this.e2eDropped[e.code] = (this.e2eDropped[e.code] ?? 0) + 1));
    app.on('offline', (e) => this.noteBackend(`offline ${e.code}`));
    app.on('online', (i) => this.noteBackend(`online phase ${i.phase}`));
    app.on('close', (e) => this.noteBackend(`closed ${e?.code ?? ''}`));
    await app.subscribe('sensors/#', 1);
    this.subscribed = true;
  }

  /**
   * Sends a command to a node (`cmd/<id>/<name>`, QoS 1) as the verifying app:
   * end to end on a stock broker (§15.12), so the node opens it with its group
   * key; one queued while the node sleeps reaches it at its next wake.
   */
  async command(devId: string, name: string, value: string): Promise<void> {
    if (!this.app) throw new Error('commands need the SDK backend (end-to-end or stock mode)');
    await this.app.publish(`cmd/${devId}/${name}`, new TextEncoder().encode(value), { qos: 1 });
  }

  /** The SDK backend's connection events, for the summary (bounded). */
  readonly backendEvents: string[] = [];
  private noteBackend(what: string): void {
    if (this.backendEvents.length < 50) this.backendEvents.push(`${new Date().toISOString().slice(11, 23)} ${what}`);
  }

  get isConnected(): boolean {
    if (this.app) return this.app.state === 'online' && this.subscribed;
    return Boolean(this.client?.connected) && this.subscribed;
  }

  private onMessage(topic: string, payload: Uint8Array): void {
    this.counts.received++;
    const r = parseReading(payload);
    if (!r) {
      this.counts.malformed++;
      return;
    }
    const s = this.stream(topic);
    if (s.delivered.has(r.n)) {
      this.counts.duplicates++;
      if (this.duplicateSample.length < 10) this.duplicateSample.push(`${topic}#${r.n}`);
      return;
    }
    if (r.n < s.maxN) this.counts.outOfOrder++;
    s.delivered.add(r.n);
    if (r.n > s.maxN) s.maxN = r.n;
  }

  /** A node handed this reading to its secure link (QoS 1): it must reach us. */
  recordSent(topic: string, payload: Uint8Array): void {
    const r = parseReading(payload);
    if (r) this.stream(topic).sent.add(r.n);
  }

  /**
   * The broker routed this reading (its plaintext after the envelope was
   * opened). More than once for one reading would be a duplicate on the
   * device -> broker leg, the part mqsec answers for: a resent envelope must
   * be recognised by the replay window, not routed again.
   */
  recordIngested(topic: string, payload: Uint8Array): void {
    if (this.asApp) return; // end to end: the broker routes envelopes it cannot read (the fleet counts them itself)
    const r = parseReading(payload);
    if (!r) return;
    const s = this.stream(topic);
    s.ingested.set(r.n, (s.ingested.get(r.n) ?? 0) + 1);
  }

  /**
   * The node lost power before this reading was acknowledged: RAM, and the
   * reading with it, is gone, so not arriving is not a loss of the system.
   */
  forgive(topic: string, payload: Uint8Array): void {
    const r = parseReading(payload);
    if (r) this.stream(topic).forgiven.add(r.n);
  }

  /** The node was revoked or re-keyed: its undelivered readings can no longer arrive. */
  markRevoked(devId: string): void {
    this.revoked.add(devId);
  }

  snapshot(): VerifierCounts {
    let sent = 0;
    let verified = 0;
    let lost = 0;
    let forgiven = 0;
    let ingestDuplicates = 0;
    let ingested = 0;
    let notIngested = 0;
    let heldByRevoked = 0;
    for (const [topic, s] of this.streams) {
      const revoked = this.revoked.has(deviceOf(topic));
      for (const c of s.ingested.values()) {
        ingested += c;
        if (c > 1) ingestDuplicates += c - 1;
      }
      sent += s.sent.size;
      for (const n of s.sent) {
        if (!s.ingested.has(n) && !s.forgiven.has(n) && !revoked) notIngested++;
        if (s.delivered.has(n)) verified++;
        else if (s.forgiven.has(n)) forgiven++;
        else if (revoked) heldByRevoked++;
        else lost++;
      }
    }
    return { ...this.counts, sent, verified, lost, forgiven, ingested, ingestDuplicates, notIngested, heldByRevoked };
  }

  /** Readings sent but not (yet) delivered, as topic#n. */
  missing(limit = 20): string[] {
    const out: string[] = [];
    for (const [topic, s] of this.streams) {
      if (this.revoked.has(deviceOf(topic))) continue;
      for (const n of s.sent) {
        if (!s.delivered.has(n) && !s.forgiven.has(n)) out.push(`${topic}#${n}`);
        if (out.length >= limit) return out;
      }
    }
    return out;
  }

  async stop(): Promise<void> {
    const a = this.app;
    this.app = undefined;
    if (a) await a.end().catch(() => {});
    const c = this.client;
    this.client = undefined;
    if (c) await c.endAsync(true).catch(() => {});
  }
}
