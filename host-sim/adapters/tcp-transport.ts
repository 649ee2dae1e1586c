/**
 * Transport over Node's net sockets, for the host simulator and tests.
 * TCP_NODELAY is on: MQTT packets are small and latency-bound, and Nagle's
 * algorithm would hold a PUBLISH back behind an unacknowledged CONNECT.
 */
import net from 'node:net';
import { MqsecError } from '../../firmware/core/errors.js';
import type { Connection, Endpoint, Transport, TransportEvents } from '../../firmware/core/platform.js';

export interface NodeTcpTransportOptions {
  /** Fail a connect attempt that has not completed after this long (0 = no limit). */
  connectTimeoutMs?: number;
}

export class NodeTcpTransport implements Transport {
  constructor(private readonly options: NodeTcpTransportOptions = {}) {}

  /**
   * Opens a connection. Events arrive asynchronously; `onClose` comes exactly
   * once: without an error after a local close(), with CONNECTION_CLOSED when
   * the peer closed or the socket failed.
   */
  connect(endpoint: Endpoint, events: TransportEvents): Connection {
    const socket = net.connect({ host: endpoint.host, port: endpoint.port });
    socket.setNoDelay(true);
    let closedLocally = false;
    let failure: MqsecError | undefined;
    let closed = false;
    const timeoutMs = this.options.connectTimeoutMs ?? 0;
    if (timeoutMs > 0) {
      socket.setTimeout(timeoutMs, () => {
        failure = new MqsecError('CONNECTION_CLOSED', `connect to ${endpoint.host}:${endpoint.port} timed out`);
        socket.destroy();
      });
    }
    socket.on('connect', () => {
      socket.setTimeout(0);
      events.onConnect();
    });
    socket.on('data', (b: Buffer) => events.onData(new Uint8Array(b.buffer, b.byteOffset, b.byteLength)));
    socket.on('error', (e: Error) => {
      failure ??= new MqsecError('CONNECTION_CLOSED', e.message);
    });
    socket.on('close', () => {
      if (closed) return;
      closed = true;
      events.onClose(closedLocally ? undefined : (failure ?? new MqsecError('CONNECTION_CLOSED', 'closed by peer')));
    });
    return {
      write(bytes: Uint8Array): void {
        if (!closed && !socket.destroyed) socket.write(bytes);
      },
      close(): void {
        if (closed || socket.destroyed) return;
        closedLocally = true;
        if (socket.connecting) {
          socket.destroy();
          return;
        }
        // end() flushes queued bytes (a DISCONNECT) before the FIN; destroy if the peer
        // does not close its side soon (a hostile peer could keep sending forever).
        socket.end();
        const force = setTimeout(() => socket.destroy(), 1000);
        force.unref();
        socket.once('close', () => clearTimeout(force));
      },
    };
  }
}
