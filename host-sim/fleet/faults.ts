/**
 * Fault injection for the simulated fleet, as a Transport wrapper so the
 * firmware code under test is untouched: added latency (both directions,
 * order preserved) and random connection drops (an outgoing write is lost and
 * the connection cut instead, which lands drops in the middle of handshakes
 * and QoS 1 exchanges, the cases that matter).
 */
import type { Connection, Endpoint, Timer, Transport, TransportEvents } from '../../firmware/core/platform.js';
import { MqsecError } from '../../firmware/core/errors.js';

export interface FaultOptions {
  /** Probability in [0,1] that an outgoing write cuts the connection instead. */
  dropProbability?: number;
  /** One-way latency added to writes and to received data. */
  latencyMs?: number;
  rand?: () => number;
  timer: Timer;
  /** Observes the bytes of each connection (attackers replay captured traffic); `conn` identifies the connection. */
  tap?: (direction: 'out' | 'in', bytes: Uint8Array, conn: object) => void;
  onDrop?: () => void;
}

export class FaultyTransport implements Transport {
  constructor(private readonly inner: Transport, private readonly opts: FaultOptions) {}

  connect(endpoint: Endpoint, events: TransportEvents): Connection {
    const { latencyMs = 0, dropProbability = 0, timer, tap, onDrop } = this.opts;
    const rand = this.opts.rand ?? Math.random;
    let closed = false;
    const connId = {};
    const later = (fn: () => void) => (latencyMs > 0 ? timer.set(fn, latencyMs) : fn());
    const inner = this.inner.connect(endpoint, {
      onConnect: () => later(() => !closed && events.onConnect()),
      onData: (chunk) => {
        const copy = chunk.slice();
        tap?.('in', copy, connId);
        later(() => !closed && events.onData(copy));
      },
      onClose: (error) =>
        later(() => {
          if (closed) return;
          closed = true;
          events.onClose(error);
        }),
    });
    return {
      write: (bytes) => {
        if (closed) return;
        if (dropProbability > 0 && rand() < dropProbability) {
          onDrop?.();
          closed = true;
          inner.close();
          // the device sees an abrupt loss, as when Wi-Fi drops mid-exchange
          later(() => events.onClose(new MqsecError('CONNECTION_CLOSED', 'simulated drop')));
          return;
        }
        const copy = bytes.slice();
        tap?.('out', copy, connId);
        later(() => !closed && inner.write(copy));
      },
      close: () => inner.close(),
    };
  }
}
