/**
 * TLS baselines against Mosquitto: Node's tls module (OpenSSL) as the
 * client, TCP_NODELAY on, the same hand-built MQTT CONNECT as the plain
 * baseline once the TLS handshake is done.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { ConnectPacket } from '../../firmware/mqtt/codec.js';
import type { BenchCredentials } from '../pki.js';
import { connectAndAwaitConnack, connectPacket } from './plain.js';
import type { HandshakeMethod } from './measure.js';

type TlsOptions = tls.ConnectionOptions;

function tlsMethod(name: string, port: number, connect: ConnectPacket, options: () => TlsOptions, check?: (s: tls.TLSSocket) => void): HandshakeMethod {
  return {
    name,
    port,
    dial(p) {
      const startedAt = performance.now();
      const tcp = net.connect({ host: '127.0.0.1', port: p, noDelay: true });
      const socket = tls.connect({ socket: tcp, ...options() });
      if (check) socket.once('secureConnect', () => check(socket));
      return connectAndAwaitConnack(socket, tcp, 'secureConnect', connect, startedAt);
    },
  };
}

const passwordConnect = (c: BenchCredentials, clientId: string) => connectPacket({ clientId, username: c.deviceId, password: c.password });
/** With a client certificate or PSK, Mosquitto takes the identity as username: no credentials in CONNECT. */
const bareConnect = (clientId: string) => connectPacket({ clientId });

function expectVersion(v: string) {
  return (s: tls.TLSSocket) => {
    if (s.getProtocol() !== v) s.destroy(new Error(`negotiated ${s.getProtocol()}, expected ${v}`));
  };
}

/** TLS 1.2, ECDHE-ECDSA, client and server certificates (P-256). */
export function tls12MutualCertMethod(port: number, c: BenchCredentials, clientId = c.deviceId): HandshakeMethod {
  return tlsMethod(
    'tls12_mutual_cert',
    port,
    bareConnect(clientId),
    () => ({ ca: c.pem.ca, cert: c.pem.cert, key: c.pem.key, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', host: '127.0.0.1' }),
    expectVersion('TLSv1.2'),
  );
}

/** TLS 1.3, server certificate only, MQTT username/password in CONNECT. */
export function tls13CertPasswordMethod(port: number, c: BenchCredentials, clientId = c.deviceId): HandshakeMethod {
  return tlsMethod(
    'tls13_cert_password',
    port,
    passwordConnect(c, clientId),
    () => ({ ca: c.pem.ca, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', host: '127.0.0.1' }),
    expectVersion('TLSv1.3'),
  );
}

function pskOptions(c: BenchCredentials, version: 'TLSv1.2' | 'TLSv1.3'): TlsOptions {
  return {
    minVersion: version,
    maxVersion: version,
    ciphers: version === 'TLSv1.2' ? 'PSK-AES128-GCM-SHA256' : 'TLS_AES_128_GCM_SHA256',
    pskCallback: () => ({ psk: c.psk, identity: c.pskIdentity }),
    checkServerIdentity: () => undefined,
  };
}

/** TLS 1.2 PSK (plain PSK key exchange, no forward secrecy): the smallest full TLS handshake. */
export function tls12PskMethod(port: number, c: BenchCredentials, clientId = c.deviceId): HandshakeMethod {
  return tlsMethod('tls12_psk', port, bareConnect(clientId), () => pskOptions(c, 'TLSv1.2'), expectVersion('TLSv1.2'));
}

/** TLS 1.3 PSK (psk_dhe_ke: PSK + ephemeral key exchange, forward secret). */
export function tls13PskMethod(port: number, c: BenchCredentials, clientId = c.deviceId): HandshakeMethod {
  return tlsMethod('tls13_psk', port, bareConnect(clientId), () => pskOptions(c, 'TLSv1.3'), expectVersion('TLSv1.3'));
}

/**
 * TLS session resumption of the mutual-certificate TLS 1.2 connection (the
 * cheapest standard TLS reconnect; `prepare` runs one full handshake to get
 * the session). Every measured connection must really resume.
 */
export function tlsResumptionMethod(port: number, c: BenchCredentials, version: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.2', clientId = c.deviceId): HandshakeMethod {
  let session: Buffer | undefined;
  const base = (): TlsOptions => ({ ca: c.pem.ca, cert: c.pem.cert, key: c.pem.key, minVersion: version, maxVersion: version, host: '127.0.0.1' });
  const method = tlsMethod(
    version === 'TLSv1.2' ? 'tls_resumption' : 'tls13_resumption',
    port,
    bareConnect(clientId),
    () => ({ ...base(), session }),
    (s) => {
      if (!s.isSessionReused()) s.destroy(new Error('TLS session was not resumed'));
      else if (s.getProtocol() !== version) s.destroy(new Error(`negotiated ${s.getProtocol()}, expected ${version}`));
    },
  );
  method.prepare = async () => {
    session = await obtainSession(port, base(), bareConnect(clientId));
  };
  return method;
}

async function obtainSession(port: number, options: TlsOptions, connect: ConnectPacket): Promise<Buffer> {
  const startedAt = performance.now();
  const tcp = net.connect({ host: '127.0.0.1', port, noDelay: true });
  const socket = tls.connect({ socket: tcp, ...options });
  const session = new Promise<Buffer>((resolve) => socket.once('session', resolve));
  const dialed = await connectAndAwaitConnack(socket, tcp, 'secureConnect', connect, startedAt);
  const s = await session;
  dialed.close();
  return s;
}
