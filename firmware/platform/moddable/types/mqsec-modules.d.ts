/**
 * Types of the modules this build adds to the Moddable SDK's own (whose types
 * come from @moddable/typings): the native RNG, X25519 and deep-sleep bindings, the
 * generated device configuration, and the SDK's stock `mqtt` client and
 * SHT3x driver and `crypt` digests, which @moddable/typings does not describe.
 */
declare module 'mqsec/random-native' {
  /** Fills the whole buffer from esp_fill_random() (ESP32) or getrandom() (desktop). */
  export default function fillRandom(buffer: ArrayBuffer | ArrayBufferView): void;
}

declare module 'mqsec/sleep-native' {
  /** Enters deep sleep; the chip restarts from the first module after `milliseconds`. Never returns. */
  export function deepSleep(milliseconds: number): never;
  export function wakeCause(): 'cold' | 'timer' | 'other';
}

declare module 'mqsec/device-config' {
  /** Generated from `mqsec device add ... --json` by tools/device-config.ts (never committed). */
  const config: {
    id: string;
    /** 32-byte device key, hex. */
    key: string;
    broker: { host: string; port: number };
    wifi?: { ssid: string; password?: string };
  };
  export default config;
}

declare module 'mqtt' {
  import type { StockMqttClientOptions, StockMqttClient } from '../stock-mqtt.js';
  const Client: new (options: StockMqttClientOptions) => StockMqttClient;
  export default Client;
}

declare module 'embedded:sensor/Humidity-Temperature/SHT3x' {
  export default class SHT3x {
    constructor(options: { sensor: Record<string, unknown> });
    sample(): { hygrometer: { humidity: number }; thermometer: { temperature: number } } | undefined;
    close(): void;
  }
}


declare module 'mqsec/x25519-native' {
  /** RFC 7748 X25519(scalar, u) into `out`; three 32-byte buffers (`out` may alias an input). */
  export default function x25519(out: Uint8Array, scalar: Uint8Array, u: Uint8Array): void;
}

declare module 'crypt' {
  /** The SDK's native message digests (modules/crypt/digest). */
  export class Digest {
    constructor(type: 'SHA1' | 'SHA224' | 'SHA256' | 'SHA384' | 'SHA512' | 'MD5');
    write(data: ArrayBuffer | ArrayBufferView): void;
    close(): ArrayBuffer;
    reset(): void;
    readonly blockSize: number;
    readonly outputSize: number;
  }
}
