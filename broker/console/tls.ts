/**
 * The console's HTTPS certificate: the operator's own files, or a self-signed
 * one generated at first start (ECDSA P-256, SHA-256, one year, subject
 * alternative names for localhost, the loopback addresses and the listen
 * address) and kept in the data directory with its key (mode 0600), so a
 * browser that was told to trust it once keeps trusting it across restarts.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';

export const GENERATED_CERT_FILE = 'console-cert.pem';
export const GENERATED_KEY_FILE = 'console-key.pem';

export interface ConsoleTlsFiles {
  certFile: string;
  keyFile: string;
}

export interface ConsoleTlsMaterial {
  cert: string;
  key: string;
  /** Where it came from (printed at start so the operator knows what to trust). */
  certFile: string;
  generated: boolean;
}

export async function loadOrCreateConsoleCert(dataDir: string, host: string, files?: ConsoleTlsFiles): Promise<ConsoleTlsMaterial> {
  if (files) {
    return { cert: readFileSync(files.certFile, 'utf8'), key: readFileSync(files.keyFile, 'utf8'), certFile: files.certFile, generated: false };
  }
  const certFile = join(dataDir, GENERATED_CERT_FILE);
  const keyFile = join(dataDir, GENERATED_KEY_FILE);
  if (existsSync(certFile) && existsSync(keyFile)) {
    return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), certFile, generated: false };
  }
  const altNames: { type: 2 | 7; value?: string; ip?: string }[] = [
    { type: 2, value: 'localhost' },
    { type: 7, ip: '127.0.0.1' },
    { type: 7, ip: '::1' },
  ];
  if (isIP(host) && host !== '127.0.0.1' && host !== '::1' && host !== '0.0.0.0' && host !== '::') altNames.push({ type: 7, ip: host });
  else if (!isIP(host) && host !== 'localhost') altNames.push({ type: 2, value: host });
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(notBefore.getTime() + 365 * 86_400_000);
  const { default: selfsigned } = await import('selfsigned'); // X.509 code loaded only the first time a certificate is made
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'mqsec console' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  writeFileSync(keyFile, pems.private, { mode: 0o600 });
  chmodSync(keyFile, 0o600);
  writeFileSync(certFile, pems.cert, { mode: 0o644 });
  return { cert: pems.cert, key: pems.private, certFile, generated: true };
}

/** Plain HTTP is allowed only where nothing but this machine can reach it. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
