/**
 * Aedes `preConnect`: runs on the CONNECT packet before authentication.
 * Enforces the keepalive range (a client with keepalive 0 could hold a
 * connection forever without traffic; MQTT 3.1.1 has no return code for
 * "keepalive refused", so the connection is closed without CONNACK).
 */
import type { PreConnectHandler } from 'aedes';
import type { BrokerContext } from '../context.js';
import { remoteOf } from '../context.js';

export function createPreConnect(ctx: BrokerContext): PreConnectHandler {
  return (client, packet, callback) => {
    ctx.metrics.connects.inc();
    const keepalive = packet.keepalive ?? 0;
    if (keepalive === 0 || keepalive > ctx.limits.maxKeepaliveSec) {
      ctx.metrics.rejects.inc({ reason: 'keepalive' });
      ctx.log.info({ remote: remoteOf(client), keepalive }, 'CONNECT refused: keepalive out of range');
      callback(new Error(`keepalive must be 1..${ctx.limits.maxKeepaliveSec} s`), false);
      return;
    }
    if (!packet.clientId) ctx.emptyClientIds.add(client);
    // A principal (device or app with a key) may keep a persistent session, like a password
    // account: the store keeps what the broker routed (the plaintext of a hop-by-hop topic, as
    // for an account; the group envelope of an end-to-end one, which needs no sealing) and
    // authorize-forward seals a hop-by-hop message for the connection that takes it, the
    // replay of a queue included (test/broker/principal-session.test.ts). The firmware and the
    // SDK's default use clean sessions. Not with a store that keeps delivered copies
    // (ctx.persistentPrincipals): there a sealed copy would replace the routed message.
    if (ctx.persistentPrincipals || packet.clean || !packet.clientId) return callback(null, true);
    ctx.registry.getDevice(packet.clientId).then(
      (device) => {
        if (device) packet.clean = true;
        callback(null, true);
      },
      (e: unknown) => {
        // a principal's persistent-session request cannot be judged: close without CONNACK, the client retries
        ctx.log.error({ err: e }, 'registry unavailable in preConnect');
        callback(e as Error, false);
      },
    );
  };
}
