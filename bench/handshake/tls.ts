/**
 * TLS baselines against Mosquitto: Node's tls module (OpenSSL) as the
 * client, TCP_NODELAY on, the same hand-built MQTT CONNECT as the plain
 * baseline once the TLS handshake is done.
 *
 * Each method builds its TLS context (CA, client certificate and key,
 * versions, ciphers) once, as a real client does: passing PEM text to
 * `tls.connect` instead makes Node parse it and build a new OpenSSL context
 * for every connection, which costs the client more CPU than the server's
 * whole resumed handshake and made the client the bottleneck of the rate
 * runs. Resuming methods keep the newest session the server handed out.
 */
import { constants as cryptoConstants } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { ConnectPacket } from '../../firmware/mqtt/codec.js';
import type { BenchCredentials } from '../pki.js';
import { connectAndAwaitConnack, connectPacket } from './plain.js';
import type { HandshakeMethod } from './measure.js';

type TlsOptions = tls.ConnectionOptions;
/** What the TLS methods need of the throw-away credentials (serialisable, for the rate workers). */
export type TlsCredentials = Pick<BenchCredentials, 'pem' | 'deviceId' | 'password' | 'pskIdentity' | 'psk'>;
type TlsVersion = 'TLSv1.2' | 'TLSv1.3';

/** Per-connection options on top of the method's one secure context. */
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

const passwordConnect = (c: TlsCredentials, clientId: string) => connectPacket({ clientId, username: c.deviceId, password: c.password });
/** With a client certificate or PSK, Mosquitto takes the identity as username: no credentials in CONNECT (22 B with an 8-character client id). */
const bareConnect = (clientId: string) => connectPacket({ clientId });

function expectVersion(v: string) {
  return (s: tls.TLSSocket) => {
    if (s.getProtocol() !== v) s.destroy(new Error(`negotiated ${s.getProtocol()}, expected ${v}`));
  };
}

function certContext(c: TlsCredentials, version: TlsVersion, clientCert: boolean): tls.SecureContext {
  return tls.createSecureContext({
    ca: c.pem.ca,
    ...(clientCert ? { cert: c.pem.cert, key: c.pem.key } : {}),
    minVersion: version,
    maxVersion: version,
  });
}

/** TLS 1.2, ECDHE-ECDSA, client and server certificates (P-256). */
export function tls12MutualCertMethod(port: number, c: TlsCredentials, clientId = c.deviceId): HandshakeMethod {
  const secureContext = certContext(c, 'TLSv1.2', true);
  return tlsMethod('tls12_mutual_cert', port, bareConnect(clientId), () => ({ secureContext, host: '127.0.0.1' }), expectVersion('TLSv1.2'));
}

/** TLS 1.3, server certificate only, MQTT username/password in CONNECT. */
export function tls13CertPasswordMethod(port: number, c: TlsCredentials, clientId = c.deviceId): HandshakeMethod {
  const secureContext = certContext(c, 'TLSv1.3', false);
  return tlsMethod('tls13_cert_password', port, passwordConnect(c, clientId), () => ({ secureContext, host: '127.0.0.1' }), expectVersion('TLSv1.3'));
}

/**
 * `sessionTickets: false` sets SSL_OP_NO_TICKET: the client does not offer
 * the session-ticket extension, so a TLS 1.2 server sends no
 * NewSessionTicket (about 200 B that only a client planning to resume needs).
 */
function pskContext(version: TlsVersion, sessionTickets = true): tls.SecureContext {
  return tls.createSecureContext({
    minVersion: version,
    maxVersion: version,
    ciphers: version === 'TLSv1.2' ? 'PSK-AES128-GCM-SHA256' : 'TLS_AES_128_GCM_SHA256',
    ...(sessionTickets ? {} : { secureOptions: cryptoConstants.SSL_OP_NO_TICKET }),
  });
}

function pskOptions(c: TlsCredentials, secureContext: tls.SecureContext): TlsOptions {
  return {
    secureContext,
    pskCallback: () => ({ psk: c.psk, identity: c.pskIdentity }),
    checkServerIdentity: () => undefined,
  };
}

/**
 * TLS 1.2 PSK (plain PSK key exchange, no forward secrecy): the smallest full
 * TLS handshake. With `sessionTickets` (Node's default) the server adds a
 * NewSessionTicket; without, the bytes are the handshake alone.
 */
export function tls12PskMethod(port: number, c: TlsCredentials, clientId = c.deviceId, sessionTickets = true): HandshakeMethod {
  const ctx = pskContext('TLSv1.2', sessionTickets);
  return tlsMethod(sessionTickets ? 'tls12_psk' : 'tls12_psk_no_ticket', port, bareConnect(clientId), () => pskOptions(c, ctx), expectVersion('TLSv1.2'));
}

/** TLS 1.3 PSK (psk_dhe_ke: PSK + ephemeral key exchange, forward secret). */
export function tls13PskMethod(port: number, c: TlsCredentials, clientId = c.deviceId): HandshakeMethod {
  const ctx = pskContext('TLSv1.3');
  return tlsMethod('tls13_psk', port, bareConnect(clientId), () => pskOptions(c, ctx), expectVersion('TLSv1.3'));
}

/**
 * TLS session resumption of the mutual-certificate connection (the cheapest
 * standard TLS reconnect; `prepare` runs one full handshake to get a
 * session). The client keeps the newest session the server sends, as a real
 * client does. Every measured connection must really resume.
 */
export function tlsResumptionMethod(port: number, c: TlsCredentials, version: TlsVersion = 'TLSv1.2', clientId = c.deviceId): HandshakeMethod {
  const secureContext = certContext(c, version, true);
  let session: Buffer | undefined;
  const options = (): TlsOptions => ({ secureContext, host: '127.0.0.1', session });
  const connect = bareConnect(clientId);
  const method: HandshakeMethod = {
    name: version === 'TLSv1.2' ? 'tls_resumption' : 'tls13_resumption',
    port,
    dial(p) {
      const startedAt = performance.now();
      const tcp = net.connect({ host: '127.0.0.1', port: p, noDelay: true });
      const socket = tls.connect({ socket: tcp, ...options() });
      socket.on('session', (s: Buffer) => (session = s));
      socket.once('secureConnect', () => {
        if (!socket.isSessionReused()) socket.destroy(new Error('TLS session was not resumed'));
        else if (socket.getProtocol() !== version) socket.destroy(new Error(`negotiated ${socket.getProtocol()}, expected ${version}`));
      });
      return connectAndAwaitConnack(socket, tcp, 'secureConnect', connect, startedAt);
    },
  };
  method.prepare = async () => {
    // once: a resumed TLS 1.2 handshake need not bring a new session, so waiting for one could hang
    session ??= await obtainSession(port, options(), connect);
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
