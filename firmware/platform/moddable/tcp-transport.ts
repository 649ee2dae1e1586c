/**
 * `Transport` over the ECMA-419 TCP socket (`embedded:io/socket/tcp`, ECMA-419
 * 2nd edition, "TCP socket" class pattern) as implemented by the Moddable SDK.
 *
 * Facts this adapter is built around (Moddable SDK modules/io/socket/lwip/tcp.c
 * and its test262-style tests under tests/modules/io/socket/tcp):
 * - the constructor takes an IP `address`, not a host name ("invalid
 *   address" otherwise), so names are resolved first (`resolve`, backed by
 *   `Net.resolve` on the device);
 * - the first `onWritable(bytes)` means the connection is established;
 *   `bytes` is how much may be written now, and `write` THROWS ("would
 *   block") beyond that. So writes go to a bounded queue that is drained in
 *   `onWritable`;
 * - `onReadable(bytes)`: `read(bytes)` returns an ArrayBuffer;
 * - `onError()` reports a failed connect, a reset or the peer's close.
 *
 * The socket constructor and the resolver are injected, so this logic is
 * tested under Node against a model of the socket (test/moddable).
 */
import { MqsecError } from '../../core/errors.js';
import type { Connection, Endpoint, Log, Timer, Transport, TransportEvents } from '../../core/platform.js';
import { silentLog } from '../../core/platform.js';
import { isIpv4Literal } from '../../core/ascii.js';

/** The part of the ECMA-419 TCP socket used here. */
export interface Tcp419 {
  read(byteLength?: number): number | ArrayBuffer | undefined;
  write(value: ArrayBuffer | Uint8Array): void;
  close(): void;
}

export interface Tcp419Options {
  address: string;
  port: number;
  nodelay?: boolean;
  format?: 'buffer';
  onReadable?: (this: Tcp419, bytes: number) => void;
  onWritable?: (this: Tcp419, bytes: number) => void;
  onError?: (this: Tcp419) => void;
}

export type Tcp419Constructor = new (options: Tcp419Options) => Tcp419;

export interface ModdableTcpTransportOptions {
  TCP: Tcp419Constructor;
  /** Host name -> IPv4 address; rejects when the name does not resolve. */
  resolve(host: string): Promise<string>;
  /** Used to report close() asynchronously (never re-enter the caller). */
  timer: Timer;
  log?: Log;
  /** Bytes that may wait in the send queue; beyond it the connection fails with QUEUE_FULL. */
  maxQueuedBytes?: number;
}

export { isIpv4Literal };

/** One connection: the send queue and the once-only close. */
class TcpConnection implements Connection {
  private socket: Tcp419 | undefined;
  private queue: Uint8Array[] = [];
  private queued = 0;
  private writable = 0;
  private connected = false;
  private closed = false;

  constructor(
    private readonly o: ModdableTcpTransportOptions,
    private readonly events: TransportEvents,
  ) {}

  open(endpoint: Endpoint): void {
    const addressOf = isIpv4Literal(endpoint.host) ? Promise.resolve(endpoint.host) : this.o.resolve(endpoint.host);
    addressOf.then(
      (address) => {
        if (this.closed) return;
        this.createSocket(address, endpoint.port);
      },
      () => this.finish(new MqsecError('CONNECTION_REFUSED', `cannot resolve ${endpoint.host}`)),
    );
  }

  private createSocket(address: string, port: number): void {
    // Socket callbacks run with `this` = the socket; route them to this connection.
    const self = this;
    try {
      this.socket = new this.o.TCP({
        address,
        port,
        nodelay: true, // small MQTT packets: Nagle would add a round trip to every handshake
        format: 'buffer',
        onWritable(bytes: number) {
          self.onWritable(bytes);
        },
        onReadable(bytes: number) {
          self.onReadable(this, bytes);
        },
        onError() {
          self.finish(new MqsecError('CONNECTION_CLOSED', self.connected ? 'connection lost' : 'connect failed'));
        },
      });
    } catch (e) {
      this.finish(new MqsecError('CONNECTION_REFUSED', 'socket creation failed'));
    }
  }

  private onWritable(bytes: number): void {
    if (this.closed) return;
    this.writable = bytes;
    if (!this.connected) {
      this.connected = true;
      try {
        this.events.onConnect();
      } catch (e) {
        this.o.log?.error('onConnect threw', { message: String(e) });
      }
      if (this.closed) return;
    }
    this.drain();
  }

  private onReadable(socket: Tcp419, bytes: number): void {
    if (this.closed) return;
    let data: ReturnType<Tcp419['read']>;
    try {
      data = socket.read(bytes);
    } catch {
      return this.finish(new MqsecError('CONNECTION_CLOSED', 'read failed'));
    }
    if (!(data instanceof ArrayBuffer) || data.byteLength === 0) return;
    try {
      this.events.onData(new Uint8Array(data));
    } catch (e) {
      // The protocol layer must not throw out of onData; if it does, fail closed.
      this.finish(new MqsecError('INTERNAL', 'onData threw'));
    }
  }

  write(bytes: Uint8Array): void {
    if (this.closed || bytes.length === 0) return;
    const max = this.o.maxQueuedBytes ?? 8192;
    if (this.queued + bytes.length > max) {
      this.finish(new MqsecError('QUEUE_FULL', `send queue over ${max} bytes`));
      return;
    }
    this.queue.push(bytes.slice()); // the caller may reuse its buffer
    this.queued += bytes.length;
    if (this.connected) this.drain();
  }

  /** Writes as much of the queue as the socket accepts now; the rest waits for onWritable. */
  private drain(): void {
    const socket = this.socket;
    while (socket && !this.closed && this.queue.length > 0 && this.writable > 0) {
      const head = this.queue[0];
      const n = Math.min(head.length, this.writable);
      const chunk = n === head.length ? head : head.subarray(0, n);
      try {
        socket.write(chunk);
      } catch {
        // "would block": the socket's buffer is smaller than announced; wait for the next onWritable.
        this.writable = 0;
        return;
      }
      this.writable -= n;
      this.queued -= n;
      if (n === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(n);
    }
  }

  close(): void {
    if (this.closed) return;
    // Report asynchronously: the caller (the MQTT client) may be in the middle of its own state change.
    this.o.timer.set(() => this.finish(undefined), 0);
    this.closed = true;
    this.shutSocket();
  }

  private shutSocket(): void {
    const s = this.socket;
    this.socket = undefined;
    this.queue = [];
    this.queued = 0;
    try {
      s?.close();
    } catch {
      // already closed by the peer
    }
  }

  private reported = false;

  private finish(error: MqsecError | undefined): void {
    if (this.reported) return;
    this.reported = true;
    this.closed = true;
    this.shutSocket();
    try {
      this.events.onClose(error);
    } catch (e) {
      this.o.log?.error('onClose threw', { message: String(e) });
    }
  }
}

export class ModdableTcpTransport implements Transport {
  constructor(private readonly o: ModdableTcpTransportOptions) {
    o.log ??= silentLog;
  }

  connect(endpoint: Endpoint, events: TransportEvents): Connection {
    const c = new TcpConnection(this.o, events);
    c.open(endpoint);
    return c;
  }
}
