/**
 * `mqsec hil`: hardware in the loop. Builds and flashes the firmware for a
 * real ESP32 board, starts a local mqsec broker, provisions the board, and
 * checks over the serial console and over MQTT:
 *
 *   1. phase 1 (serial "mqsec phase 1 ok" and the broker's phase-1 counter);
 *   2. sealed readings arrive, opened by the broker, at an app account;
 *   3. after a broker restart the board resumes with phase 2 only;
 *   4. after `revoke` the board is disconnected and every further attempt is
 *      refused (no more readings, failed authentications counted).
 *
 * The board reaches the broker over Wi-Fi, so the broker listens on the
 * host's LAN address given with --broker-host. The Wi-Fi password is read
 * from MQSEC_WIFI_PASSWORD (not a flag: it would land in shell history).
 * Without a board or an SDK it prints one "skipped: ..." line and succeeds.
 */
import { createReadStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import mqtt from 'mqtt';
import { toHex } from '../firmware/core/bytes.js';
import { buildApp, deviceFigures, findSdk, isSdk, writeDeviceConfigModule } from './moddable.js';
import type { Io } from './desktop-run.js';

export interface HilOptions {
  port: string;
  board: 'esp32' | 'esp32s3' | 'esp32c3';
  brokerHost?: string;
  brokerPort?: number;
  ssid?: string;
  deviceId?: string;
  timeoutMs?: number;
  verbose?: boolean;
  keep?: boolean;
}

const PLATFORM: Record<HilOptions['board'], string> = { esp32: 'esp32', esp32s3: 'esp32/esp32s3', esp32c3: 'esp32/esp32c3' };

export function hilPreconditions(o: HilOptions, env: NodeJS.ProcessEnv): string | undefined {
  if (!existsSync(o.port)) return `no board at ${o.port}`;
  const sdk = findSdk(env);
  if (!isSdk(sdk)) return sdk.missing;
  if (!env.IDF_PATH) return 'IDF_PATH is not set (ESP-IDF is needed to build and flash ESP32 targets)';
  if (!o.ssid) return 'no --ssid given (the board reaches the broker over Wi-Fi)';
  if (!o.brokerHost) return 'no --broker-host given (the host LAN address the board can reach)';
  return undefined;
}

/** Serial console lines (115200 8N1, raw) read with stty + a file stream: no native Node module needed. */
function openSerial(port: string, onLine: (l: string) => void): { lines: string[]; close(): void } {
  spawnSync('stty', ['-F', port, '115200', 'raw', '-echo', 'cs8', '-cstopb', '-parenb']);
  const lines: string[] = [];
  let partial = '';
  const stream = createReadStream(port);
  stream.on('data', (b) => {
    partial += b.toString();
    const parts = partial.split(/\r?\n/);
    partial = parts.pop() ?? '';
    for (const l of parts) {
      lines.push(l);
      onLine(l);
    }
  });
  stream.on('error', () => {});
  return { lines, close: () => stream.destroy() };
}

async function until(what: string, ms: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function runHil(o: HilOptions, io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const why = hilPreconditions(o, env);
  if (why) {
    io.out(`skipped: ${why}`);
    return 0;
  }
  const sdk = findSdk(env);
  if (!isSdk(sdk)) return 0;
  const { startBroker } = await import('../broker/server.js');
  const timeoutMs = o.timeoutMs ?? 120_000;
  const id = o.deviceId ?? `hil-${o.board}`;
  const work = mkdtempSync(join(tmpdir(), 'mqsec-hil-'));
  const dataDir = join(work, 'data');
  const step = (s: string) => io.out(`hil: ${s}`);
  let broker: Awaited<ReturnType<typeof startBroker>> | undefined;
  let serial: ReturnType<typeof openSerial> | undefined;
  let app: mqtt.MqttClient | undefined;
  try {
    broker = await startBroker({ dataDir, port: o.brokerPort ?? 0, host: o.brokerHost!, logLevel: 'warn' });
    const port = broker.port;
    const { key } = await broker.registry.addDevice(id, 'sensor');
    const appPassword = toHex(crypto.getRandomValues(new Uint8Array(16)));
    await broker.registry.addAccount('hil-app', 'app', appPassword);
    await broker.syncRegistry();
    const configDir = join(work, 'config');
    const wifi = env.MQSEC_WIFI_PASSWORD ? { ssid: o.ssid!, password: env.MQSEC_WIFI_PASSWORD } : { ssid: o.ssid! };
    writeDeviceConfigModule({ id, key: toHex(key), broker: { host: o.brokerHost!, port }, wifi }, configDir);
    key.fill(0);
    step(`broker on ${o.brokerHost}:${port}, device ${id} provisioned`);

    serial = openSerial(o.port, o.verbose ? (l) => io.out(`  serial: ${l}`) : () => {});
    const built = await buildApp({
      sdk,
      platform: PLATFORM[o.board],
      outDir: join(work, 'build'),
      configDir,
      deploy: true,
      uploadPort: o.port,
      // Instrumented: the firmware prints "mqsec heap slots=... chunks=..." (bytes) at boot and between readings.
      instrument: true,
      // Short interval, stay connected: the checks take seconds, not minutes.
      extraConfig: { mqsec: { intervalS: 10, sleepMode: 'wait' } },
      onLine: o.verbose ? (l) => io.out(`  mcconfig: ${l}`) : undefined,
    });
    if (built.code !== 0) {
      io.err(`hil: build/flash failed with exit code ${built.code} (run with --verbose)`);
      return 1;
    }
    step(`built and flashed for ${o.board}`);

    const readings: string[] = [];
    app = await mqtt.connectAsync(`mqtt://${o.brokerHost}:${port}`, { username: 'hil-app', password: appPassword, clientId: 'hil-app' });
    app.on('message', (topic, payload) => {
      JSON.parse(payload.toString('utf8'));
      readings.push(topic);
    });
    await app.subscribeAsync(`sensors/${id}/#`, { qos: 1 });

    const s = serial;
    await until('serial "mqsec phase 1 ok"', timeoutMs, () => s.lines.some((l) => l.startsWith('mqsec phase 1 ok')));
    await until('the broker counting phase 1', 5000, async () => (await broker!.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' })) >= 1);
    step('phase 1 ok');
    await until('a reading', timeoutMs, () => readings.length > 0);
    step(`sealed readings arrive (${readings.join(', ')})`);

    await broker.stop();
    broker = await startBroker({ dataDir, port, host: o.brokerHost!, logLevel: 'warn' });
    const b = broker;
    const mark = s.lines.length;
    await until('phase 2 after broker restart', timeoutMs, () => s.lines.slice(mark).some((l) => l.startsWith('mqsec phase 2 ok')));
    if ((await b.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' })) !== 0) throw new Error('fell back to phase 1');
    step('phase 2 after broker restart ok');

    await b.registry.revokeDevice(id);
    await b.syncRegistry();
    const seen = readings.length;
    await until('the revoked board being refused', timeoutMs, async () => (await b.metrics.value('mqsec_auth_total', { kind: 'phase2', result: 'fail' })) + (await b.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'fail' })) >= 1);
    await new Promise((r) => setTimeout(r, 3000));
    if (readings.length > seen + 2) throw new Error('readings still arrive after revocation');
    step('revoked key refused');
    // The figures the desktop run cannot give: crypto and handshake times and JS heap on the chip itself.
    for (const figure of deviceFigures(s.lines)) step(figure);
    io.out('hil: PASS');
    return 0;
  } catch (e) {
    io.err(`hil: FAIL: ${e instanceof Error ? e.message : String(e)}`);
    if (serial && !o.verbose) for (const l of serial.lines.slice(-30)) io.err(`  serial: ${l}`);
    return 1;
  } finally {
    await app?.endAsync(true).catch(() => {});
    serial?.close();
    await broker?.stop().catch(() => {});
    if (!o.keep) rmSync(work, { recursive: true, force: true });
  }
}
