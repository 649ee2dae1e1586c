/**
 * The platform services every firmware module receives as constructor
 * arguments. Nothing in firmware/ reaches for a global: on Moddable these are
 * backed by ECMA-419 sockets, Timer, `preference` (NVS) and a native RNG
 * (firmware/platform/moddable); under Node by host-sim/adapters, with the
 * random source and crypto suite from platform-node (shared with the broker).
 */
import type { MqsecError } from './errors.js';

export interface TransportEvents {
  /** The TCP connection is up; writes are accepted from now on. */
  onConnect(): void;
  /** Bytes arrived. The chunk may be reused by the caller after return: copy what you keep. */
  onData(chunk: Uint8Array): void;
  /** Called exactly once per connection, on a clean close or an error. */
  onClose(error?: MqsecError): void;
}

export interface Connection {
  /** Queues bytes for sending; never throws for would-block (adapters queue). */
  write(bytes: Uint8Array): void;
  /** Closes the connection; onClose follows (once). */
  close(): void;
}

export interface Endpoint {
  host: string;
  port: number;
}

export interface Transport {
  connect(endpoint: Endpoint, events: TransportEvents): Connection;
}

/** Monotonic milliseconds. Not a wall clock: an ESP32 fresh from deep sleep may have none. */
export interface Clock {
  now(): number;
}

export type TimerHandle = unknown;

export interface Timer {
  set(callback: () => void, ms: number): TimerHandle;
  clear(handle: TimerHandle): void;
}

/** Cryptographically secure randomness (esp_fill_random on ESP32, node:crypto on the host). */
export interface Random {
  fill(bytes: Uint8Array): void;
}

/**
 * Small persistent blobs (NVS on ESP32: keys <= 15 chars, values <= 4000 B).
 * `put` resolves only once the value is durable and is atomic: after a power
 * cut the key holds either the old or the new value, never a mix.
 */
export interface Storage {
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, value: Uint8Array): Promise<void>;
  delete(key: string): Promise<void>;
}

export interface Log {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export const silentLog: Log = Object.freeze({
  debug() {},
  info() {},
  warn() {},
  error() {},
});

/** Everything a firmware component may need, in one bag for convenience. */
export interface Platform {
  transport: Transport;
  clock: Clock;
  timer: Timer;
  random: Random;
  storage: Storage;
  log: Log;
}

export const STORAGE_KEY_MAX = 15;
export const STORAGE_VALUE_MAX = 4000;
