/**
 * The key service behind its link (link.ts): takes the broker's messages
 * (GKREQs with the authenticated principal id, "connection ended", the
 * policy, rotations) and answers through a `MemberPort`. The same class runs
 * embedded in `mqsec broker` and in its own process (`mqsec keyservice`,
 * mqtt-link.ts).
 *
 * It trusts the broker for who is connected and for the policy (the broker
 * enforces that policy anyway), and nothing else: K_ks comes from its own
 * store, written at provisioning, and is used only while the policy lists the
 * principal as active under the same key identity (docs/protocol.md §14.2).
 */
import { isMqsecError } from '../../firmware/core/errors.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import type { Principal, Role } from '../policy/policy.js';
import { KeyService } from './key-service.js';
import type { KeyServicePort, MemberPort, PolicySnapshot } from './link.js';
import { computeMembership } from './membership.js';
import type { KeyServiceStore } from './store.js';

export interface KeyServiceAgentOptions {
  suite: CryptoSuite;
  store: KeyServiceStore;
  members: MemberPort;
  now?: () => number;
  rekeyIntervalMs?: number;
  seqBlock?: number;
  onRekey?(filter: string, epoch: number, reason: string): void;
  /** A request refused (bad tag, unknown principal...): for logs and metrics. */
  onRefused?(id: string, code: string): void;
}

export class KeyServiceAgent implements KeyServicePort {
  readonly service: KeyService;
  /** id -> key identity, of the principals the latest policy lists. */
  private identities = new Map<string, string>();
  private readonly store: KeyServiceStore;
  private readonly members: MemberPort;
  private readonly tickTimer: NodeJS.Timeout;

  constructor(private readonly opts: KeyServiceAgentOptions) {
    this.store = opts.store;
    this.members = opts.members;
    this.service = new KeyService({
      suite: opts.suite,
      store: opts.store,
      memberKey: (id) => this.memberKey(id),
      send: (id, payload) => this.members.deliver(id, payload),
      now: opts.now,
      rekeyIntervalMs: opts.rekeyIntervalMs,
      seqBlock: opts.seqBlock,
      onRekey: opts.onRekey,
    });
    this.tickTimer = setInterval(() => void this.service.tick().catch(() => {}), 1000);
    this.tickTimer.unref();
  }

  request(id: string, gkreq: Uint8Array): void {
    this.service.handleRequest(id, gkreq).then(
      (answer) => this.members.deliver(id, answer),
      // a store that cannot be reached answers nothing: the member asks again (§14.11)
      (e: unknown) => this.opts.onRefused?.(id, isMqsecError(e) ? e.code : 'INTERNAL'),
    );
  }

  left(id: string): void {
    void this.service.memberLeft(id);
  }

  /** Resolves once every message handed over so far is dealt with (tests, orderly stops). */
  idle(): Promise<void> {
    return this.service.idle().catch(() => {});
  }

  policy(p: PolicySnapshot): void {
    const roles = new Map<string, Role>(p.roles.map((r) => [r.name, r]));
    const principals: Principal[] = [];
    const next = new Map<string, string>();
    for (const x of p.principals) {
      const role = roles.get(x.role);
      if (!role) continue;
      principals.push({ id: x.id, kind: 'device', role });
      next.set(x.id, x.key);
    }
    const newKeys = new Set<string>();
    for (const [id, key] of next) {
      const old = this.identities.get(id);
      if (old !== undefined && old !== key) newKeys.add(id);
    }
    this.identities = next;
    this.apply(computeMembership(principals, p.roles), newKeys);
  }

  /**
   * Applies a membership; if the store could not raise an epoch (PostgreSQL
   * away), tries again every second until it could, unless a newer policy
   * came meanwhile (which carries the same changes and more).
   */
  private apply(m: ReturnType<typeof computeMembership>, newKeys: Set<string>): void {
    const generation = ++this.policyGeneration;
    clearTimeout(this.retryTimer);
    this.service.update(m, newKeys).catch((e: unknown) => {
      this.opts.onRefused?.('(policy)', isMqsecError(e) ? e.code : 'INTERNAL');
      if (this.closed || generation !== this.policyGeneration) return;
      this.retryTimer = setTimeout(() => {
        if (generation === this.policyGeneration) this.apply(m, newKeys);
      }, 1000);
      this.retryTimer.unref();
    });
  }
  private policyGeneration = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  /**
   * Operator rotation of one group (§14.3). `id` (the registry's audit
   * sequence of `mqsec group rotate`) makes it happen once however many
   * broker nodes pass the same rotation on: a rotation with an id at or below
   * the last one applied to that group is dropped.
   */
  rotate(filter: string, id?: number): void {
    if (id !== undefined) {
      if (id <= (this.rotations.get(filter) ?? 0)) return;
      this.rotations.set(filter, id);
    }
    this.service.rotate(filter).catch((e: unknown) => this.opts.onRefused?.('(operator)', isMqsecError(e) ? e.code : 'INTERNAL'));
  }
  private readonly rotations = new Map<string, number>();

  close(): void {
    this.closed = true;
    clearInterval(this.tickTimer);
    clearTimeout(this.retryTimer);
    this.service.close();
  }

  /** K_ks of `id` if the store has it under the key identity the policy lists as current. */
  private async memberKey(id: string): Promise<Uint8Array | undefined> {
    const want = this.identities.get(id);
    if (want === undefined) return undefined;
    const k = await this.store.memberKey(id);
    if (!k) return undefined;
    if (k.identity !== want) {
      k.key.fill(0);
      return undefined;
    }
    return k.key;
  }
}
