/**
 * Aedes `clientReady` event (CONNACK written): for a pending phase-1 client,
 * send KX2 on the protocol topic to that one client. MQTT clients deliver a
 * PUBLISH on a topic they never subscribed to through their normal message
 * callback, so no SUBSCRIBE is needed. Also records which client holds a
 * device's live session and re-checks the device's status, closing the
 * window between authentication and registration for a revocation.
 */
import type { Client } from 'aedes';
import type { BrokerContext } from '../context.js';
import { audit, setLiveDevice } from '../context.js';

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
      const d = ctx.registry.getDevice(state.devId);
      if (!d || d.status !== 'active' || d.keyVersion !== state.keyVersion) {
        audit(ctx, 'session.revoked', state.devId, 'revoked during login', state.remote);
        client.close();
        return;
      }
      setLiveDevice(ctx, state.devId, client);
    }
  }
}
