/** Every resource limit of the broker in one place, with defaults (docs: operations). */
import type { RateLimitOptions } from './rate-limit.js';
import type { RetainedLimits } from './retained-budget.js';

export interface BrokerLimits {
  /** Largest MQTT packet (remaining length) accepted; checked on the fixed header. */
  maxPacketSize: number;
  /** Socket must send a complete CONNECT within this time (half-open and idle sockets). */
  connectTimeoutMs: number;
  /** A packet that has started must be complete within this time (trickling clients). */
  packetTimeoutMs: number;
  /** Largest keepalive a client may ask for, seconds; 0 (disabled) is refused. */
  maxKeepaliveSec: number;
  /** Phase 1 must finish (KX3) within this time after CONNACK. */
  phase1TimeoutMs: number;
  /** Cap on phase-1 sessions awaiting KX3 at once. */
  maxPending: number;
  phase1PerAddress: RateLimitOptions;
  phase1PerDevice: RateLimitOptions;
  /** Password (scrypt, ~60 ms of CPU each) logins per source address. */
  passwordPerAddress: RateLimitOptions;
  /** All authentication attempts (any kind) per source address. */
  authPerAddress: RateLimitOptions;
  /** Bytes queued in user space towards one client (beyond the kernel buffer) before it is dropped as a slow consumer. */
  maxOutgoingBytes: number;
  /** Aedes drain timeout for a client that stops reading. */
  drainTimeoutMs: number;
  /** Packets Aedes queues from one client before CONNECT completes. */
  queueLimit: number;
  maxConnections: number;
  auditPerSecond: number;
  /** Retained messages one account or device may have stored at once. */
  retainedPerAccount: number;
  /** Bytes (topic + payload) of retained messages one account or device may have stored at once. */
  retainedBytesPerAccount: number;
  /** Retained messages in the whole broker. */
  retainedTotal: number;
  /** Bytes (topic + payload) of all retained messages in the broker. */
  retainedBytesTotal: number;
}

export const DEFAULT_LIMITS: BrokerLimits = {
  maxPacketSize: 256 * 1024,
  connectTimeoutMs: 10_000,
  packetTimeoutMs: 15_000,
  maxKeepaliveSec: 1200,
  phase1TimeoutMs: 10_000,
  maxPending: 1000,
  phase1PerAddress: { ratePerSec: 50, burst: 200 },
  phase1PerDevice: { ratePerSec: 1, burst: 10 },
  passwordPerAddress: { ratePerSec: 10, burst: 50 },
  authPerAddress: { ratePerSec: 500, burst: 2000 },
  maxOutgoingBytes: 4 * 1024 * 1024,
  drainTimeoutMs: 30_000,
  queueLimit: 42,
  maxConnections: 20_000,
  auditPerSecond: 50,
  retainedPerAccount: 100,
  retainedBytesPerAccount: 1024 * 1024,
  retainedTotal: 10_000,
  retainedBytesTotal: 64 * 1024 * 1024,
};

/** The retained-message limits in the form the bookkeeping (retained-budget.ts) takes. */
export function retainedLimitsOf(l: BrokerLimits): RetainedLimits {
  return { perOwnerCount: l.retainedPerAccount, perOwnerBytes: l.retainedBytesPerAccount, totalCount: l.retainedTotal, totalBytes: l.retainedBytesTotal };
}

export function resolveLimits(partial: Partial<BrokerLimits> = {}): BrokerLimits {
  return { ...DEFAULT_LIMITS, ...partial };
}
