/**
 * Aedes `clientReady` event (CONNACK written): send the broker's protocol
 * message on the protocol topic to that one client: KX2 to a pending phase-1
 * client, the resume confirmation to a phase-2 session (docs/protocol.md
 * §6.4), the counter hint to a KX1 with a used counter (§5.5, then close). MQTT clients deliver a
 * PUBLISH on a topic they never subscribed to through their normal message
 * callback, so no SUBSCRIBE is needed. Also records which client holds a
 * device's live session and re-checks the device's status, closing the
 * window between authentication and registration for a revocation.
 */
import type { Client } from 'aedes';
import type { BrokerContext } from '../context.js';
import { audit, sameDeviceKey, setLiveDevice } from '../context.js';

export function createClientReady(ctx: BrokerContext): (client: Client) => void {
  return (client) => {
    try {
      onReady(ctx, client);
    } catch (e) {
      // an event handler must never throw into Aedes (it would crash the process)
      ctx.log.error({ err: e, client: client.id }, 'clientReady failed; closing the client');
      client.close();
    }
  };
}

function onReady(ctx: BrokerContext, client: Client): void {
  {
    const state = ctx.states.get(client);
    if (!state) return;
    if (state.kind === 'hint') {
      // §5.5: the hint, then the connection ends: it never gets a session.
      client.publish(
        { cmd: 'publish', topic: state.reply.topic, payload: Buffer.from(state.reply.payload), qos: 0, retain: false, dup: false },
        () => client.close(),
      );
      return;
    }
    if (state.kind === 'pending') {
      client.publish(
        { cmd: 'publish', topic: state.reply.topic, payload: Buffer.from(state.reply.payload), qos: 0, retain: false, dup: false },
        (err?: Error) => {
          if (err) ctx.log.debug({ err, devId: state.devId }, 'KX2 not sent');
        },
      );
      return;
    }
    if (state.kind === 'device') {
      // the registry may have changed between authentication and now (revoked during login)
      ctx.registry.getDevice(state.devId).then(
        (d) => {
          if (client.closed || ctx.states.get(client) !== state) return;
          if (!sameDeviceKey(d, state)) {
            audit(ctx, 'session.revoked', state.devId, 'revoked during login', state.remote);
            client.close();
            return;
          }
          setLiveDevice(ctx, state.devId, client);
          // §6.4: phase 2 proves the broker holds the session keys right after CONNACK.
          if (state.confirm && !state.confirmSent) {
            state.confirmSent = true;
            client.publish(
              { cmd: 'publish', topic: state.confirm.topic, payload: Buffer.from(state.confirm.payload), qos: 0, retain: false, dup: false },
              (err?: Error) => {
                if (err) ctx.log.debug({ err, devId: state.devId }, 'resume confirmation not sent');
              },
            );
          }
        },
        (e: unknown) => {
          // cannot tell whether the device is still allowed: close, it reconnects (CONNACK 3 while unavailable)
          ctx.log.warn({ err: e, devId: state.devId }, 'registry unavailable after login: session closed');
          client.close();
        },
      );
    }
  }
}
