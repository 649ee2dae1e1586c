/**
 * End-to-end load clients (docs/protocol.md §14): mqsec principals on the
 * app SDK (sdk/app.ts, unmodified MQTT.js underneath). Publishers seal each
 * payload under their topic group's key and add the connection's channel
 * trailer; the broker checks the trailer (one HMAC), strips it and forwards
 * the group envelope untouched to every subscriber, which opens it with the
 * group key. No AEAD at the broker: the case the e2e mode exists for.
 *
 * Like the hop-by-hop clients (bench/throughput/mqsec.ts) they use the
 * node:crypto suite. Each member keeps its counter and ticket across rounds,
 * as an application keeps them in a file: a member that forgot them would
 * present a used counter and be sent to lost-state recovery (§5.5).
 */
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { connectApp } from '../../sdk/app.js';
import type { LoadClient, LoadClientFactory } from './load.js';

export interface E2eMember {
  id: string;
  key: Uint8Array;
}

const memberStorage = new WeakMap<E2eMember, MemoryStorage>();

export async function e2eClient(url: string, member: E2eMember): Promise<LoadClient> {
  let storage = memberStorage.get(member);
  if (!storage) memberStorage.set(member, (storage = new MemoryStorage()));
  const app = await connectApp({ url, id: member.id, key: member.key, storage });
  let onMessage: (topic: string, payload: Uint8Array) => void = () => {};
  app.on('message', (topic, payload) => onMessage(topic, payload));
  return {
    publish(topic, payload, qos) {
      app.publish(topic, payload, { qos }).catch(() => {}); // a loss shows up as a stalled window
    },
    async subscribe(filter, qos) {
      await app.subscribe(filter, qos);
    },
    onMessage(cb) {
      onMessage = cb;
    },
    async end() {
      await app.end();
    },
  };
}

/** Publisher i is `publishers[i]`, subscriber s is `subscribers[s]`. */
export function e2eFactory(url: string, publishers: E2eMember[], subscribers: E2eMember[]): LoadClientFactory {
  return (role, i) => e2eClient(url, role === 'pub' ? publishers[i] : subscribers[i]);
}
