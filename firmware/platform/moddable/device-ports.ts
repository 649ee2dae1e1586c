/**
 * The app's device-facing ports on Moddable: Wi-Fi station (`wifi` module),
 * deep sleep (native/mqsec-sleep.c, ESP32 only), and the sensor (an SHT3x on
 * I2C through the SDK's ECMA-419 driver, or system values when a board has
 * none).
 */
import WiFi from 'wifi';
import Net from 'net';
import Time from 'time';
import { MqsecError } from '../../core/errors.js';
import type { Network, Reading, Sensor, Sleep, WakeCause } from '../../app/ports.js';

/**
 * Wi-Fi station: resolves on "gotIP", rejects on "disconnect" before that
 * (the app's state machine bounds the wait and retries with backoff).
 */
export class WifiNetwork implements Network {
  private station: WiFi | undefined;

  constructor(private readonly credentials: { ssid: string; password?: string } | undefined) {}

  connect(): Promise<void> {
    // Desktop builds and boards already on a network (setup/network did it) skip the radio.
    if (!this.credentials || this.hasAddress()) return Promise.resolve();
    this.close();
    const options = this.credentials.password ? { ssid: this.credentials.ssid, password: this.credentials.password } : { ssid: this.credentials.ssid };
    return new Promise<void>((resolve, reject) => {
      this.station = new WiFi(options, (message) => {
        if (message === WiFi.gotIP) resolve();
        else if (message === WiFi.disconnected) reject(new MqsecError('CONNECTION_REFUSED', 'Wi-Fi disconnected'));
      });
    });
  }

  disconnect(): void {
    this.close();
    try {
      WiFi.disconnect();
      WiFi.mode = WiFi.Mode.off;
    } catch {
      // already off
    }
  }

  private hasAddress(): boolean {
    try {
      const ip = Net.get('IP');
      return typeof ip === 'string' && ip !== '' && ip !== '0.0.0.0';
    } catch {
      return false;
    }
  }

  private close(): void {
    try {
      this.station?.close();
    } catch {
      // the station object may already be gone
    }
    this.station = undefined;
  }
}

/** Deep sleep through the native module; `undefined` functions mean the build has none (desktop). */
export class NativeSleep implements Sleep {
  readonly deepSleepSupported: boolean;

  constructor(private readonly native: { deepSleep(ms: number): never; wakeCause(): WakeCause } | undefined) {
    this.deepSleepSupported = native !== undefined;
  }

  deepSleep(ms: number): void {
    if (!this.native) throw new MqsecError('BAD_STATE', 'deep sleep not available on this build');
    this.native.deepSleep(Math.max(1, Math.round(ms)));
  }

  wakeCause(): WakeCause {
    return this.native ? this.native.wakeCause() : 'cold';
  }
}

export interface Sht3xLike {
  sample(): { hygrometer: { humidity: number }; thermometer: { temperature: number } } | undefined;
}

/** An SHT3x temperature/humidity sensor (Sensirion), read once per wake-up. */
export class Sht3xSensor implements Sensor {
  constructor(private readonly device: Sht3xLike) {}
  async read(): Promise<Reading[]> {
    const s = this.device.sample();
    if (!s) throw new MqsecError('TIMEOUT', 'SHT3x returned no sample');
    return [
      { kind: 'temperature', value: Math.round(s.thermometer.temperature * 100) / 100, unit: 'C' },
      { kind: 'humidity', value: Math.round(s.hygrometer.humidity * 10) / 10, unit: '%' },
    ];
  }
}

/** For boards without a sensor (and the desktop build): uptime and Wi-Fi signal strength. */
export class SystemSensor implements Sensor {
  /** Time.ticks counts from boot on the chip but from an arbitrary origin on the desktop. */
  private readonly startTicks = Time.ticks;
  async read(): Promise<Reading[]> {
    const out: Reading[] = [{ kind: 'uptime', value: Math.floor(Time.delta(this.startTicks) / 1000), unit: 's' }];
    try {
      const rssi = Net.get('RSSI');
      if (typeof rssi === 'number' && rssi !== 0) out.push({ kind: 'rssi', value: rssi, unit: 'dBm' });
    } catch {
      // no radio (desktop)
    }
    return out;
  }
}
