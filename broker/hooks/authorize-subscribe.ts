/**
 * Aedes `authorizeSubscribe`: a filter is granted only if one allow rule of
 * the client's role contains every topic the filter can match
 * (broker/policy). A refused filter gets the SUBACK failure code 0x80; the
 * connection stays up.
 */
import type { AuthorizeSubscribeHandler } from 'aedes';
import { canSubscribe } from '../policy/policy.js';
import type { BrokerContext } from '../context.js';
import { audit, principalOf } from '../context.js';

export function createAuthorizeSubscribe(ctx: BrokerContext): AuthorizeSubscribeHandler {
  const authorizeSubscribe: AuthorizeSubscribeHandler = (client, sub, callback) => {
    const state = ctx.states.get(client);
    if (state?.kind === 'pending' && state.completing) {
      const again = () => authorizeSubscribe(client, sub, callback);
      state.completing.then(again, again);
      return;
    }
    const principal = principalOf(ctx, state);
    if (!principal || !canSubscribe(principal, sub.topic)) {
      ctx.metrics.drops.inc({ reason: 'subscribe-denied' });
      audit(ctx, 'subscribe.deny', principal?.id ?? null, sub.topic.slice(0, 128), state?.remote ?? null);
      return callback(null, null);
    }
    callback(null, sub);
  };
  return authorizeSubscribe;
}
