/**
 * Several broker nodes for one simulated device: a Transport wrapper that
 * connects to the device's current node and, when that node does not answer
 * (refused, timed out: a killed node), moves on to the next one in the same
 * connect call, as a device with a list of broker addresses does. The
 * firmware under test is untouched: it asks for its one endpoint and gets a
 * connection to whichever node is up. Each device has a home node (round
 * robin over the fleet), so the fleet is spread over the nodes; after a move
 * it stays where it got in, and tries its home node first again once
 * `homeRetryMs` have passed, so a restarted node gets its devices back as
 * they reconnect (a device that always tried home first would pay a connect
 * timeout on every connection while its home node is down).
 */
import type { Connection, Endpoint, Transport, TransportEvents } from '../../firmware/core/platform.js';

export class FailoverTransport implements Transport {
  private current: number;
  private readonly home: number;
  private movedAt = 0;

  constructor(
    private readonly inner: Transport,
    private readonly nodes: Endpoint[],
    first: number,
    /** Told each time the device moves to another node (index of the new one). */
    private readonly onMove?: (to: number) => void,
    private readonly homeRetryMs = 30_000,
    private readonly now: () => number = Date.now,
  ) {
    if (nodes.length === 0) throw new Error('FailoverTransport: no nodes');
    this.current = this.home = first % nodes.length;
  }

  private move(): void {
    this.current = (this.current + 1) % this.nodes.length;
    this.movedAt = this.now();
    this.onMove?.(this.current);
  }

  /** The node the next connection goes to first. */
  get node(): number {
    return this.current;
  }

  connect(_endpoint: Endpoint, events: TransportEvents): Connection {
    if (this.current !== this.home && this.now() - this.movedAt >= this.homeRetryMs) this.current = this.home;
    let tries = 0;
    let conn: Connection | undefined;
    let closed = false;
    let connected = false;
    const attempt = () => {
      tries++;
      conn = this.inner.connect(this.nodes[this.current]!, {
        onConnect: () => {
          connected = true;
          events.onConnect();
        },
        onData: (chunk) => events.onData(chunk),
        onClose: (error) => {
          if (closed) return;
          if (!connected && error && tries < this.nodes.length) {
            // that node is not there: the next one, at once
            this.move();
            return attempt();
          }
          if (!connected && error) this.move(); // start elsewhere next time
          closed = true;
          events.onClose(error);
        },
      });
    };
    attempt();
    return {
      write: (bytes) => conn?.write(bytes),
      close: () => {
        if (!connected) closed = true;
        conn?.close();
        if (!connected) events.onClose();
      },
    };
  }
}
