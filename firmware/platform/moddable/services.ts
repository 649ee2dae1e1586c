/**
 * The platform services on the Moddable SDK: with main.ts and the per-board
 * modules, the only files that import SDK modules. Each service is a thin
 * binding; the logic lives in SDK-free adapters tested under Node
 * (tcp-transport.ts, preference-storage.ts, file-storage.ts, stock-mqtt.ts).
 *
 * This module is preloaded (built into flash), and so is every module it
 * imports: none of them may keep mutable state at module level. Storage comes
 * from the board's `board-storage` module for that reason (see
 * storage-preference.ts and storage-file.ts).
 */
import Timer from 'timer';
import Time from 'time';
import Net from 'net';
import TCP from 'embedded:io/socket/tcp';
import fillRandom from 'mqsec/random-native';
import { MqsecError, fail } from '../../core/errors.js';
import type { Clock, Log, Platform, Random, Timer as TimerService } from '../../core/platform.js';
import { ModdableTcpTransport, type Tcp419Constructor } from './tcp-transport.js';
import { createStorage } from './board-storage.js';

interface OneShot {
  timer: ReturnType<typeof Timer.set> | undefined;
}

/**
 * One-shot timers over the SDK's `timer` module. The platform contract (like
 * Node's clearTimeout) lets callers clear a timer that has already fired or
 * was cleared; the SDK's Timer.clear must not see such a timer, so each
 * handle remembers whether it is still armed. A callback that throws is
 * logged, never left to abort the VM.
 */
export function createModdableTimer(log?: Log): TimerService {
  return {
    set(callback, ms) {
      const handle: OneShot = { timer: undefined };
      handle.timer = Timer.set(() => {
        handle.timer = undefined;
        try {
          callback();
        } catch (e) {
          log?.error('timer callback threw', { message: String(e) });
        }
      }, Math.max(0, ms));
      return handle;
    },
    clear(handle) {
      const h = handle as OneShot | undefined;
      if (!h || h.timer === undefined) return;
      const t = h.timer;
      h.timer = undefined;
      Timer.clear(t);
    },
  };
}

export const moddableTimer: TimerService = Object.freeze(createModdableTimer());

/** Monotonic milliseconds since boot (`Time.ticks`); not a wall clock. */
export const moddableClock: Clock = Object.freeze({
  now: () => Time.ticks,
});

/** esp_fill_random on the chip, getrandom() on the desktop build (native/mqsec-random.c). */
export const nativeRandom: Random = Object.freeze({
  fill(bytes) {
    if (bytes.length === 0) return;
    try {
      fillRandom(bytes);
    } catch {
      fail('RANDOM', 'native random source failed');
    }
  },
});

/** Log lines to the SDK's trace (serial console on the chip, stdout on the desktop, xsbug when attached). */
export function traceLog(minLevel: 'debug' | 'info' | 'warn' | 'error' = 'info'): Log {
  const order = { debug: 0, info: 1, warn: 2, error: 3 };
  const line = (level: keyof typeof order) => (msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < order[minLevel]) return;
    let extra = '';
    if (fields) {
      try {
        extra = ' ' + JSON.stringify(fields);
      } catch {
        extra = ' {unprintable}';
      }
    }
    trace(`${level} ${msg}${extra}\n`);
  };
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
}

/** Name resolution through lwIP (`Net.resolve`); the ECMA-419 socket wants an IP address. */
export function resolveHost(host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    try {
      Net.resolve(host, (_name, address) => {
        if (address) resolve(address);
        else reject(new MqsecError('CONNECTION_REFUSED', `cannot resolve ${host}`));
      });
    } catch {
      // lwIP's resolve queue is small and throws when full
      reject(new MqsecError('CONNECTION_REFUSED', 'DNS resolver busy'));
    }
  });
}

export function createModdablePlatform(log: Log = traceLog()): Platform {
  const timer = createModdableTimer(log);
  return {
    transport: new ModdableTcpTransport({ TCP: TCP as unknown as Tcp419Constructor, resolve: resolveHost, timer, log }),
    clock: moddableClock,
    timer,
    random: nativeRandom,
    storage: createStorage(),
    log,
  };
}
