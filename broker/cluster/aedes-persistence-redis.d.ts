/** aedes-persistence-redis ships no type declarations: the part mqsec uses. */
declare module 'aedes-persistence-redis' {
  import type { Redis } from 'ioredis';
  /** An Aedes persistence (subscriptions, retained messages, QoS 1 queues) in Redis, over the given connection. */
  export default function redisPersistence(opts: { conn?: Redis; maxSessionDelivery?: number; packetTTL?: (packet: unknown) => number }): unknown;
}
