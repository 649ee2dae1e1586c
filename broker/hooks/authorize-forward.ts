/**
 * Aedes `authorizeForward`: runs for every delivery to every subscriber,
 * retained messages included, so policy changes and revocations take effect
 * at once. Inside the broker payloads are plaintext; here each mqsec device
 * gets the message re-sealed under its own session, a plain client gets it
 * only if its role is allowed plaintext, and nobody else gets anything (never
 * a payload the receiver cannot open). (Slow consumers are cut off in
 * limits/guarded-socket.ts.) KX2 is the one protocol message that
 * leaves the broker, and only to the pending client it was made for.
 */
import type { AuthorizeForwardHandler } from 'aedes';
import { isMqsecError } from '../../firmware/core/errors.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { canReceive } from '../policy/policy.js';
import type { BrokerContext } from '../context.js';
import { principalOf } from '../context.js';

/** The payload as bytes; a view, not a copy, since sealing only reads it (this runs per delivery). */
function payloadView(p: Buffer | string): Uint8Array {
  return typeof p === 'string' ? new TextEncoder().encode(p) : new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
}

export function createAuthorizeForward(ctx: BrokerContext): AuthorizeForwardHandler {
  return (client, packet) => {
    const state = ctx.states.get(client);
    if (!state) return null;
    if (packet.topic === KX_TOPIC) return state.kind === 'pending' ? packet : null;
    if (state.kind === 'pending') return null;
    const principal = principalOf(ctx, state)!;
    if (!canReceive(principal, packet.topic)) return null;

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
      const copy = Object.assign(Object.create(Object.getPrototypeOf(packet)), packet);
      copy.payload = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
      ctx.metrics.delivered.inc();
      return copy;
    }
    if (!principal.role.plaintext) return null;
    ctx.metrics.delivered.inc();
    return packet;
  };
}
