/** Baseline: plain MQTT 3.1.1 CONNECT with username/password, no TLS. */
import net from 'node:net';
import type { ConnectPacket } from '../../firmware/mqtt/codec.js';
import type { DialTimes, HandshakeMethod } from './measure.js';
import { expectConnackAccepted, packetSocket, type PacketSocket } from './wire.js';

export interface PlainCredentials {
  clientId: string;
  username?: string;
  password?: string;
}

export function connectPacket(c: PlainCredentials): ConnectPacket {
  return {
    type: 'connect',
    clientId: c.clientId,
    cleanSession: true,
    keepalive: 60,
    username: c.username,
    password: c.password === undefined ? undefined : new TextEncoder().encode(c.password),
  };
}

/** Sends CONNECT once the (TCP or TLS) socket is up and resolves at CONNACK 0. Shared by the TLS methods. */
export async function connectAndAwaitConnack(
  socket: net.Socket,
  tcp: net.Socket,
  readyEvent: 'connect' | 'secureConnect',
  connect: ConnectPacket,
  startedAt: number,
): Promise<DialTimes & { ps: PacketSocket }> {
  try {
    const { ps, tcpConnectedAt } = await packetSocket(socket, tcp, readyEvent);
    ps.send(connect);
    await expectConnackAccepted(ps);
    return { startedAt, tcpConnectedAt, readyAt: performance.now(), close: ps.close, ps };
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

export function plainMqttMethod(port: number, c: PlainCredentials, name = 'mqtt_plain'): HandshakeMethod {
  const connect = connectPacket(c);
  return {
    name,
    port,
    dial(p) {
      const startedAt = performance.now();
      const socket = net.connect({ host: '127.0.0.1', port: p, noDelay: true });
      return connectAndAwaitConnack(socket, socket, 'connect', connect, startedAt);
    },
  };
}
