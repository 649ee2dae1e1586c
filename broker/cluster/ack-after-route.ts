/**
 * Cluster nodes acknowledge a QoS 1 PUBLISH only once it is routed.
 *
 * Aedes 1.2 writes the publisher's PUBACK *before* it publishes the message
 * (lib/handlers/publish.js, QoS 1): stores it as retained, queues it in the
 * persistence for every persistent QoS 1 subscription, hands it to the
 * emitter. A node killed in between has acknowledged a message that exists
 * nowhere: the device deleted it, Redis never saw it. So on a cluster node the
 * authorizePublish hook, once the message is authorized, publishes it itself
 * through Aedes' own chain (same retained store, same queues, same emitter)
 * and lets Aedes go on (and PUBACK) only when that finished: what a device
 * had acknowledged is in Redis (queued for persistent sessions, retained) and
 * on its way to live subscribers. If it cannot be routed (Redis gone for good,
 * the node stopping) the connection is closed without PUBACK and the device
 * resends it. What Aedes then publishes is the packet turned into a drop
 * (DROP_TOPIC, empty), which the emitter keeps on the node.
 *
 * A node killed after routing but before its PUBACK left the socket makes the
 * device resend a message that was routed: a duplicate at the backend (QoS 1
 * is at least once), never a loss.
 */
import type { Aedes, AuthorizePublishHandler } from 'aedes';
import type { IPublishPacket as PublishPacket } from 'mqtt-packet';
import { DROP_TOPIC } from '../hooks/authorize-publish.js';

/** Marks a packet this module routed ahead of Aedes (its 'publish' event is not the authorized one). */
export const ROUTED_AHEAD = Symbol.for('mqsec.routedAhead');

/**
 * What the authorize hook wants done once its message is routed (a QoS 1
 * device message: record the moved replay window in the shared grace state,
 * shared-grace.ts). A window recorded before the routing finished would, if
 * the node died in between, make the node the device resends to refuse the
 * resent copy as a replay and acknowledge it: a reading acknowledged and
 * routed nowhere. Recorded after, the worst case is a copy routed twice.
 */
const AFTER_ROUTED = Symbol.for('mqsec.afterRouted');

export function setAfterRouted(packet: object, action: () => void): void {
  (packet as { [AFTER_ROUTED]?: () => void })[AFTER_ROUTED] = action;
}

function takeAfterRouted(packet: object): (() => void) | undefined {
  const p = packet as { [AFTER_ROUTED]?: () => void };
  const action = p[AFTER_ROUTED];
  delete p[AFTER_ROUTED];
  return action;
}

export function ackAfterRoute(aedes: Aedes, hook: AuthorizePublishHandler): AuthorizePublishHandler {
  return (client, packet, callback) =>
    hook(client, packet, (err) => {
      const p = packet as PublishPacket;
      const afterRouted = takeAfterRouted(packet);
      if (err || !client || p.qos !== 1 || p.topic === DROP_TOPIC || p.topic.startsWith('$')) {
        // not routed ahead (QoS 0 is never resent; a refused message is not routed at all)
        if (!err) afterRouted?.();
        return callback(err);
      }
      const routed = { cmd: 'publish', topic: p.topic, payload: p.payload, qos: 1, retain: p.retain, dup: false, [ROUTED_AHEAD]: true } as unknown as PublishPacket;
      (aedes as unknown as { publish(p: PublishPacket, c: unknown, done: (e?: Error | null) => void): void }).publish(routed, client, (e) => {
        if (e) return callback(e);
        afterRouted?.();
        p.topic = DROP_TOPIC;
        p.retain = false;
        p.payload = Buffer.alloc(0);
        callback(null);
      });
    });
}

/** Wraps an mqemitter so that dropped packets never leave the node (no Redis PUBLISH for them). */
export function keepDropsLocal<E extends { emit(msg: { topic: string }, done?: (err?: Error) => void): unknown }>(emitter: E): E {
  const emit = emitter.emit.bind(emitter);
  emitter.emit = ((msg: { topic: string }, done?: (err?: Error) => void) => {
    if (msg.topic === DROP_TOPIC) {
      if (done) setImmediate(done);
      return emitter;
    }
    return emit(msg, done);
  }) as E['emit'];
  return emitter;
}
