/**
 * Bookkeeping of retained messages against per-owner and global limits
 * (count and bytes). Pure: it knows topics, owners and sizes, nothing of MQTT
 * or Aedes; the authorizePublish hook asks it and reports what it decided.
 *
 * A retained message costs its topic plus its payload (what the broker keeps
 * in memory). MQTT 3.1.1 §3.3.1.3: a retained PUBLISH replaces the message
 * retained on its topic, and one with an empty payload removes it. So a
 * replacement is charged the difference (the old message is freed, even when
 * another owner had stored it), and a clear frees the budget.
 */

export interface RetainedLimits {
  /** Retained messages one account or device may have stored at once. */
  perOwnerCount: number;
  /** Bytes (topic + payload) of retained messages one account or device may have stored at once. */
  perOwnerBytes: number;
  /** Retained messages stored in the whole broker. */
  totalCount: number;
  /** Bytes (topic + payload) of all retained messages in the broker. */
  totalBytes: number;
}

/** Which limit a retained message would exceed. */
export type RetainedRefusal = 'owner-count' | 'owner-bytes' | 'total-count' | 'total-bytes';

/**
 * The owner of retained messages found in persistence at start: who stored
 * them is not kept there, so they count against the global limits only,
 * until someone replaces or clears them.
 */
export const RESTORED_OWNER = '';

interface Usage {
  count: number;
  bytes: number;
}

/** The cost of a retained message: its topic and payload in bytes. */
export function retainedCost(topic: string, payloadBytes: number): number {
  return Buffer.byteLength(topic) + payloadBytes;
}

export class RetainedBudget {
  private readonly byTopic = new Map<string, { owner: string; bytes: number }>();
  private readonly byOwner = new Map<string, Usage>();
  private readonly total: Usage = { count: 0, bytes: 0 };

  constructor(readonly limits: RetainedLimits) {}

  /**
   * Would storing `payloadBytes` retained on `topic` by `owner` stay within
   * every limit? An empty payload (a clear) always may.
   */
  check(owner: string, topic: string, payloadBytes: number): RetainedRefusal | undefined {
    if (payloadBytes === 0) return undefined;
    const cost = retainedCost(topic, payloadBytes);
    const old = this.byTopic.get(topic);
    const mine = this.byOwner.get(owner) ?? { count: 0, bytes: 0 };
    const oldMine = old && old.owner === owner ? old : undefined;
    const ownerCount = mine.count + (oldMine ? 0 : 1);
    const ownerBytes = mine.bytes - (oldMine?.bytes ?? 0) + cost;
    const totalCount = this.total.count + (old ? 0 : 1);
    const totalBytes = this.total.bytes - (old?.bytes ?? 0) + cost;
    if (ownerCount > this.limits.perOwnerCount) return 'owner-count';
    if (ownerBytes > this.limits.perOwnerBytes) return 'owner-bytes';
    if (totalCount > this.limits.totalCount) return 'total-count';
    if (totalBytes > this.limits.totalBytes) return 'total-bytes';
    return undefined;
  }

  /** Records a retained message as stored (replacing the topic's old one); an empty payload clears the topic. */
  store(owner: string, topic: string, payloadBytes: number): void {
    this.clear(topic);
    if (payloadBytes === 0) return;
    const bytes = retainedCost(topic, payloadBytes);
    this.byTopic.set(topic, { owner, bytes });
    const u = this.byOwner.get(owner) ?? { count: 0, bytes: 0 };
    u.count++;
    u.bytes += bytes;
    this.byOwner.set(owner, u);
    this.total.count++;
    this.total.bytes += bytes;
  }

  /** Frees the budget of the message retained on `topic`, if any. */
  clear(topic: string): void {
    const old = this.byTopic.get(topic);
    if (!old) return;
    this.byTopic.delete(topic);
    const u = this.byOwner.get(old.owner)!;
    u.count--;
    u.bytes -= old.bytes;
    if (u.count === 0) this.byOwner.delete(old.owner);
    this.total.count--;
    this.total.bytes -= old.bytes;
  }

  /** What `owner` has stored (RESTORED_OWNER: what was found at start and not replaced since). */
  usage(owner: string): Usage {
    const u = this.byOwner.get(owner);
    return { count: u?.count ?? 0, bytes: u?.bytes ?? 0 };
  }

  totals(): Usage {
    return { ...this.total };
  }
}
