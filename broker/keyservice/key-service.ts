/**
 * The key service (docs/protocol.md §14.3, §14.6): derives topic groups and
 * their members from the policy, keeps one random key per group epoch,
 * answers members' key requests over their own connection and pushes new
 * epochs to connected members when membership changes, on rotation and
 * periodically. Transport-agnostic: whoever embeds it hands it requests
 * (`handleRequest`) and a way to reach a member's current connection
 * (`send`); `KeyServiceAgent` (agent.ts) binds it to the link of link.ts.
 *
 * It holds K_ks per member (read from its own store, where provisioning put
 * it: §14.2, never derived here from a principal key) and the group keys; it
 * never stores a group key (a restarted service re-keys every group, epochs
 * continue from its store).
 *
 * The store is asynchronous (it may be PostgreSQL shared by replicas,
 * §14.13), so every operation that changes state runs in turn on one queue:
 * a request, a "connection ended" and a policy change are applied in the
 * order they arrived, and no operation sees another's half-done state.
 */
import { fail } from '../../firmware/core/errors.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { DeliverySender, GROUP_KEY_LENGTH, GROUP_READER, GROUP_SEQ_LIMIT, GROUP_WRITER, type GroupGrant } from '../../firmware/secure/group.js';
import { groupOfTopic, sameMembers, type GroupMembers, type Membership } from './membership.js';
import type { KeyServiceStore } from './store.js';

export interface KeyServiceOptions {
  suite: CryptoSuite;
  store: KeyServiceStore;
  /** K_ks (32 bytes) of an active member under its current key, or undefined (unknown, revoked, stale). Kept until the next update. */
  memberKey(id: string): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  /** Hands a GKDEL (key push) to the member's current connection. */
  send(id: string, payload: Uint8Array): void;
  now?: () => number;
  /** Periodic re-key (§14.3). Default 24 h. */
  rekeyIntervalMs?: number;
  /** Publisher sequence numbers per connection (§14.4). Default 4096. */
  seqBlock?: number;
  /** Called for every re-key, with the reason. */
  onRekey?(filter: string, epoch: number, reason: string): void;
}

interface GroupState {
  members: GroupMembers;
  readers: Set<string>;
  writers: Set<string>;
  epoch: number;
  key: Uint8Array;
  since: number;
}

interface Answer {
  sender: DeliverySender;
  seqBase: number;
  seqLimit: number;
  /** Size of the range handed out with this answer. */
  block: number;
  /** Groups this connection was told about (to send "forget" entries on removal). */
  told: Set<string>;
}

export const DEFAULT_REKEY_INTERVAL_MS = 24 * 3600 * 1000;
export const DEFAULT_SEQ_BLOCK = 4096;
/** Largest range one refill hands out (§14.4): 32 of them use up an epoch's sequence space. */
export const MAX_REFILL_BLOCK = 65_536;
const TOPIC_CACHE_MAX = 10_000;

export class KeyService {
  private readonly suite: CryptoSuite;
  private readonly store: KeyServiceStore;
  private readonly now: () => number;
  private readonly rekeyIntervalMs: number;
  private readonly seqBlock: number;
  private groups = new Map<string, GroupState>();
  private filters: string[] = [];
  private readonly answers = new Map<string, Answer>();
  private readonly ksKeys = new Map<string, Uint8Array>();
  /**
   * Per writer: the end of the highest sequence range this process handed out
   * (§14.4). The store's allocation only moves forward, so a range below it
   * means the store was rolled back under this running process (its database
   * restored, or failed over to a lagging copy) and that range may already
   * have been used under the group keys held now.
   */
  private readonly seqHigh = new Map<string, number>();
  private topicGroups = new Map<string, string | null>();
  /** The tail of the operation queue (see the file comment). */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly opts: KeyServiceOptions) {
    this.suite = opts.suite;
    this.store = opts.store;
    this.now = opts.now ?? (() => Date.now());
    this.rekeyIntervalMs = opts.rekeyIntervalMs ?? DEFAULT_REKEY_INTERVAL_MS;
    this.seqBlock = opts.seqBlock ?? DEFAULT_SEQ_BLOCK;
    if (!Number.isInteger(this.seqBlock) || this.seqBlock < 1 || this.seqBlock > GROUP_SEQ_LIMIT) fail('INTERNAL', 'seqBlock out of range');
  }

  /** The group of a topic (at most one, §14.1); memoised, since the broker asks for every PUBLISH. */
  groupOf(topic: string): string | undefined {
    const known = this.topicGroups.get(topic);
    if (known !== undefined) return known ?? undefined;
    const g = groupOfTopic(this.filters, topic);
    if (this.topicGroups.size >= TOPIC_CACHE_MAX) this.topicGroups = new Map();
    this.topicGroups.set(topic, g ?? null);
    return g;
  }

  isReader(id: string, filter: string): boolean {
    return this.groups.get(filter)?.readers.has(id) ?? false;
  }

  /** Group filters with epoch and members, for status displays. */
  list(): { filter: string; epoch: number; writers: string[]; readers: string[] }[] {
    return [...this.groups.values()].map((g) => ({ filter: g.members.filter, epoch: g.epoch, writers: g.members.writers, readers: g.members.readers }));
  }

  /**
   * New policy state: groups whose members changed (or that are new) move to a
   * new epoch, removed groups are forgotten, and every connected member
   * affected gets a push at once (§14.3).
   */
  update(m: Membership, newKeys: ReadonlySet<string> = new Set()): Promise<void> {
    return this.run(() => this.doUpdate(m, newKeys));
  }

  private async doUpdate(m: Membership, newKeys: ReadonlySet<string>): Promise<void> {
    // principal keys may have been rotated or revoked: read K_ks afresh when next needed
    this.ksKeys.forEach((k) => k.fill(0));
    this.ksKeys.clear();
    const changed: string[] = [];
    for (const [filter, members] of m.groups) {
      const old = this.groups.get(filter);
      // a member with a new principal key (rotated, removed and added again) counts as
      // removed and added: whoever held its old key must not get what is sealed next
      const rekeyed = old && [...newKeys].some((id) => old.readers.has(id) || old.writers.has(id));
      if (old && sameMembers(old.members, members) && !rekeyed) continue;
      await this.rekey(filter, members, !old ? 'new group' : rekeyed && sameMembers(old.members, members) ? 'member key changed' : 'membership');
      changed.push(filter);
    }
    for (const [filter, g] of this.groups) {
      if (m.groups.has(filter)) continue;
      g.key.fill(0);
      this.groups.delete(filter);
      changed.push(filter);
    }
    this.filters = [...m.groups.keys()];
    this.topicGroups = new Map();
    // a principal that writes no group any more asks for no range: its mark is not needed
    for (const id of [...this.seqHigh.keys()]) if (!this.writesAny(id)) this.seqHigh.delete(id);
    // a member whose principal is gone (revoked, removed) loses its delivery answer; so does
    // one whose key changed (its live connection was made under the old key)
    for (const id of [...this.answers.keys()]) {
      if (!this.memberOfAny(id)) this.push(id, changed);
      else if (newKeys.has(id)) this.dropAnswer(id);
    }
    this.pushAll(changed);
  }

  /** Operator rotation of one group (§14.3). */
  rotate(filter: string): Promise<number> {
    return this.run(async () => {
      const g = this.groups.get(filter);
      if (!g) fail('NOT_AUTHORIZED', `no group ${filter}`);
      await this.rekey(filter, g.members, 'rotation');
      this.pushAll([filter]);
      return this.groups.get(filter)!.epoch;
    });
  }

  /** Periodic re-key: call every second or so (a tick while one is queued is skipped). */
  tick(): Promise<void> {
    if (this.ticking) return this.ticking;
    this.ticking = this.run(async () => {
      const due = [...this.groups.values()].filter((g) => this.now() - g.since >= this.rekeyIntervalMs).map((g) => g.members.filter);
      for (const f of due) if (this.groups.has(f)) await this.rekey(f, this.groups.get(f)!.members, 'interval');
      if (due.length) this.pushAll(due);
    }).finally(() => (this.ticking = undefined));
    return this.ticking;
  }
  private ticking: Promise<void> | undefined;

  /**
   * A member's GKREQ (§14.6) on its current connection: verified under its
   * K_ks, answered with every group it belongs to and, for a writer, a fresh
   * sequence range. Throws NOT_AUTHORIZED (no such active principal), BAD_MAC,
   * MALFORMED, TRUNCATED, UNKNOWN_TYPE, BAD_VERSION.
   */
  handleRequest(id: string, request: Uint8Array): Promise<Uint8Array> {
    return this.run(() => this.doRequest(id, request));
  }

  private async doRequest(id: string, request: Uint8Array): Promise<Uint8Array> {
    const ks = await this.keyServiceKey(id);
    if (!ks) fail('NOT_AUTHORIZED', 'not an active principal');
    const sender = DeliverySender.answer(this.suite, ks, id, request);
    // §14.4: a writer asking again on the same connection is refilling its range, so it is a
    // busy one: each refill doubles its range (up to MAX_REFILL_BLOCK), which keeps its durable
    // allocations rare; a new connection (memberLeft in between) starts at seqBlock again.
    const previous = this.answers.get(id);
    const block = previous && previous.seqLimit > 0 ? Math.min(previous.block * 2, Math.max(this.seqBlock, MAX_REFILL_BLOCK)) : this.seqBlock;
    this.dropAnswer(id);
    let seqBase = 0;
    let seqLimit = 0;
    if (this.writesAny(id)) {
      seqBase = await this.store.allocateSeq(id, block);
      if (seqBase + block > GROUP_SEQ_LIMIT) {
        // §14.4: the allocation restarts only together with new keys for every group it writes
        const written = [...this.groups.values()].filter((g) => g.writers.has(id)).map((g) => g.members.filter);
        for (const f of written) await this.rekey(f, this.groups.get(f)!.members, 'sequence space');
        await this.store.resetSeq(id);
        seqBase = await this.store.allocateSeq(id, block);
        this.pushAll(written, id);
        this.seqHigh.delete(id);
      } else if (seqBase < (this.seqHigh.get(id) ?? 0)) {
        // §14.4, the store rolled back under a running key service: the range may have been
        // used under the keys held now, so every group the writer writes gets a new key first
        // (what a restart does for every group, §14.12); the range is then under keys nobody
        // has used. Nothing a database could keep tells of its own restore: this process's
        // memory of what it handed out does.
        const written = [...this.groups.values()].filter((g) => g.writers.has(id)).map((g) => g.members.filter);
        for (const f of written) await this.rekey(f, this.groups.get(f)!.members, 'store rolled back');
        this.pushAll(written, id);
        this.seqHigh.delete(id);
      }
      seqLimit = seqBase + block;
      this.seqHigh.set(id, Math.max(this.seqHigh.get(id) ?? 0, seqLimit));
    }
    const answer: Answer = { sender, seqBase, seqLimit, block, told: new Set() };
    this.answers.set(id, answer);
    const all = [...this.groups.keys()].filter((f) => this.isMember(id, f));
    return this.seal(id, answer, all);
  }

  /** The member's connection ended: its delivery answer dies with it (in turn with its requests). */
  memberLeft(id: string): Promise<void> {
    return this.run(async () => this.dropAnswer(id)).catch(() => {});
  }

  /** Resolves once every operation queued so far is done. */
  idle(): Promise<void> {
    return this.run(async () => {});
  }

  close(): void {
    this.closed = true;
    for (const id of [...this.answers.keys()]) this.dropAnswer(id);
    this.groups.forEach((g) => g.key.fill(0));
    this.groups.clear();
    this.ksKeys.forEach((k) => k.fill(0));
    this.ksKeys.clear();
    this.seqHigh.clear();
  }

  // ---- internals ----------------------------------------------------------

  /** Runs `op` after every operation queued before it; its failure is its caller's alone. */
  private run<T>(op: () => Promise<T>): Promise<T> {
    const next = this.queue.then(() => {
      if (this.closed) fail('INTERNAL', 'key service closed');
      return op();
    });
    this.queue = next.catch(() => {});
    return next;
  }

  private async keyServiceKey(id: string): Promise<Uint8Array | undefined> {
    let k = this.ksKeys.get(id);
    if (k) return k;
    k = await this.opts.memberKey(id);
    if (!k) return undefined;
    this.ksKeys.get(id)?.fill(0);
    this.ksKeys.set(id, k);
    return k;
  }

  private async rekey(filter: string, members: GroupMembers, reason: string): Promise<void> {
    // the durable epoch first: if the store cannot be reached the group keeps its current key
    const epoch = await this.store.nextEpoch(filter);
    const old = this.groups.get(filter);
    old?.key.fill(0);
    const g: GroupState = {
      members,
      readers: new Set(members.readers),
      writers: new Set(members.writers),
      epoch,
      key: this.suite.randomBytes(GROUP_KEY_LENGTH),
      since: this.now(),
    };
    this.groups.set(filter, g);
    this.opts.onRekey?.(filter, epoch, reason);
  }

  private isMember(id: string, filter: string): boolean {
    const g = this.groups.get(filter);
    return !!g && (g.readers.has(id) || g.writers.has(id));
  }

  private memberOfAny(id: string): boolean {
    for (const g of this.groups.values()) if (g.readers.has(id) || g.writers.has(id)) return true;
    return false;
  }

  private writesAny(id: string): boolean {
    for (const g of this.groups.values()) if (g.writers.has(id)) return true;
    return false;
  }

  private grant(id: string, filter: string): GroupGrant {
    const g = this.groups.get(filter);
    if (!g || !(g.readers.has(id) || g.writers.has(id))) return { filter, flags: 0, epoch: 0, groupKey: new Uint8Array(0), writers: [] };
    const flags = (g.readers.has(id) ? GROUP_READER : 0) | (g.writers.has(id) ? GROUP_WRITER : 0);
    return { filter, flags, epoch: g.epoch, groupKey: g.key, writers: g.members.writers };
  }

  private seal(id: string, a: Answer, filters: string[]): Uint8Array {
    const groups = filters.map((f) => this.grant(id, f));
    for (const g of groups) {
      if (g.flags === 0) a.told.delete(g.filter);
      else a.told.add(g.filter);
    }
    return a.sender.seal({ seqBase: a.seqBase, seqLimit: a.seqLimit, groups });
  }

  /** Pushes the given groups to one connected member: current grants, or "forget" for groups it was told about and left. */
  private push(id: string, filters: string[]): void {
    const a = this.answers.get(id);
    if (!a) return;
    const relevant = filters.filter((f) => this.isMember(id, f) || a.told.has(f));
    if (relevant.length === 0) return;
    const payload = this.seal(id, a, relevant);
    if (!this.memberOfAny(id)) this.dropAnswer(id);
    this.opts.send(id, payload);
  }

  private pushAll(filters: string[], except?: string): void {
    if (filters.length === 0) return;
    for (const id of [...this.answers.keys()]) if (id !== except) this.push(id, filters);
  }

  private dropAnswer(id: string): void {
    const a = this.answers.get(id);
    if (!a) return;
    a.sender.destroy();
    this.answers.delete(id);
  }
}
