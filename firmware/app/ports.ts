/**
 * What the sensor-node application needs from the world, as small injected
 * interfaces. The same app class runs on an ESP32 (Moddable adapters in
 * firmware/platform/moddable), inside the XS engine under test, and under Node
 * for the host simulator: none of these interfaces mentions Moddable or Node.
 */
import type { MqsecError } from '../core/errors.js';

/** One sensor value. `kind` becomes the last topic level: sensors/<id>/<kind>. */
export interface Reading {
  kind: string;
  value: number;
  unit?: string;
}

/** A sensor (or a board's set of sensors) read once per wake-up. */
export interface Sensor {
  read(): Promise<Reading[]>;
}

/**
 * The network link under MQTT (Wi-Fi station on an ESP32). `connect` resolves
 * once an IP address is assigned; hosts without a radio resolve at once.
 */
export interface Network {
  connect(): Promise<void>;
  /** Turns the radio off before deep sleep (optional). */
  disconnect?(): void;
}

export type WakeCause = 'cold' | 'timer' | 'other';

/**
 * Low-power waiting. On an ESP32 `deepSleep` powers the chip down and the
 * program starts again from `main` after `ms` (it does not return there);
 * the simulator and tests record the request and "wake" the node by booting a
 * new SensorNode on the same Storage.
 */
export interface Sleep {
  /** Deep sleep is available (false: the node stays connected and waits with a Timer). */
  readonly deepSleepSupported: boolean;
  deepSleep(ms: number): void;
  /** Why this boot happened: a cold power-on, or the deep-sleep timer. */
  wakeCause(): WakeCause;
}

/** Fed at every state transition; on a device backed by the task watchdog. */
export interface Watchdog {
  feed(): void;
}

export interface SecureLinkEvents {
  /** A decrypted, authenticated application message (commands on cmd/<id>/...). */
  onMessage(topic: string, payload: Uint8Array): void;
  /** The secure connection went down after `open` had succeeded. Called at most once per open. */
  onDown(error?: MqsecError): void;
}

export interface SecureLinkOpened {
  /** 1: full authentication + key agreement; 2: cheap resumption with the stored ticket. */
  phase: 1 | 2;
}

/**
 * The slice of the secure MQTT client (firmware/app/secure-mqtt.ts) the app
 * uses: open an authenticated session, publish sealed payloads, receive opened
 * ones. firmware/app/secure-link.ts adapts SecureMqttClient to it; tests and
 * the simulator may supply their own.
 */
export interface SecureLink {
  open(events: SecureLinkEvents): Promise<SecureLinkOpened>;
  /** Seals `payload` for `topic` and publishes it (QoS 1 when `qos` is 1). */
  publish(topic: string, payload: Uint8Array, qos?: 0 | 1): Promise<void>;
  subscribe(filter: string): Promise<void>;
  /** Clean close (DISCONNECT); resolves when the link is down. Never rejects. */
  close(): Promise<void>;
  /** QoS 1 messages sent but not yet acknowledged (kept for the next connection); RAM only. */
  unacknowledged?(): number;
}
