/**
 * A Duplex that sits between a TCP socket and Aedes and enforces the
 * pre-parse limits: every received chunk passes the FrameGuard before Aedes
 * sees it, a packet that starts must finish within `packetTimeoutMs`
 * (slowloris-style trickling), and back-pressure from Aedes pauses the socket.
 *
 * Outgoing: writes go straight to the socket and complete at once, so Aedes
 * never waits for one slow reader (its drain wait would hold up delivery to
 * everyone through the shared emitter); instead a client with more than
 * `maxOutgoingBytes` queued in user space is disconnected as a slow consumer.
 */
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { FrameGuard, type GuardVerdict } from './frame-guard.js';

export type RejectReason = Extract<GuardVerdict, { ok: false }>['reason'] | 'slow-packet' | 'slow-consumer';

export interface GuardOptions {
  maxPacketSize: number;
  packetTimeoutMs: number;
  maxOutgoingBytes: number;
  onReject(reason: RejectReason): void;
}

export class GuardedSocket extends Duplex {
  readonly remoteAddress: string;
  /** True on the TLS listener (the socket is a TLSSocket): password logins are acceptable from anywhere. */
  readonly encrypted: boolean;
  private readonly guard: FrameGuard;
  private packetTimer: NodeJS.Timeout | undefined;
  private flowing = true;
  private inputStopped = false;

  constructor(
    private readonly socket: Socket,
    private readonly opts: GuardOptions,
  ) {
    // decodeStrings off: mqtt-packet writes each topic as a string, and
    // turning it into a Buffer of its own first only to copy it into the
    // batch below was a per-packet cost; _write and _writev take both.
    super({ allowHalfOpen: false, decodeStrings: false });
    this.remoteAddress = socket.remoteAddress ?? 'unknown';
    this.encrypted = (socket as Socket & { encrypted?: boolean }).encrypted === true;
    this.guard = new FrameGuard(opts.maxPacketSize);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  private onData(chunk: Buffer): void {
    const verdict = this.guard.feed(chunk);
    if (!verdict.ok) {
      this.reject(verdict.reason);
      return;
    }
    if (!this.push(chunk)) {
      // Our own back-pressure: the time Aedes keeps us paused must not count
      // against the client as trickling.
      this.socket.pause();
      this.flowing = false;
    }
    this.armPacketTimer();
  }

  private armPacketTimer(): void {
    if (this.guard.midPacket && this.flowing) {
      if (!this.packetTimer) {
        this.packetTimer = setTimeout(() => this.reject('slow-packet'), this.opts.packetTimeoutMs);
        this.packetTimer.unref();
      }
    } else if (this.packetTimer) {
      clearTimeout(this.packetTimer);
      this.packetTimer = undefined;
    }
  }

  private reject(reason: RejectReason): void {
    if (this.destroyed) return;
    this.opts.onReject(reason);
    this.socket.destroy();
    this.destroy();
  }

  /**
   * Graceful shutdown: read nothing more from this client, while what was
   * already read is still processed and answered (PUBACKs flushed).
   */
  /**
   * Raises the slow-consumer bound of this one connection: the key service's
   * link (broker/keyservice-link.ts) is sent the whole policy in one frame,
   * which grows with the fleet, and it is a privileged peer, not a subscriber
   * that might stall the broker.
   */
  raiseOutgoingBound(bytes: number): void {
    this.opts.maxOutgoingBytes = Math.max(this.opts.maxOutgoingBytes, bytes);
  }

  stopInput(): void {
    this.inputStopped = true;
    this.socket.pause();
    if (this.packetTimer) clearTimeout(this.packetTimer);
    this.packetTimer = undefined;
  }

  override _read(): void {
    if (this.inputStopped) return;
    if (!this.flowing) {
      this.flowing = true;
      this.socket.resume();
      this.armPacketTimer();
    }
  }

  override _write(chunk: Buffer | string, enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) return cb();
    if (typeof chunk === 'string') this.socket.write(chunk, enc);
    else this.socket.write(chunk);
    if (this.socket.writableLength > this.opts.maxOutgoingBytes) this.reject('slow-consumer');
    cb();
  }

  /**
   * Aedes (through mqtt-packet) corks this stream while it generates a packet
   * and uncorks on the next tick, so a packet's fragments (fixed header,
   * topic, payload, ...) arrive here as one batch: they go to the socket as one
   * write instead of one write (and one syscall) per fragment, which was the
   * largest single cost of the broker. Same checks as `_write`.
   */
  override _writev(chunks: Array<{ chunk: Buffer | string; encoding: BufferEncoding }>, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) return cb();
    let total = 0;
    for (let i = 0; i < chunks.length; i++) {
      const { chunk, encoding } = chunks[i]!;
      total += typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : chunk.length;
    }
    const batch = Buffer.allocUnsafe(total); // every byte is overwritten below
    let off = 0;
    for (let i = 0; i < chunks.length; i++) {
      const { chunk, encoding } = chunks[i]!;
      if (typeof chunk === 'string') off += batch.write(chunk, off, encoding);
      else {
        batch.set(chunk, off);
        off += chunk.length;
      }
    }
    this.socket.write(batch);
    if (this.socket.writableLength > this.opts.maxOutgoingBytes) this.reject('slow-consumer');
    cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    if (this.packetTimer) clearTimeout(this.packetTimer);
    this.socket.destroy();
    cb(err);
  }
}
