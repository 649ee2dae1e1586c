/**
 * `mqsec device-desktop`: the real firmware (same manifest, same TypeScript)
 * built for the Moddable desktop target `lin` and run headless against a
 * local mqsec broker on 127.0.0.1, checked from the broker's side:
 *
 *   1. phase 1 completes (broker metric mqsec_auth_total{kind=phase1,result=ok});
 *   2. an app account (plain MQTT.js, role `app`) receives the node's sealed
 *      readings as plaintext JSON on sensors/<id>/#, i.e. the broker opened
 *      the envelopes;
 *   3. the broker is restarted on the same port and data directory: the node
 *      comes back with phase 2 only (phase2 ok, no further phase 1), and
 *      readings flow again;
 *   4. the device process is killed (SIGKILL) and started again: what it
 *      saved (ticket, counter block, reading sequence) survives, so it comes
 *      back with phase 2, not phase 1, and readings flow again;
 *   5. the device is killed in the middle of a storage write (the desktop
 *      build stops half-way through a write while a marker file exists, see
 *      firmware/platform/moddable/storage-file.ts) and started again: it
 *      comes back with phase 2 as well.
 *
 * Without an SDK (MODDABLE unset, mcconfig or mcsim not built) or without
 * xvfb-run it prints one "skipped: ..." line and succeeds.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import mqtt from 'mqtt';
import { toHex } from '../firmware/core/bytes.js';
import { buildApp, deviceFigures, findSdk, isSdk, watch, writeDeviceConfigModule, type Watched } from './moddable.js';

export interface DesktopRunOptions {
  deviceId?: string;
  /** Which MQTT client the firmware uses: mqsec's own (default) or the SDK's stock `mqtt` module. */
  client?: 'firmware' | 'stock';
  /** Instrumented build: the device reports its XS heap use, printed with the result. */
  instrument?: boolean;
  keep?: boolean;
  verbose?: boolean;
  /** Overall limit for each wait, ms. */
  timeoutMs?: number;
}

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/** The metric's value once it is at least `atLeast`, or its last value after `ms`. */
async function pollMetric(read: () => Promise<number>, ms: number, atLeast = 1): Promise<number> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (v >= atLeast || Date.now() > until) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export async function runDesktop(o: DesktopRunOptions, io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const sdk = findSdk(env);
  if (!isSdk(sdk)) {
    io.out(`skipped: ${sdk.missing}`);
    return 0;
  }
  if (!sdk.mcsim) {
    io.out('skipped: mcsim (the Moddable desktop simulator) is not built; see docs/firmware.md');
    return 0;
  }
  if (!hasCommand('xvfb-run')) {
    io.out('skipped: xvfb-run not found (apt-get install xvfb xauth) — mcsim needs a display');
    return 0;
  }
  const { startBroker } = await import('../broker/server.js');
  const timeoutMs = o.timeoutMs ?? 60_000;
  const id = o.deviceId ?? 'desk-0001';
  const work = mkdtempSync(join(tmpdir(), 'mqsec-desktop-'));
  const dataDir = join(work, 'data');
  let broker: Awaited<ReturnType<typeof startBroker>> | undefined;
  let sim: Watched | undefined;
  let app: mqtt.MqttClient | undefined;
  const step = (s: string) => io.out(`device-desktop: ${s}`);
  try {
    broker = await startBroker({ dataDir, port: 0, host: '127.0.0.1', logLevel: 'warn' });
    const port = broker.port;
    const { key } = broker.registry.addDevice(id, 'sensor');
    const appPassword = toHex(crypto.getRandomValues(new Uint8Array(16)));
    await broker.registry.addAccount('desk-app', 'app', appPassword);
    broker.syncRegistry();
    const configDir = join(work, 'config');
    writeDeviceConfigModule({ id, key: toHex(key), broker: { host: '127.0.0.1', port } }, configDir);
    key.fill(0);
    step(`broker on 127.0.0.1:${port}, device ${id} provisioned`);

    const buildDir = join(work, 'build');
    const fsRoot = join(work, 'fs') + '/';
    mkdirSync(fsRoot, { recursive: true });
    const built = await buildApp({
      sdk,
      platform: 'lin',
      outDir: buildDir,
      configDir,
      instrument: o.instrument,
      // storagePauseMs: a write stops half-way while the marker file exists (step 5).
      extraConfig: { file: { root: fsRoot }, mqsec: { client: o.client ?? 'firmware', storagePauseMs: 3000 } },
      onLine: o.verbose ? (l) => io.out(`  mcconfig: ${l}`) : undefined,
    });
    if (built.code !== 0) {
      io.err(`device-desktop: mcconfig failed with exit code ${built.code} (run with --verbose)`);
      return 1;
    }
    step(`built for lin (MQTT client: ${o.client ?? 'firmware'})`);

    // The app account sees plaintext: the broker opened the device's envelopes and checked them.
    const readings: { topic: string; body: { v: number; n: number } }[] = [];
    app = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { username: 'desk-app', password: appPassword, clientId: 'desk-app', reconnectPeriod: 500 });
    app.on('message', (topic, payload) => {
      try {
        readings.push({ topic, body: JSON.parse(payload.toString('utf8')) });
      } catch {
        readings.push({ topic, body: { v: NaN, n: -1 } });
      }
    });
    await app.subscribeAsync(`sensors/${id}/#`, { qos: 1 });

    const mcso = join(built.appDir, 'build', 'mc.so');
    const soPath = [mcso, join(built.appDir, 'mc.so')].find((p) => spawnSync('test', ['-f', p]).status === 0) ?? mcso;
    const mcsim = sdk.mcsim;
    let starts = 0;
    const startDevice = () => {
      const n = ++starts;
      return watch('xvfb-run', ['-a', 'stdbuf', '-oL', mcsim, soPath], { ...env, MODDABLE: sdk.moddable }, o.verbose ? (l) => io.out(`  device#${n}: ${l}`) : undefined);
    };
    sim = startDevice();

    const waitReadings = async (n: number) => {
      const until = Date.now() + timeoutMs;
      while (readings.length < n) {
        if (Date.now() > until) throw new Error(`only ${readings.length} readings arrived`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    await sim.waitFor(/^mqsec phase 1 ok/, timeoutMs);
    // The device reports phase 1 once it has sent KX3; the broker counts it when KX3 arrives.
    const b1 = broker;
    const p1 = await pollMetric(() => b1.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' }), 5000);
    if (p1 < 1) throw new Error('device reports phase 1 but the broker counted none');
    step('phase 1 ok (device and broker agree)');
    await waitReadings(1);
    const bad = readings.filter((r) => !r.topic.startsWith(`sensors/${id}/`) || !Number.isFinite(r.body.v));
    if (bad.length) throw new Error(`unreadable reading on ${bad[0].topic}`);
    step(`sealed readings opened by the broker, read by the app account: ${readings.map((r) => `${r.topic.split('/').pop()}=${r.body.v}`).join(', ')}`);

    // Broker restart: same data directory and port; the node must come back with phase 2.
    const before = readings.length;
    await broker.stop();
    broker = undefined;
    broker = await startBroker({ dataDir, port, host: '127.0.0.1', logLevel: 'warn' });
    step('broker restarted');
    await sim.waitFor(/^mqsec phase 2 ok/, timeoutMs);
    const b2 = broker;
    const p2 = await pollMetric(() => b2.metrics.value('mqsec_auth_total', { kind: 'phase2', result: 'ok' }), 5000);
    const p1again = await broker.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' });
    if (p2 < 1) throw new Error('device reports phase 2 but the broker counted none');
    if (p1again !== 0) throw new Error('the node fell back to phase 1 after the restart');
    await waitReadings(before + 1);
    step('phase 2 after broker restart ok, readings flow again');
    const firstRun = sim.lines;

    // A device restart: what the device saved must survive it, so it resumes with phase 2.
    const restartAndResume = async (what: string, kill: (s: Watched) => Promise<void>) => {
      const phase2Before = await b2.metrics.value('mqsec_auth_total', { kind: 'phase2', result: 'ok' });
      const readingsBefore = readings.length;
      await kill(sim!);
      sim = startDevice();
      await sim.waitFor(/^mqsec phase [12] ok/, timeoutMs);
      const p2now = await pollMetric(() => b2.metrics.value('mqsec_auth_total', { kind: 'phase2', result: 'ok' }), 5000, phase2Before + 1);
      const p1now = await b2.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' });
      const refused = sim.lines.filter((l) => /CONNECTION_REFUSED|return code [1-5]/.test(l)).length;
      if (p1now !== 0 || !sim.lines.some((l) => l.startsWith('mqsec phase 2 ok'))) throw new Error(`after ${what} the node did not resume with phase 2 (phase 1 count ${p1now}, ${refused} refusals)`);
      if (p2now < phase2Before + 1) throw new Error(`after ${what} the device reports phase 2 but the broker counted none`);
      await waitReadings(readingsBefore + 1);
      const seqs = readings.map((r) => r.body.n);
      if (seqs.slice(readingsBefore).some((n) => n <= Math.max(...seqs.slice(0, readingsBefore)))) throw new Error(`after ${what} reading sequence numbers went back`);
      step(`${what}: back with phase 2 (no phase 1, no refusal), readings flow again`);
    };
    await restartAndResume('device process killed and started again', (s) => s.kill('SIGKILL'));
    // Kill inside a write: with the marker present, the next write stops half-way (the
    // restarted device reserves a new counter block before it connects).
    const marker = join(fsRoot, 'mqsec-pause-writes');
    await restartAndResume('device killed in the middle of a storage write', async (s) => {
      writeFileSync(marker, '');
      await s.kill('SIGKILL');
      const paused = startDevice();
      const line = await paused.waitFor(/^mqsec storage mid-write /, timeoutMs);
      await paused.kill('SIGKILL');
      rmSync(marker);
      step(`killed at "${line.trim()}"`);
    });
    for (const figure of deviceFigures(firstRun)) step(figure);
    // The desktop host also prints its own instrumentation table once a second in -i
    // builds, whose last line is the state after phase 2.
    const keys = firstRun.find((l) => l.startsWith('instruments key: '))?.slice('instruments key: '.length).split(',');
    const values = firstRun.filter((l) => l.startsWith('instruments: ')).pop()?.slice('instruments: '.length).split(',');
    if (keys && values) {
      const at = (k: string) => values[keys.indexOf(k)];
      step(`device heap after phase 2: slot used ${at('Slot used')} B of ${at('Slot available')}, chunk used ${at('Chunk used')} B, modules loaded at run time ${at('Modules loaded')}, GCs ${at('Garbage collections')} (XS instrumentation, 64-bit host)`);
    }
    io.out('device-desktop: PASS');
    return 0;
  } catch (e) {
    io.err(`device-desktop: FAIL: ${e instanceof Error ? e.message : String(e)}`);
    if (sim && !o.verbose) for (const l of sim.lines.slice(-30)) io.err(`  device: ${l}`);
    return 1;
  } finally {
    await app?.endAsync(true).catch(() => {});
    await sim?.stop();
    await broker?.stop().catch(() => {});
    if (!o.keep) rmSync(work, { recursive: true, force: true });
    else io.out(`device-desktop: kept ${work}`);
  }
}
