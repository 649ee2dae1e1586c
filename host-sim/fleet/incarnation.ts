/**
 * One power-on of a simulated ESP32: the timers and connections it owns, so
 * that a deep sleep or a power cut can end everything at once, like RAM being
 * lost, while Storage (NVS) survives into the next incarnation.
 */
import type { Connection, Endpoint, Storage, Timer, TimerHandle, Transport, TransportEvents } from '../../firmware/core/platform.js';
import { MqsecError } from '../../firmware/core/errors.js';

export class Incarnation {
  private alive = true;
  private readonly handles = new Set<TimerHandle>();
  private readonly connections = new Set<Connection>();

  constructor(private readonly hostTimer: Timer, private readonly hostTransport: Transport) {}

  get isAlive(): boolean {
    return this.alive;
  }

  /** A Timer whose callbacks never run after the incarnation ends. */
  readonly timer: Timer = {
    set: (callback, ms) => {
      if (!this.alive) return undefined;
      const h = this.hostTimer.set(() => {
        this.handles.delete(h);
        if (this.alive) callback();
      }, ms);
      this.handles.add(h);
      return h;
    },
    clear: (h) => {
      if (h === undefined) return;
      this.handles.delete(h);
      this.hostTimer.clear(h);
    },
  };

  /** A Transport whose connections are torn down when the incarnation ends, and stay silent after. */
  readonly transport: Transport = {
    connect: (endpoint: Endpoint, events: TransportEvents): Connection => {
      if (!this.alive) {
        return { write() {}, close() {} };
      }
      const guard = (fn: () => void) => {
        if (this.alive) fn();
      };
      const conn = this.hostTransport.connect(endpoint, {
        onConnect: () => guard(() => events.onConnect()),
        onData: (c) => guard(() => events.onData(c)),
        onClose: (e) => {
          this.connections.delete(conn);
          guard(() => events.onClose(e));
        },
      });
      this.connections.add(conn);
      return conn;
    },
  };

  /**
   * Storage as this power-on sees it: once the power is off, no new read or
   * write starts (a write already under way completes atomically or not, as
   * on flash), so leftover code of a dead incarnation cannot overwrite what
   * the next boot has written.
   */
  storage(nvs: Storage): Storage {
    const off = () => Promise.reject(new MqsecError('STORAGE', 'powered down'));
    return {
      get: (k) => (this.alive ? nvs.get(k) : off()),
      put: (k, v) => (this.alive ? nvs.put(k, v) : off()),
      delete: (k) => (this.alive ? nvs.delete(k) : off()),
    };
  }

  /** Power off: no callback of this incarnation runs again; sockets are cut. */
  end(): void {
    if (!this.alive) return;
    this.alive = false;
    for (const h of this.handles) this.hostTimer.clear(h);
    this.handles.clear();
    for (const c of this.connections) c.close();
    this.connections.clear();
  }
}
