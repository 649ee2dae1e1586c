/**
 * Several broker nodes for one simulated device: a Transport wrapper that
 * connects to the device's current node and, when that node does not answer
 * (refused, timed out: a killed node), moves on to the next one in the same
 * connect call, as a device with a list of broker addresses does. The
 * firmware under test is untouched: it asks for its one endpoint and gets a
 * connection to whichever node is up. Each device starts on its own node
 * (round robin over the fleet), so the fleet is spread over the nodes.
 */
import type { Connection, Endpoint, Transport, TransportEvents } from '../../firmware/core/platform.js';

export class FailoverTransport implements Transport {
  private current: number;

  constructor(
    private readonly inner: Transport,
    private readonly nodes: Endpoint[],
    first: number,
    /** Told each time the device moves to another node (index of the new one). */
    private readonly onMove?: (to: number) => void,
  ) {
    if (nodes.length === 0) throw new Error('FailoverTransport: no nodes');
    this.current = first % nodes.length;
  }

  /** The node the next connection goes to first. */
  get node(): number {
    return this.current;
  }

  connect(_endpoint: Endpoint, events: TransportEvents): Connection {
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
            this.current = (this.current + 1) % this.nodes.length;
            this.onMove?.(this.current);
            return attempt();
          }
          if (!connected && error) {
            this.current = (this.current + 1) % this.nodes.length; // start elsewhere next time
            this.onMove?.(this.current);
          }
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
