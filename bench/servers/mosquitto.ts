/**
 * Mosquitto (Debian package) as the C baseline: one process with a listener
 * per connection method, on free loopback ports, stopped by PID.
 *
 * `nodelay: true` adds `set_tcp_nodelay true`. Stock Mosquitto leaves Nagle's
 * algorithm on, which on loopback stalls a TLS 1.3 connect ~40 ms behind the
 * session ticket (delayed ACK); the benchmark reports both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { BenchCredentials } from '../pki.js';
import { freePort, waitForPort } from '../net.js';
import { trackChild, untrackChild } from './spawn.js';

export const MOSQUITTO_BIN = process.env.MQSEC_MOSQUITTO ?? '/usr/sbin/mosquitto';

export interface MosquittoPorts {
  /** Plain MQTT with username/password. */
  plain: number;
  /** TLS 1.2 only, client certificate required, CN used as username. */
  tls12MutualCert: number;
  /** TLS 1.3 only, server certificate, MQTT username/password. */
  tls13CertPassword: number;
  /** TLS 1.2 PSK (identity used as username). */
  tls12Psk: number;
  /** TLS 1.3 PSK. */
  tls13Psk: number;
}

export interface MosquittoInstance {
  pid: number;
  ports: MosquittoPorts;
  nodelay: boolean;
  stop(): Promise<void>;
}

export function mosquittoVersion(): string {
  try {
    const out = execFileSync(MOSQUITTO_BIN, ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return /mosquitto version (\S+)/.exec(out)?.[1] ?? 'unknown';
  } catch (e) {
    // `mosquitto -h` exits non-zero but prints the version
    const out = String((e as { stdout?: unknown }).stdout ?? '');
    return /mosquitto version (\S+)/.exec(out)?.[1] ?? 'not installed';
  }
}

/**
 * Started as root, Mosquitto drops to the `mosquitto` user before it reads the
 * password and PSK files, so the throw-away credential directory must belong
 * to that user. Not root: nothing to do (Mosquitto keeps the caller's uid).
 */
function handCredentialsToMosquittoUser(dir: string): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return;
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync('id', ['-u', 'mosquitto'], { encoding: 'utf8' }).trim());
    gid = Number(execFileSync('id', ['-g', 'mosquitto'], { encoding: 'utf8' }).trim());
  } catch {
    return;
  }
  fs.chownSync(dir, uid, gid);
  for (const f of fs.readdirSync(dir)) fs.chownSync(path.join(dir, f), uid, gid);
}

export async function startMosquitto(creds: BenchCredentials, opts: { nodelay: boolean }): Promise<MosquittoInstance> {
  const ports: MosquittoPorts = {
    plain: await freePort(),
    tls12MutualCert: await freePort(),
    tls13CertPassword: await freePort(),
    tls12Psk: await freePort(),
    tls13Psk: await freePort(),
  };
  const conf = [
    'per_listener_settings true',
    'persistence false',
    'log_dest stderr',
    'log_type error',
    // throughput runs queue bursts; do not let the default limits drop QoS 0
    'max_queued_messages 100000',
    'max_inflight_messages 100',
    opts.nodelay ? 'set_tcp_nodelay true' : '',
    '',
    `listener ${ports.plain} 127.0.0.1`,
    'allow_anonymous false',
    `password_file ${creds.passwordFile}`,
    '',
    `listener ${ports.tls12MutualCert} 127.0.0.1`,
    `cafile ${creds.caCert}`,
    `certfile ${creds.serverCert}`,
    `keyfile ${creds.serverKey}`,
    'require_certificate true',
    'use_identity_as_username true',
    'tls_version tlsv1.2',
    '',
    `listener ${ports.tls13CertPassword} 127.0.0.1`,
    `certfile ${creds.serverCert}`,
    `keyfile ${creds.serverKey}`,
    'tls_version tlsv1.3',
    'allow_anonymous false',
    `password_file ${creds.passwordFile}`,
    '',
    `listener ${ports.tls12Psk} 127.0.0.1`,
    'psk_hint mqsec-bench',
    `psk_file ${creds.pskFile}`,
    'use_identity_as_username true',
    'tls_version tlsv1.2',
    'ciphers PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305',
    '',
    `listener ${ports.tls13Psk} 127.0.0.1`,
    'psk_hint mqsec-bench',
    `psk_file ${creds.pskFile}`,
    'use_identity_as_username true',
    'tls_version tlsv1.3',
    '',
  ].join('\n');
  const confFile = path.join(creds.dir, `mosquitto-${opts.nodelay ? 'nodelay' : 'stock'}.conf`);
  fs.writeFileSync(confFile, conf);
  handCredentialsToMosquittoUser(creds.dir);
  const child: ChildProcess = spawn(MOSQUITTO_BIN, ['-c', confFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  trackChild(child.pid!);
  child.once('exit', () => untrackChild(child.pid!));
  try {
    for (const p of Object.values(ports)) await waitForPort(p, 10_000);
  } catch (e) {
    child.kill('SIGTERM');
    throw new Error(`mosquitto did not start: ${stderr.trim() || String(e)}`);
  }
  return {
    pid: child.pid!,
    ports,
    nodelay: opts.nodelay,
    stop: async () => {
      if (child.exitCode === null) {
        process.kill(child.pid!, 'SIGTERM');
        await exited;
      }
    },
  };
}
