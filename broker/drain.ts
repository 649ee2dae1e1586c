/**
 * Graceful stop: what the broker must finish before it closes connections,
 * so that a restart neither loses nor duplicates a QoS 1 message.
 *
 * - Aedes sends a publisher's PUBACK *before* it routes the message
 *   (lib/handlers/publish.js), so a message acknowledged to a device may
 *   still be on its way to subscribers: `publishing` counts messages between
 *   authorizePublish and Aedes' 'publish' event.
 * - A QoS 1 message written to a persistent-session subscriber stays in the
 *   persistence's outgoing store until that subscriber's PUBACK; closing
 *   before it arrives makes Aedes send it again after the restart (a
 *   duplicate at the backend). `outgoing` tracks those acknowledgements.
 */
import type { AuthorizePublishHandler, Client } from 'aedes';

type Persistence = {
  outgoingUpdate(client: Client, packet: { messageId?: number }): Promise<unknown>;
  outgoingClearMessageId(client: Client, packet: { messageId?: number }): Promise<unknown>;
};

const TRACKER = Symbol.for('mqsec.drainTracker');

export class DrainTracker {
  private publishing = 0;
  private readonly outgoing = new Set<string>();

  /** Counts every publish that authorizePublish lets through until Aedes has routed it. */
  wrapAuthorizePublish(hook: AuthorizePublishHandler): AuthorizePublishHandler {
    return (client, packet, callback) =>
      hook(client, packet, (err) => {
        if (!err && client) this.publishing++;
        callback(err);
      });
  }

  /** Aedes 'publish' event (after routing); `client` is null for the broker's own messages. */
  onPublished(client: Client | null | undefined): void {
    if (client && this.publishing > 0) this.publishing--;
  }

  /**
   * Follows outgoing QoS 1 acknowledgements of persistent sessions. The same
   * persistence may outlive this broker (a restart reusing a durable store),
   * so it is patched once and reports to whichever tracker is current.
   */
  track<P>(persistence: P): P {
    const p = persistence as unknown as Persistence & { [TRACKER]?: DrainTracker };
    if (!p[TRACKER]) {
      const update = p.outgoingUpdate.bind(p);
      const clear = p.outgoingClearMessageId.bind(p);
      p.outgoingUpdate = async (client, packet) => {
        const r = await update(client, packet);
        if (packet.messageId) p[TRACKER]?.outgoing.add(`${client.id}\n${packet.messageId}`);
        return r;
      };
      p.outgoingClearMessageId = (client, packet) => {
        p[TRACKER]?.outgoing.delete(`${client.id}\n${packet.messageId}`);
        return clear(client, packet);
      };
    }
    p[TRACKER] = this;
    return persistence;
  }

  /** Nothing left to route, and no connected subscriber owes a PUBACK. */
  idle(connected: (clientId: string) => boolean): boolean {
    if (this.publishing > 0) return false;
    for (const k of this.outgoing) if (connected(k.slice(0, k.indexOf('\n')))) return false;
    return true;
  }

  /** Waits (polling, bounded by `maxMs`) until idle; returns whether it got there. */
  async waitIdle(connected: (clientId: string) => boolean, maxMs: number): Promise<boolean> {
    const deadline = Date.now() + maxMs;
    // one turn first: packets already parsed are still being dispatched
    await new Promise((r) => setTimeout(r, 20));
    while (!this.idle(connected)) {
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
    return true;
  }
}
