/**
 * The TLS listener's certificate (for accounts: unmodified MQTT clients send
 * their password in CONNECT, so off loopback it must travel inside TLS).
 *
 * Either the operator's own files (`certFile`/`keyFile`, PEM), or a
 * self-signed certificate generated at first start into `<data>/tls/` by the
 * Debian `openssl` tool (ECDSA P-256, SHA-256, 825 days, subjectAltName for
 * localhost, the loopback addresses, the host name, the listen address and any
 * extra names). The key file is created empty with mode 0600 (exclusive
 * create) before openssl writes into it, so it is never readable by others,
 * and an existing key file readable by group or others is refused, like
 * master.key. Clients trust the generated certificate by giving `cert.pem` as
 * their CA file (`mosquitto_sub --cafile`, MQTT.js `ca`).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { MqsecError } from '../firmware/core/errors.js';

export const TLS_DIR = 'tls';
export const TLS_CERT_FILE = 'cert.pem';
export const TLS_KEY_FILE = 'key.pem';

export interface TlsFiles {
  /** PEM certificate (chain) file; with keyFile. Omitted: generated into the data directory at first start. */
  certFile?: string;
  keyFile?: string;
  /** Extra DNS names or IP addresses for a generated certificate. */
  altNames?: string[];
}

export interface TlsCredentials {
  cert: Buffer;
  key: Buffer;
  certPath: string;
  /** True when this start generated the certificate. */
  generated: boolean;
  /** SHA-256 fingerprint (for the log, and for operators to compare). */
  fingerprint: string;
}

function readKey(path: string): Buffer {
  if ((statSync(path).mode & 0o077) !== 0) throw new MqsecError('STORAGE', `TLS key file ${path} is readable by group/others (chmod 600 it)`);
  return readFileSync(path);
}

function credentials(certPath: string, keyPath: string, generated: boolean): TlsCredentials {
  const cert = readFileSync(certPath);
  const key = readKey(keyPath);
  let fingerprint: string;
  try {
    fingerprint = new X509Certificate(cert).fingerprint256;
  } catch (e) {
    throw new MqsecError('STORAGE', `TLS certificate ${certPath} is not a PEM certificate: ${(e as Error).message}`);
  }
  return { cert, key, certPath, generated, fingerprint };
}

/** The subjectAltName list of a generated certificate. */
export function subjectAltNames(listenHost: string, extra: string[] = []): string {
  const names = new Set(['localhost', '127.0.0.1', '::1', hostname(), ...extra]);
  if (listenHost !== '0.0.0.0' && listenHost !== '::') names.add(listenHost);
  return [...names]
    .filter((n) => n.length > 0 && /^[A-Za-z0-9.:*-]+$/.test(n))
    .map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`))
    .join(',');
}

export function loadOrCreateTlsCert(dataDir: string, listenHost: string, files: TlsFiles = {}): TlsCredentials {
  if (files.certFile || files.keyFile) {
    if (!files.certFile || !files.keyFile) throw new MqsecError('STORAGE', 'TLS needs both a certificate file and a key file');
    return credentials(files.certFile, files.keyFile, false);
  }
  const dir = join(dataDir, TLS_DIR);
  const certPath = join(dir, TLS_CERT_FILE);
  const keyPath = join(dir, TLS_KEY_FILE);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(keyPath, 'wx', 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return credentials(certPath, keyPath, false);
  }
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-sha256', '-nodes', '-days', '825',
        '-subj', '/CN=mqsec broker', '-addext', `subjectAltName=${subjectAltNames(listenHost, files.altNames)}`,
        '-keyout', keyPath, '-out', certPath],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (e) {
    rmSync(keyPath, { force: true });
    rmSync(certPath, { force: true });
    const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim();
    throw new MqsecError('STORAGE', `could not generate the TLS certificate with openssl: ${stderr || (e as Error).message}`);
  }
  return credentials(certPath, keyPath, true);
}
