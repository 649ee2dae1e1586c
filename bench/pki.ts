/**
 * Throw-away credentials for the TLS baselines, generated with the openssl
 * CLI into a fresh temporary directory on every run (nothing is committed):
 * an ECDSA P-256 CA, a server certificate for 127.0.0.1, a client
 * certificate whose CN is the device id, a TLS-PSK key and a Mosquitto
 * password file.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removeOnExit } from './net.js';

export interface BenchCredentials {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** PEM contents, for Node's tls options. */
  pem: { ca: string; cert: string; key: string };
  deviceId: string;
  /** MQTT password for the password-based baselines: 16 random hex characters. */
  password: string;
  pskIdentity: string;
  psk: Buffer;
  pskFile: string;
  passwordFile: string;
  cleanup(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function generateCredentials(deviceId: string): BenchCredentials {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqsec-bench-'));
  const cleanup = removeOnExit(dir, (d) => fs.rmSync(d, { recursive: true, force: true }));
  try {
    return generateInto(dir, deviceId, cleanup);
  } catch (e) {
    cleanup();
    throw e;
  }
}

function generateInto(dir: string, deviceId: string, cleanup: () => void): BenchCredentials {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=mqsec bench CA', '-sha256'], dir);
  fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  fs.writeFileSync(path.join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, subj] of [
    ['server', '/CN=127.0.0.1'],
    ['client', `/CN=${deviceId}`],
  ] as const) {
    openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj, '-sha256'], dir);
    openssl(
      ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-sha256', '-extfile', `${name}.ext`],
      dir,
    );
  }
  const password = randomBytes(16).toString('hex').slice(0, 16);
  const passwordFile = path.join(dir, 'passwd');
  fs.writeFileSync(passwordFile, '');
  execFileSync('mosquitto_passwd', ['-b', passwordFile, deviceId, password], { stdio: ['ignore', 'ignore', 'pipe'] });
  const psk = randomBytes(32);
  const pskIdentity = deviceId;
  const pskFile = path.join(dir, 'psk');
  fs.writeFileSync(pskFile, `${pskIdentity}:${psk.toString('hex')}\n`);
  const p = (f: string) => path.join(dir, f);
  return {
    dir,
    caCert: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    pem: { ca: fs.readFileSync(p('ca.crt'), 'utf8'), cert: fs.readFileSync(p('client.crt'), 'utf8'), key: fs.readFileSync(p('client.key'), 'utf8') },
    deviceId,
    password,
    pskIdentity,
    psk,
    pskFile,
    passwordFile,
    cleanup,
  };
}
