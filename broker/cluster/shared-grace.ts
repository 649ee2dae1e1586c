/**
 * The §8.5 QoS 1 grace state of device sessions, shared between broker nodes
 * through Redis (docs/protocol.md §8.5; single node: broker/grace-store.ts).
 *
 * One record per device: the receive keys and replay window of its latest
 * session, as the node holding that session last saw it. A node writes it
 * after every envelope it opened, once that message is routed (ack-after-route.ts:
 * a window holding a message that was never routed would make the next node
 * refuse its resend as a copy, and acknowledge it; envelopes of the device
 * still being routed are left out of the window written), coalesced: at most one
 * write in flight per device, the newest window wins; so it survives the node
 * being killed. A
 * node about to accept a device that is not live on it reads the record and
 * makes it the device's "latest session" (the handshake's importGrace), so the
 * new session inherits it as its previous epoch for the grace period: a QoS 1
 * message resent unchanged after the move opens, and the shared window refuses
 * the copy of one that had already arrived.
 *
 * Records are sealed under the registry master key with a label binding the
 * device id, the identity of the device key the session was made under
 * (created-at/version: a rotated, removed-and-re-added or revoked device's
 * record does not open for its new key) and the end of the grace period.
 * `until` 0 means "the session was live when written": the reader counts the
 * grace from the moment it takes over. A record expires in Redis after
 * `liveTtlMs` without writes (a session quiet for that long has nothing in
 * flight worth keeping), or `until` when set.
 *
 * What a write that had not reached Redis when a node died costs: the window
 * there is one or a few messages behind, so a resent copy of such a message is
 * routed a second time (at least once, never lost). The device's own re-seal
 * path (§8.5) covers any message under keys no record holds.
 */
import { asMqsecError } from '../../firmware/core/errors.js';
import { zeroize } from '../../firmware/core/bytes.js';
import type { GraceRecord, ServerHandshake } from '../../firmware/secure/server.js';
import type { RxSnapshot } from '../../firmware/secure/envelope.js';
import { decodeRxSnapshot, encodeRxSnapshot } from '../grace-store.js';
import { KEY_PREFIX } from './redis-state.js';
import type { Redis } from 'ioredis';

export interface Sealer {
  seal(label: string, plain: Uint8Array): Uint8Array;
  open(label: string, sealed: Uint8Array): Uint8Array;
}

/** A live session whose receive state can be snapshotted (ServerSession.rx). */
export interface RxSource {
  rx: { snapshot(): RxSnapshot };
}

const graceKey = (devId: string) => `${KEY_PREFIX}grace:${devId}`;
const sealLabel = (devId: string, keyId: string, until: number) => `grace|${devId}|${keyId}|${until}`;

interface Stored {
  /** Identity of the device key (context.ts keyIdentity). */
  k: string;
  /** End of the grace period, broker clock ms; 0 = live when written. */
  u: number;
  /** Sealed encodeRxSnapshot. */
  s: string;
}

export class SharedGrace {
  /** devId -> newest session to write once the write in flight is done. */
  private readonly dirty = new Map<string, { keyId: string; session: RxSource; until: number }>();
  private readonly inFlight = new Set<string>();
  /** Writes done / failed (tests, metrics). */
  readonly stats = { writes: 0, failures: 0, reads: 0, adopted: 0 };

  constructor(
    private readonly redis: Redis,
    private readonly sealer: Sealer,
    private readonly opts: { graceMs: number; liveTtlMs?: number; warn: (msg: string, detail: object) => void },
  ) {}

  /**
   * Envelopes opened but not yet routed, by the receive state that opened them:
   * their sequence numbers are left out of every window written meanwhile. The
   * window is read when the write runs, so without this a write after one
   * message was routed could already hold another still on its way (two in one
   * read batch, resends sent together): killed then, the node would leave a
   * window that makes the next node refuse that one's resend as a copy. A
   * message whose routing failed stays left out (its resend must open).
   */
  private readonly unrouted = new WeakMap<object, Set<number>>();

  /** An envelope with sequence number `seq` of `rx` (the session's current receive state) opened and is being routed. */
  opened(rx: object, seq: number): void {
    let s = this.unrouted.get(rx);
    if (!s) this.unrouted.set(rx, (s = new Set()));
    s.add(seq);
  }

  /** That envelope is routed: windows written from now on may hold it. */
  routed(rx: object, seq: number): void {
    this.unrouted.get(rx)?.delete(seq);
  }

  /** After an envelope of `session` was routed: its window moved, write it (coalesced, not awaited). */
  note(devId: string, keyId: string, session: RxSource, until = 0): void {
    this.dirty.set(devId, { keyId, session, until });
    if (!this.inFlight.has(devId)) void this.flushOne(devId);
  }

  private async flushOne(devId: string): Promise<void> {
    this.inFlight.add(devId);
    try {
      for (let next = this.dirty.get(devId); next; next = this.dirty.get(devId)) {
        this.dirty.delete(devId);
        await this.write(devId, next.keyId, this.routedWindow(next.session), next.until);
      }
    } finally {
      this.inFlight.delete(devId);
    }
  }

  /** The session's receive state with the envelopes still being routed left out of its window. */
  private routedWindow(session: RxSource): RxSnapshot {
    const snap = session.rx.snapshot();
    const size = snap.seen.length;
    for (const seq of this.unrouted.get(session.rx) ?? []) if (seq <= snap.highest && snap.highest - seq < size) snap.seen[seq % size] = 0;
    return snap;
  }

  private async write(devId: string, keyId: string, rx: RxSnapshot, until: number): Promise<void> {
    const plain = encodeRxSnapshot(rx);
    zeroize(rx.key, rx.iv);
    let value: string;
    try {
      value = JSON.stringify({ k: keyId, u: until, s: Buffer.from(this.sealer.seal(sealLabel(devId, keyId, until), plain)).toString('base64') } satisfies Stored);
    } finally {
      zeroize(plain);
    }
    const ttl = until > 0 ? Math.max(1, until - Date.now()) : (this.opts.liveTtlMs ?? 3_600_000);
    try {
      await this.redis.set(graceKey(devId), value, 'PX', ttl);
      this.stats.writes++;
    } catch (e) {
      this.stats.failures++;
      this.opts.warn('shared grace state not written', { devId, err: (e as Error).message });
    }
  }

  /** Waits until every pending write is done (graceful stop, tests). */
  async settle(timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((this.dirty.size > 0 || this.inFlight.size > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  /**
   * Before accepting a device that is not live on this node: takes over its
   * latest session's grace state from whichever node wrote it. `keyId` is the
   * identity of the device's current key; a record made under another key is
   * ignored. Returns true when a record was adopted. Never throws: without the
   * record the device's re-seal path applies.
   */
  async adopt(handshake: ServerHandshake, devId: string, keyId: string, now = Date.now()): Promise<boolean> {
    let raw: string | null;
    try {
      this.stats.reads++;
      raw = await this.redis.get(graceKey(devId));
    } catch (e) {
      this.opts.warn('shared grace state not read', { devId, err: (e as Error).message });
      return false;
    }
    if (!raw) return false;
    let record: GraceRecord;
    try {
      const st = JSON.parse(raw) as Stored;
      if (st.k !== keyId) return false;
      const plain = this.sealer.open(sealLabel(devId, st.k, st.u), new Uint8Array(Buffer.from(st.s, 'base64')));
      try {
        record = { devId, until: st.u > 0 ? st.u : now + this.opts.graceMs, rx: decodeRxSnapshot(plain) };
      } finally {
        zeroize(plain);
      }
    } catch (e) {
      this.opts.warn('shared grace record unreadable, skipped', { devId, code: asMqsecError(e).code });
      return false;
    }
    if (!(record.until > now)) return false;
    // the node's own memory of the device is older than the record (it is not live here)
    handshake.forgetGrace(devId);
    const n = handshake.importGrace([record]);
    zeroize(record.rx.key, record.rx.iv);
    if (n > 0) this.stats.adopted++;
    return n > 0;
  }

  /** Revoked, removed or re-keyed: the record must not be adopted anywhere (it would not open either). */
  async forget(devId: string): Promise<void> {
    this.dirty.delete(devId);
    try {
      await this.redis.del(graceKey(devId));
    } catch {
      /* its label binds the old key: it cannot open for the new one */
    }
  }
}
