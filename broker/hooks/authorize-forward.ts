/**
 * Aedes `authorizeForward`: runs for every delivery to every subscriber,
 * retained messages included, so policy changes and revocations take effect
 * at once. Inside the broker payloads are plaintext; here each mqsec device
 * gets the message re-sealed under its own session, a plain client gets it
 * only if its role is allowed plaintext, and nobody else gets anything (never
 * a payload the receiver cannot open). (Slow consumers are cut off in
 * limits/guarded-socket.ts.) The broker's protocol messages (KX2, the
 * counter hint, the resume confirmation) leave the broker only to the
 * client each was made for. Key deliveries (`$mqsec/gk`) go only to
 * the member connection they were made for. On end-to-end topics
 * (docs/protocol.md §14) the group envelope goes out as it came, to readers
 * of its group only.
 *
 * A delivery to a connection that is already gone (its state was forgotten at
 * the socket's close) is let through, not refused: Aedes answers a refusal on
 * a persistent session by clearing a message from the session queue (for a
 * live delivery, by a message id never assigned, which removes the oldest
 * queued message), so a refusal there loses readings. Let through, the write
 * to the dead socket fails and the message stays queued for the next
 * connection, where this hook judges it again with the new state.
 */
import type { AuthorizeForwardHandler } from 'aedes';
import { encodePublish } from '../../firmware/mqtt/generate.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { GK_TOPIC } from '../../firmware/secure/group.js';
import { KEYSERVICE_ROLE, KS_IN_TOPIC } from '../keyservice/link.js';
import { canReceive } from '../policy/policy.js';
import type { BrokerContext, ClientState } from '../context.js';
import { principalOf } from '../context.js';

/** The payload as bytes; a view, not a copy, since sealing only reads it (this runs per delivery). */
function payloadView(p: Buffer | string): Uint8Array {
  return typeof p === 'string' ? new TextEncoder().encode(p) : new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
}

/**
 * The broker's own protocol message for this client: KX2 (pending phase 1),
 * the counter hint, or the phase-2 resume confirmation. Nothing else on the
 * protocol topic ever reaches a client.
 */
function isOwnProtocolMessage(state: ClientState, payload: Buffer | string): boolean {
  const own = state.kind === 'pending' || state.kind === 'hint' ? state.reply : state.kind === 'device' ? state.confirm : undefined;
  if (!own || typeof payload === 'string') return false;
  return Buffer.compare(payload, Buffer.from(own.payload.buffer, own.payload.byteOffset, own.payload.byteLength)) === 0;
}

export function createAuthorizeForward(ctx: BrokerContext): AuthorizeForwardHandler {
  return (client, packet) => {
    const state = ctx.states.get(client);
    if (!state) return client.closed || client.conn?.destroyed ? packet : null;
    if (packet.topic === KX_TOPIC) return isOwnProtocolMessage(state, packet.payload) ? packet : null;
    // a key delivery is published by the broker to one member's connection only (§14.6); clients cannot publish here
    if (packet.topic === GK_TOPIC) return state.kind === 'device' ? packet : null;
    // link frames (§14.12) are published by the broker to the external key service's client only
    if (packet.topic === KS_IN_TOPIC) return state.kind === 'account' && state.roleName === KEYSERVICE_ROLE ? packet : null;
    if (state.kind === 'pending' || state.kind === 'hint') return null;
    const principal = principalOf(ctx, state)!;
    if (!canReceive(principal, packet.topic)) return null;

    const group = ctx.groups.groupOf(packet.topic);
    if (group !== undefined) {
      // §14.5: the group envelope as it came, to readers of the group only (nobody else could open it)
      return state.kind === 'device' && ctx.groups.isReader(state.devId, group) ? packet : null;
    }

    if (state.kind === 'device') {
      let sealed: Uint8Array;
      try {
        sealed = state.session.seal(packet.topic, payloadView(packet.payload));
      } catch (e) {
        // NONCE_EXHAUSTED: the session must rekey, which a reconnect does
        ctx.metrics.drops.inc({ reason: isMqsecError(e) ? e.code.toLowerCase() : 'seal-failed' });
        client.close();
        return null;
      }
      const payload = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
      ctx.metrics.delivered.inc();
      if (typeof (packet as { writeCallback?: unknown }).writeCallback === 'function') {
        // Aedes replaying a persistent session's queue (lib/handlers/connect.js emptyQueue)
        // writes the packet it asked about, not the one returned here. That packet is this
        // delivery's own copy of the stored message (the store keeps the plaintext), so it is
        // sealed in place: a queue never goes out in clear (test/broker/principal-session).
        // The replay runs between CONNACK and clientReady: a phase-2 client opens nothing before
        // the resume confirmation (§6.4), so that goes out first, here, once.
        if (state.confirm && !state.confirmSent && client.conn && !client.conn.destroyed) {
          state.confirmSent = true;
          const rc = encodePublish({ type: 'publish', topic: state.confirm.topic, payload: state.confirm.payload, qos: 0, dup: false, retain: false });
          client.conn.write(Buffer.from(rc.buffer, rc.byteOffset, rc.byteLength));
        }
        packet.payload = payload;
        return packet;
      }
      const copy = Object.assign(Object.create(Object.getPrototypeOf(packet)), packet);
      copy.payload = payload;
      return copy;
    }
    if (!principal.role.plaintext) return null;
    ctx.metrics.delivered.inc();
    return packet;
  };
}
