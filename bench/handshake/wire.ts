/**
 * One MQTT connection at the packet level for the handshake benchmarks:
 * a socket (TCP or TLS) plus the firmware's streaming parser. Every method
 * writes the same hand-built packets through the firmware codec
 * (firmware/mqtt/codec.ts), so no client library adds or leaves out bytes.
 */
import type net from 'node:net';
import { MqttParser, encodePacket, type MqttPacket } from '../../firmware/mqtt/codec.js';

export interface PacketSocket {
  /** The socket application bytes go through (the TLS socket for TLS). */
  socket: net.Socket;
  send(packet: MqttPacket): void;
  /** Next packet received (in order); rejects when the connection closes first. */
  next(): Promise<MqttPacket>;
  /** Sends DISCONNECT and closes. */
  close(): void;
}

/**
 * Wraps a socket that is connecting. Resolves with the times of the TCP
 * connect and of `readyEvent` ('connect' for TCP, 'secureConnect' for TLS).
 */
export function packetSocket(socket: net.Socket, tcp: net.Socket, readyEvent: 'connect' | 'secureConnect'): Promise<{ ps: PacketSocket; tcpConnectedAt: number }> {
  const parser = new MqttParser({ maxPacketSize: 64 * 1024 });
  const queue: MqttPacket[] = [];
  const waiting: Array<{ resolve(p: MqttPacket): void; reject(e: Error): void }> = [];
  let failure: Error | undefined;
  const failAll = (e: Error) => {
    if (!failure) failure = e;
    for (const w of waiting.splice(0)) w.reject(failure);
  };
  socket.on('data', (d: Buffer) => {
    try {
      parser.feed(new Uint8Array(d.buffer, d.byteOffset, d.length), (p) => {
        const w = waiting.shift();
        if (w) w.resolve(p);
        else queue.push(p);
      });
    } catch (e) {
      failAll(e as Error);
      socket.destroy();
    }
  });
  socket.on('error', (e) => failAll(e));
  socket.on('close', () => failAll(new Error('connection closed')));
  const ps: PacketSocket = {
    socket,
    send: (p) => void socket.write(encodePacket(p)),
    next: () =>
      new Promise((resolve, reject) => {
        const p = queue.shift();
        if (p) resolve(p);
        else if (failure) reject(failure);
        else waiting.push({ resolve, reject });
      }),
    close: () => {
      if (!socket.destroyed) socket.end(encodePacket({ type: 'disconnect' }));
    },
  };
  return new Promise((resolve, reject) => {
    let tcpConnectedAt = NaN;
    tcp.once('connect', () => (tcpConnectedAt = performance.now()));
    socket.once(readyEvent, () => resolve({ ps, tcpConnectedAt }));
    socket.once('error', reject);
    socket.once('close', () => reject(new Error('connection closed before it was ready')));
  });
}

export async function expectConnackAccepted(ps: PacketSocket): Promise<void> {
  const p = await ps.next();
  if (p.type !== 'connack') throw new Error(`expected CONNACK, got ${p.type}`);
  if (p.returnCode !== 0) throw new Error(`CONNACK refused with return code ${p.returnCode}`);
}
