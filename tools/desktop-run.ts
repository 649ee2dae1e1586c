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
 *      comes back with phase 2 as well;
 *   6. the device is killed, its stored state wiped (the storage directory
 *      under the file root: ticket, counter block, reading sequence, as after
 *      a flash erase) and started again: with no operator action it must
 *      come back through the protocol's counter hint (§5.5): the broker
 *      answers its stale-counter KX1 with a hint (metric
 *      mqsec_drops_total{reason=counter-hint}), the device jumps past it and
 *      runs phase 1, readings reach the app account again, and no counter
 *      the broker had already accepted is accepted again (checkWipeRecovery).
 *
 * Without an SDK (MODDABLE unset, mcconfig or mcsim not built) or without
 * xvfb-run it prints one "skipped: ..." line and succeeds.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import mqtt from 'mqtt';
import { toHex } from '../firmware/core/bytes.js';
import { connectApp, type MqsecApp } from '../sdk/index.js';
import { buildApp, deviceFigures, instrumentFigures, findSdk, isSdk, watch, writeDeviceConfigModule, type Watched } from './moddable.js';

export interface DesktopRunOptions {
  deviceId?: string;
  /** Which MQTT client the firmware uses: mqsec's own (default) or the SDK's stock `mqtt` module. */
  client?: 'firmware' | 'stock';
  /** Instrumented build: the device reports its XS heap use, printed with the result. */
  instrument?: boolean;
  /**
   * Board setting `groupKeys` (firmware/platform/moddable/main.ts): default
   * on, as in the shipped firmware; false builds a node that never asks the
   * key service (every topic hop by hop), for comparison.
   */
  groupKeys?: boolean;
  /**
   * The device's rules `sensors/%u/#` (publish) and `cmd/%u/#` (subscribe)
   * set to `e2e` (protocol §14.1): the node holds its group keys and seals
   * readings under them; the reader is then an app principal on the SDK
   * (`connectApp`), which checks every group envelope, instead of a password
   * account (which receives nothing of an e2e topic). Needs group keys on.
   */
  e2e?: boolean;
  keep?: boolean;
  verbose?: boolean;
  /** Overall limit for each wait, ms. */
  timeoutMs?: number;
}

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/** What the broker had counted for the device, read before the wipe and after recovery. */
export interface BrokerCounts {
  /** mqsec_auth_total{kind=phase1,result=ok} */
  phase1Ok: number;
  /** mqsec_drops_total{reason=counter-hint}: counter hints sent (§5.5). */
  hints: number;
  /** Highest counter the broker has accepted for the device (registry), -1 none. */
  counter: number;
}

const HINT_LINE = /^warn mqsec: counter was behind the broker; jumped past it \{"counter":(\d+)\}/;

/**
 * The checks of the wipe step (6), as a pure function of the broker's counts
 * before the wipe and after the device is back, and the restarted device's
 * console lines. Returns what is wrong; empty when the device recovered the
 * way §5.5 says: the broker sent at least one counter hint, the device printed
 * that it jumped past the broker's counter (to a value above every counter
 * accepted before the wipe) before it reported phase 1, the broker ran
 * exactly one more phase 1, and the highest accepted counter moved past the
 * one from before the wipe (so no used counter was accepted again: the
 * broker's store only ever moves forward, and a phase 1 with a used counter
 * would have left it where it was).
 */
export function checkWipeRecovery(before: BrokerCounts, after: BrokerCounts, deviceLines: readonly string[]): string[] {
  const problems: string[] = [];
  if (after.hints <= before.hints) problems.push('the broker sent no counter hint');
  const hintAt = deviceLines.findIndex((l) => HINT_LINE.test(l));
  const phase1At = deviceLines.findIndex((l) => l.startsWith('mqsec phase 1 ok'));
  const phase2At = deviceLines.findIndex((l) => l.startsWith('mqsec phase 2 ok'));
  if (hintAt < 0) problems.push('the device did not report a counter hint');
  else {
    const jumped = Number(HINT_LINE.exec(deviceLines[hintAt])![1]);
    if (jumped <= before.counter) problems.push(`the device jumped to counter ${jumped}, not past ${before.counter}`);
  }
  if (phase1At < 0) problems.push('the device did not report phase 1');
  else if (hintAt > phase1At) problems.push('the device reported phase 1 before the counter hint');
  if (phase2At >= 0 && (phase1At < 0 || phase2At < phase1At)) problems.push('the device reported phase 2 before phase 1 (it had no ticket)');
  if (after.phase1Ok !== before.phase1Ok + 1) problems.push(`the broker counted ${after.phase1Ok - before.phase1Ok} phase-1 handshakes, expected 1`);
  if (after.counter <= before.counter) problems.push(`the broker's highest accepted counter is ${after.counter}, not past ${before.counter} from before the wipe`);
  return problems;
}

/**
 * Removes the device's stored state (the FileStorage directory `<root><name>/`,
 * firmware/platform/moddable/file-storage.ts) and returns the names of the
 * files it held; an empty or missing directory is an error, since wiping
 * nothing would prove nothing.
 */
export function wipeDeviceState(fsRoot: string, name = 'mqsec'): string[] {
  const dir = join(fsRoot, name);
  const files = existsSync(dir) ? readdirSync(dir) : [];
  if (files.length === 0) throw new Error(`no device state to wipe in ${dir}`);
  rmSync(dir, { recursive: true });
  return files.sort();
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

/**
 * The manifest `config` the desktop build adds to the board's (merged into
 * `config.mqsec` the way mcconfig merges manifests): a private file root,
 * the MQTT client, the mid-write pause of step 5 (a write stops half-way
 * while the marker file exists, firmware/platform/moddable/storage-file.ts)
 * and the board setting `groupKeys`.
 */
export function desktopConfig(o: Pick<DesktopRunOptions, 'client' | 'groupKeys'>, fsRoot: string): Record<string, unknown> {
  return { file: { root: fsRoot }, mqsec: { client: o.client ?? 'firmware', storagePauseMs: 3000, groupKeys: o.groupKeys !== false } };
}

export async function runDesktop(o: DesktopRunOptions, io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  // before the SDK check: a contradiction is an error with or without an SDK
  if (o.e2e && o.groupKeys === false) {
    io.err('device-desktop: --e2e needs group keys on');
    return 1;
  }
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
  let sdkApp: MqsecApp | undefined;
  const step = (s: string) => io.out(`device-desktop: ${s}`);
  try {
    broker = await startBroker({ dataDir, port: 0, host: '127.0.0.1', logLevel: 'warn' });
    const port = broker.port;
    if (o.e2e) {
      await broker.registry.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
      await broker.registry.addRule('sensor', 'subscribe', 'cmd/%u/#', 'e2e');
    }
    const { key } = await broker.registry.addDevice(id, 'sensor');
    const appPassword = toHex(crypto.getRandomValues(new Uint8Array(16)));
    await broker.registry.addAccount('desk-app', 'app', appPassword);
    const appPrincipal = o.e2e ? { id: 'desk-app-e2e', key: (await broker.registry.addDevice('desk-app-e2e', 'app')).key } : undefined;
    await broker.syncRegistry();
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
      extraConfig: desktopConfig(o, fsRoot),
      onLine: o.verbose ? (l) => io.out(`  mcconfig: ${l}`) : undefined,
    });
    if (built.code !== 0) {
      io.err(`device-desktop: mcconfig failed with exit code ${built.code} (run with --verbose)`);
      return 1;
    }
    step(`built for lin (MQTT client: ${o.client ?? 'firmware'}, group keys ${o.groupKeys === false ? 'off' : 'on'}, device topics ${o.e2e ? 'e2e' : 'hop'})`);

    const readings: { topic: string; body: { v: number; n: number } }[] = [];
    const onReading = (topic: string, payload: Uint8Array) => {
      try {
        readings.push({ topic, body: JSON.parse(new TextDecoder().decode(payload)) });
      } catch {
        readings.push({ topic, body: { v: NaN, n: -1 } });
      }
    };
    const notE2e: string[] = [];
    if (appPrincipal) {
      // End to end: only a group member opens the readings; the SDK checks each group envelope (§14.7).
      sdkApp = await connectApp({ url: `mqtt://127.0.0.1:${port}`, id: appPrincipal.id, key: appPrincipal.key, persistent: true, reconnect: { initialMs: 100, maxMs: 1000 } });
      appPrincipal.key.fill(0);
      sdkApp.on('message', (topic, payload, info) => {
        if (info.mode !== 'e2e') notE2e.push(topic);
        onReading(topic, payload);
      });
      await sdkApp.subscribe(`sensors/${id}/#`, 1);
    } else {
      // The app account sees plaintext: the broker opened the device's envelopes and checked them.
      app = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { username: 'desk-app', password: appPassword, clientId: 'desk-app', reconnectPeriod: 500 });
      app.on('message', (topic, payload) => onReading(topic, payload));
      await app.subscribeAsync(`sensors/${id}/#`, { qos: 1 });
    }
    // the app principal's own phase 1 is counted by the same metric
    const appPhase1 = appPrincipal ? 1 : 0;

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
      if (notE2e.length) throw new Error(`a reading on ${notE2e[0]} arrived hop by hop, not end to end`);
    };

    await sim.waitFor(/^mqsec phase 1 ok/, timeoutMs);
    // The device reports phase 1 once it has sent KX3; the broker counts it when KX3 arrives.
    const b1 = broker;
    const p1 = await pollMetric(() => b1.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' }), 5000, appPhase1 + 1);
    if (p1 < appPhase1 + 1) throw new Error('device reports phase 1 but the broker counted none');
    step('phase 1 ok (device and broker agree)');
    await waitReadings(1);
    const bad = readings.filter((r) => !r.topic.startsWith(`sensors/${id}/`) || !Number.isFinite(r.body.v));
    if (bad.length) throw new Error(`unreadable reading on ${bad[0].topic}`);
    step(`${o.e2e ? 'readings sealed under the group key, opened by the app principal (SDK)' : 'sealed readings opened by the broker, read by the app account'}: ${readings.map((r) => `${r.topic.split('/').pop()}=${r.body.v}`).join(', ')}`);

    // Instrumented: let the host print a few heap rows in this state before moving on.
    const instrumentRows = async (after: RegExp) => {
      if (!o.instrument) return;
      const until = Date.now() + 10_000;
      const rows = () => {
        const from = sim!.lines.findIndex((l) => after.test(l));
        return from < 0 ? 0 : sim!.lines.slice(from).filter((l) => l.startsWith('instruments: ')).length;
      };
      while (rows() < 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    };
    await instrumentRows(/^mqsec phase 1 ok/);

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
    await instrumentRows(/^mqsec phase 2 ok/);
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

    // Step 6: state lost (flash erased). The device must recover on its own through the counter hint.
    const counts = async (): Promise<BrokerCounts> => ({
      phase1Ok: await b2.metrics.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' }),
      hints: await b2.metrics.value('mqsec_drops_total', { reason: 'counter-hint' }),
      counter: await b2.registry.getCounter(id),
    });
    await sim.kill('SIGKILL');
    const beforeWipe = await counts();
    const wiped = wipeDeviceState(fsRoot);
    step(`device killed, stored state wiped (${wiped.join(', ')}); broker's highest accepted counter ${beforeWipe.counter}`);
    const readingsBeforeWipe = readings.length;
    const startedAt = Date.now();
    sim = startDevice();
    const recovered = sim;
    await recovered.waitFor(/^mqsec phase 1 ok/, timeoutMs);
    const phase1After = Date.now() - startedAt;
    await pollMetric(async () => (await counts()).phase1Ok, 5000, beforeWipe.phase1Ok + 1);
    await waitReadings(readingsBeforeWipe + 1);
    const readingAfter = Date.now() - startedAt;
    const after = await counts();
    const problems = checkWipeRecovery(beforeWipe, after, recovered.lines);
    if (problems.length) throw new Error(`after the wipe: ${problems.join('; ')}`);
    const hintLine = recovered.lines.find((l) => HINT_LINE.test(l))!;
    step(
      `wiped device recovered with no operator action: ${after.hints - beforeWipe.hints} counter hint(s) from the broker, device jumped to counter ${HINT_LINE.exec(hintLine)![1]}, ` +
        `then phase 1 (broker counter ${beforeWipe.counter} -> ${after.counter}), readings flow again`,
    );
    step(`recovery time from device start: phase 1 after ${phase1After} ms, first reading at the app account after ${readingAfter} ms (${recovered.lines.find((l) => l.startsWith('mqsec phase 1 ok'))!.slice('mqsec '.length)} device-observed)`);

    for (const figure of deviceFigures(firstRun)) step(figure);
    // The desktop host also prints its own instrumentation table once a second in -i builds.
    for (const figure of instrumentFigures(firstRun)) step(figure);
    io.out('device-desktop: PASS');
    return 0;
  } catch (e) {
    io.err(`device-desktop: FAIL: ${e instanceof Error ? e.message : String(e)}`);
    if (sim && !o.verbose) for (const l of sim.lines.slice(-30)) io.err(`  device: ${l}`);
    return 1;
  } finally {
    await app?.endAsync(true).catch(() => {});
    await sdkApp?.end().catch(() => {});
    await sim?.stop();
    await broker?.stop().catch(() => {});
    if (!o.keep) rmSync(work, { recursive: true, force: true });
    else io.out(`device-desktop: kept ${work}`);
  }
}
