/**
 * Group commit for the registry's durable writes (docs/protocol.md §9.3:
 * "every method is durable before it resolves").
 *
 * A counter raise and a ticket rewrite per handshake were two SQLite
 * transactions each, two WAL appends and two fsyncs. Here every write asked
 * for within one event-loop turn joins one queue; on the next turn
 * (setImmediate) the whole queue runs in one transaction, and each caller's
 * promise settles only after that transaction committed. Durability is
 * unchanged: a caller is answered (and the broker sends CONNACK) only once its
 * write is on disk, so a crash can lose only writes whose callers had not
 * been answered yet, and nothing accepted before a crash can be accepted
 * again (test/broker/group-commit-crash.test.ts kills the broker right after
 * an answer to check exactly that). What is saved is per-transaction
 * overhead: under concurrent handshakes one commit serves many.
 *
 * Each queued write runs as it would alone (its own result or error); a
 * failed commit rejects every caller of the group: none of their writes
 * happened.
 */
export type TransactionRunner = (body: () => void) => void;

interface Queued {
  write: () => unknown;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

export class GroupCommit {
  private queue: Queued[] = [];
  private scheduled = false;
  /** Groups committed so far, and writes in them (for tests and metrics). */
  groups = 0;
  writes = 0;

  constructor(private readonly inTransaction: TransactionRunner) {}

  /** Queues `write` for the next group; resolves with its result once the group committed. */
  run<T>(write: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ write, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Commits everything queued now (also called by the scheduled turn). */
  flush(): void {
    this.scheduled = false;
    const group = this.queue;
    if (group.length === 0) return;
    this.queue = [];
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      this.inTransaction(() => {
        for (const q of group) {
          try {
            outcomes.push({ ok: true, value: q.write() });
          } catch (error) {
            outcomes.push({ ok: false, error });
          }
        }
      });
    } catch (error) {
      // the transaction did not commit: nothing of this group happened
      for (const q of group) q.reject(error);
      return;
    }
    this.groups++;
    this.writes += group.length;
    group.forEach((q, i) => {
      const o = outcomes[i];
      if (o.ok) q.resolve(o.value);
      else q.reject(o.error);
    });
  }
}
