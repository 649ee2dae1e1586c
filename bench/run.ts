/**
 * `mqsec bench`: mqsec against plain MQTT and TLS, everything started here
 * on free 127.0.0.1 ports and stopped again:
 * - Mosquitto (Debian) twice, stock and with `set_tcp_nodelay true`, with
 *   throw-away ECDSA P-256 certificates, a PSK and a password file;
 * - plain Aedes 1.2 and the mqsec broker, each in its own Node process;
 * - the device code in the real XS engine (xsnap) and under Node;
 * - the device's native X25519 on RV32IMC and Xtensa under QEMU: instructions
 *   per scalar multiplication and the resulting ESP32-C3/ESP32 estimates
 *   (tools/native-isa.ts).
 *
 * Figures and how each is defined: bench/RESULTS.md and the module comments
 * (bench/handshake/measure.ts, bench/throughput/load.ts,
 * bench/handshake/rate.ts, bench/xs.ts).
 *
 *   npx tsx bench/run.ts [--quick] [--json]
 */
import os from 'node:os';
import { generateCredentials, type BenchCredentials } from './pki.js';
import { mosquittoVersion, startMosquitto, type MosquittoInstance } from './servers/mosquitto.js';
import { startChildBroker, type ChildBroker } from './servers/spawn.js';
import { provisionMqsecBroker, type MqsecBrokerSetup } from './servers/mqsec.js';
import { measureHandshake, type HandshakeFigures, type HandshakeMethod } from './handshake/measure.js';
import { plainMqttMethod } from './handshake/plain.js';
import * as tlsMethods from './handshake/tls.js';
import { mqsecPhase1Method, mqsecPhase2Method } from './handshake/mqsec.js';
import { measureHandshakeRate, type RateResult } from './handshake/rate.js';
import { runThroughput, type ThroughputOptions, type ThroughputResult } from './throughput/load.js';
import { mqttJsFactory } from './throughput/mqttjs.js';
import { mqsecFactory, mqsecTopic } from './throughput/mqsec.js';
import { measureDeviceWorkNode, measureDeviceWorkXs, measureEnvelopeOverhead, type DeviceFigures } from './xs.js';
import { measureNativeX25519, type NativeX25519Figures } from '../tools/native-isa.js';

export const HANDSHAKE_KEYS = [
  'mqtt_plain',
  'mqsec_phase1',
  'mqsec_phase2',
  'tls12_mutual_cert',
  'tls13_cert_password',
  'tls_psk',
  'tls_resumption',
] as const;
export type HandshakeKey = (typeof HANDSHAKE_KEYS)[number];

/** The `--json` object: exactly these keys. Fields that could not be measured are null. */
export interface BenchJson {
  handshake: Record<HandshakeKey, HandshakeFigures | null>;
  envelope_overhead_bytes: number | null;
  broker_msgs_per_s: { aedes_plain: number | null; mqsec: number | null; mosquitto_plain: number | null; mosquitto_tls: number | null };
  broker_ratio_mqsec_vs_aedes_plain: number | null;
  handshakes_per_s: { mqsec_phase1: number | null; mqsec_phase2: number | null; mosquitto_tls_full: number | null; mosquitto_tls_resumed: number | null };
  xs_ms: DeviceFigures | null;
  node_ms: DeviceFigures | null;
  /** The native X25519 counted on the ESP32 families' instruction sets under QEMU (tools/native-isa.ts). */
  device_native: NativeX25519Figures | null;
  env: { node: string; cpu: string; mosquitto: string; aedes: string };
}

/** The `--json` object before any measurement: every figure null. */
export function emptyBenchJson(env: BenchJson['env']): BenchJson {
  return {
    handshake: Object.fromEntries(HANDSHAKE_KEYS.map((k) => [k, null])) as BenchJson['handshake'],
    envelope_overhead_bytes: null,
    broker_msgs_per_s: { aedes_plain: null, mqsec: null, mosquitto_plain: null, mosquitto_tls: null },
    broker_ratio_mqsec_vs_aedes_plain: null,
    handshakes_per_s: { mqsec_phase1: null, mqsec_phase2: null, mosquitto_tls_full: null, mosquitto_tls_resumed: null },
    xs_ms: null,
    node_ms: null,
    device_native: null,
    env,
  };
}

/** Everything measured, including what only the human report shows. */
export interface BenchReport {
  json: BenchJson;
  quick: boolean;
  startedAt: string;
  seconds: number;
  /** Extra handshake rows (stock Mosquitto, TLS 1.3 variants, plain MQTT on Aedes). */
  handshakeExtra: Record<string, HandshakeFigures>;
  /** Throughput per configuration and QoS (medians over rounds). */
  throughput: Record<string, { qos0: ThroughputResult | null; qos1: ThroughputResult | null }>;
  rates: Record<string, RateResult | null>;
  envelope: { first: number; worst: number } | null;
  notMeasured: string[];
  settings: Record<string, unknown>;
}

export interface BenchOptions {
  quick?: boolean;
  /** Progress lines (stderr in the CLI); never stdout in --json mode. */
  progress?: (line: string) => void;
  /** Skip the XS engine (e.g. when xsnap is not built). */
  skipXs?: boolean;
}

const DEVICE_ID = 'sensor01'; // 8 characters, the same client id for every method

export async function runBench(o: BenchOptions = {}): Promise<BenchReport> {
  const quick = o.quick ?? false;
  const say = o.progress ?? (() => {});
  const t0 = performance.now();
  const notMeasured: string[] = [];
  const settings = {
    handshakeSamples: quick ? 20 : 200,
    rttOneWayDelayMs: 25,
    throughput: { pairs: 10, payloadBytes: 64, window: 64, warmupMs: quick ? 500 : 1000, durationMs: quick ? 2500 : 10_000, rounds: quick ? 1 : 3 },
    rate: { concurrency: 8, durationMs: quick ? 2500 : 10_000 },
    device: { runs: quick ? 5 : 20, messages: quick ? 50 : 200 },
  };
  const json = emptyBenchJson({ node: process.version, cpu: cpuDescription(), mosquitto: mosquittoVersion(), aedes: await aedesVersion() });
  const report: BenchReport = {
    json,
    quick,
    startedAt: new Date().toISOString(),
    seconds: 0,
    handshakeExtra: {},
    throughput: {},
    rates: {},
    envelope: null,
    notMeasured,
    settings,
  };

  const attempt = async <T>(what: string, f: () => Promise<T>): Promise<T | null> => {
    try {
      return await f();
    } catch (e) {
      notMeasured.push(`${what}: ${(e as Error).message ?? String(e)}`);
      say(`  not measured: ${what}: ${(e as Error).message}`);
      return null;
    }
  };

  let creds: BenchCredentials | undefined;
  let stock: MosquittoInstance | undefined;
  let nodelay: MosquittoInstance | undefined;
  let aedes: ChildBroker | undefined;
  let mqsecSetup: MqsecBrokerSetup | undefined;
  let mqsec: ChildBroker | undefined;
  try {
    say('starting brokers (Mosquitto stock + nodelay, Aedes, mqsec)');
    creds = generateCredentials(DEVICE_ID);
    const c = creds;
    stock = (await attempt('Mosquitto (stock)', () => startMosquitto(c, { nodelay: false }))) ?? undefined;
    nodelay = (await attempt('Mosquitto (set_tcp_nodelay)', () => startMosquitto(c, { nodelay: true }))) ?? undefined;
    aedes = (await attempt('plain Aedes', () => startChildBroker('aedes-plain'))) ?? undefined;
    const rc = settings.rate.concurrency;
    const pairs = settings.throughput.pairs;
    const ids = [
      DEVICE_ID,
      'sensor02',
      ...range(rc).map((i) => `rate1-${i}`),
      ...range(rc).map((i) => `rate2-${i}`),
      ...range(2 * pairs).map((i) => `tput-${i}`),
    ];
    mqsecSetup = (await attempt('mqsec broker (provisioning)', () => provisionMqsecBroker(ids))) ?? undefined;
    if (mqsecSetup) mqsec = (await attempt('mqsec broker', () => mqsecSetup!.start())) ?? undefined;
    const dev = (id: string) => mqsecSetup!.devices.find((d) => d.id === id)!;

    // ---- handshakes: bytes, round trips, latency -------------------------------------------
    const hs = async (key: string, method: HandshakeMethod | undefined): Promise<HandshakeFigures | null> => {
      if (!method) {
        notMeasured.push(`${key}: its server did not start`);
        return null;
      }
      say(`handshake ${key}`);
      return attempt(`handshake ${key}`, () => measureHandshake(method, { samples: settings.handshakeSamples, oneWayDelayMs: settings.rttOneWayDelayMs }));
    };
    const plainCreds = { clientId: DEVICE_ID, username: DEVICE_ID, password: c.password };
    const n = nodelay?.ports;
    const s = stock?.ports;
    json.handshake.mqtt_plain = await hs('mqtt_plain', n && plainMqttMethod(n.plain, plainCreds));
    json.handshake.mqsec_phase1 = await hs('mqsec_phase1', mqsec && mqsecPhase1Method(mqsec.port, dev(DEVICE_ID)));
    json.handshake.mqsec_phase2 = await hs('mqsec_phase2', mqsec && mqsecPhase2Method(mqsec.port, dev('sensor02')));
    json.handshake.tls12_mutual_cert = await hs('tls12_mutual_cert', n && tlsMethods.tls12MutualCertMethod(n.tls12MutualCert, c));
    json.handshake.tls13_cert_password = await hs('tls13_cert_password', n && tlsMethods.tls13CertPasswordMethod(n.tls13CertPassword, c));
    json.handshake.tls_psk = await hs('tls_psk', n && tlsMethods.tls12PskMethod(n.tls12Psk, c));
    json.handshake.tls_resumption = await hs('tls_resumption', n && tlsMethods.tlsResumptionMethod(n.tls12MutualCert, c));
    const extra = async (key: string, method: HandshakeMethod | undefined) => {
      const r = await hs(key, method);
      if (r) report.handshakeExtra[key] = r;
    };
    await extra('mqtt_plain (Aedes)', aedes && plainMqttMethod(aedes.port, plainCreds));
    await extra('tls13_psk', n && tlsMethods.tls13PskMethod(n.tls13Psk, c));
    await extra('tls13_resumption', n && tlsMethods.tlsResumptionMethod(n.tls12MutualCert, c, 'TLSv1.3'));
    await extra('mqtt_plain (stock Mosquitto)', s && plainMqttMethod(s.plain, plainCreds));
    await extra('tls12_mutual_cert (stock Mosquitto)', s && tlsMethods.tls12MutualCertMethod(s.tls12MutualCert, c));
    await extra('tls13_cert_password (stock Mosquitto)', s && tlsMethods.tls13CertPasswordMethod(s.tls13CertPassword, c));
    await extra('tls_psk (stock Mosquitto)', s && tlsMethods.tls12PskMethod(s.tls12Psk, c));
    await extra('tls13_psk (stock Mosquitto)', s && tlsMethods.tls13PskMethod(s.tls13Psk, c));
    await extra('tls_resumption (stock Mosquitto)', s && tlsMethods.tlsResumptionMethod(s.tls12MutualCert, c));

    say('envelope overhead');
    report.envelope = await attempt('envelope overhead', () => measureEnvelopeOverhead());
    json.envelope_overhead_bytes = report.envelope?.first ?? null;

    // ---- broker throughput (configurations interleaved per round) ---------------------------
    const tp = settings.throughput;
    const configs: Array<{ key: string; pid?: number; run?: (o: ThroughputOptions) => Promise<ThroughputResult> }> = [
      { key: 'aedes_plain', pid: aedes?.pid, run: aedes && ((to) => runThroughput(mqttJsFactory(`mqtt://127.0.0.1:${aedes!.port}`), to)) },
      {
        key: 'mqsec',
        pid: mqsec?.pid,
        run:
          mqsec &&
          ((to) =>
            runThroughput(
              mqsecFactory({ url: `mqtt://127.0.0.1:${mqsec!.port}`, devices: tputDevices(), pairs: tp.pairs, subscribers: 'device' }),
              { ...to, topicFor: mqsecTopic(tputDevices()) },
            )),
      },
      {
        key: 'mqsec (app subscribers)',
        pid: mqsec?.pid,
        run:
          mqsec &&
          ((to) =>
            runThroughput(
              mqsecFactory({ url: `mqtt://127.0.0.1:${mqsec!.port}`, devices: tputDevices(), pairs: tp.pairs, subscribers: 'app', app: mqsecSetup!.app }),
              { ...to, topicFor: mqsecTopic(tputDevices()) },
            )),
      },
      {
        key: 'mosquitto_plain',
        pid: stock?.pid,
        run: s && ((to) => runThroughput(mqttJsFactory(`mqtt://127.0.0.1:${s.plain}`, { username: DEVICE_ID, password: c.password }), to)),
      },
      {
        key: 'mosquitto_tls',
        pid: stock?.pid,
        run:
          s &&
          ((to) =>
            runThroughput(mqttJsFactory(`mqtts://127.0.0.1:${s.tls13CertPassword}`, { username: DEVICE_ID, password: c.password, ca: c.pem.ca }), to)),
      },
    ];
    function tputDevices() {
      return range(2 * tp.pairs).map((i) => dev(`tput-${i}`));
    }
    for (const qos of [0, 1] as const) {
      const results = new Map<string, ThroughputResult[]>();
      for (let round = 0; round < tp.rounds; round++) {
        for (const cfg of configs) {
          if (!cfg.run) continue;
          say(`throughput ${cfg.key} QoS ${qos}${tp.rounds > 1 ? ` (round ${round + 1}/${tp.rounds})` : ''}`);
          const r = await attempt(`throughput ${cfg.key} QoS ${qos}`, () =>
            cfg.run!({ pairs: tp.pairs, qos, payloadBytes: tp.payloadBytes, warmupMs: tp.warmupMs, durationMs: tp.durationMs, window: tp.window, brokerPid: cfg.pid }),
          );
          if (r) results.set(cfg.key, [...(results.get(cfg.key) ?? []), r]);
        }
      }
      for (const cfg of configs) {
        const rs = results.get(cfg.key);
        const med = rs ? rs.slice().sort((a, b) => a.msgsPerSecond - b.msgsPerSecond)[rs.length >> 1] : null;
        report.throughput[cfg.key] ??= { qos0: null, qos1: null };
        report.throughput[cfg.key][qos === 0 ? 'qos0' : 'qos1'] = med;
      }
    }
    const q0 = (k: string) => report.throughput[k]?.qos0?.msgsPerSecond ?? null;
    json.broker_msgs_per_s = { aedes_plain: q0('aedes_plain'), mqsec: q0('mqsec'), mosquitto_plain: q0('mosquitto_plain'), mosquitto_tls: q0('mosquitto_tls') };
    const a = json.broker_msgs_per_s.aedes_plain;
    const m = json.broker_msgs_per_s.mqsec;
    json.broker_ratio_mqsec_vs_aedes_plain = a && m !== null ? Math.round((m / a) * 1000) / 1000 : null;

    // ---- handshake rates --------------------------------------------------------------------
    const rate = async (key: string, methods: HandshakeMethod[] | undefined, pid: number | undefined) => {
      if (!methods) {
        report.rates[key] = null;
        return null;
      }
      say(`handshake rate ${key}`);
      const r = await attempt(`handshake rate ${key}`, () => measureHandshakeRate(methods, { durationMs: settings.rate.durationMs, brokerPid: pid }));
      report.rates[key] = r;
      if (r && r.completed === 0) notMeasured.push(`handshake rate ${key}: no handshake completed (${r.firstError ?? 'no error'})`);
      return r && r.completed > 0 ? r.perSecond : null;
    };
    json.handshakes_per_s.mqsec_phase1 = await rate('mqsec_phase1', mqsec && range(rc).map((i) => mqsecPhase1Method(mqsec!.port, dev(`rate1-${i}`))), mqsec?.pid);
    json.handshakes_per_s.mqsec_phase2 = await rate('mqsec_phase2', mqsec && range(rc).map((i) => mqsecPhase2Method(mqsec!.port, dev(`rate2-${i}`))), mqsec?.pid);
    json.handshakes_per_s.mosquitto_tls_full = await rate(
      'mosquitto_tls_full',
      n && range(rc).map((i) => tlsMethods.tls12MutualCertMethod(n.tls12MutualCert, c, `tls-${i}`)),
      nodelay?.pid,
    );
    json.handshakes_per_s.mosquitto_tls_resumed = await rate(
      'mosquitto_tls_resumed',
      n && range(rc).map((i) => tlsMethods.tlsResumptionMethod(n.tls12MutualCert, c, 'TLSv1.2', `tlsr-${i}`)),
      nodelay?.pid,
    );
    await rate('mqtt_plain (Mosquitto)', n && range(rc).map((i) => plainMqttMethod(n.plain, { ...plainCreds, clientId: `plain-${i}` })), nodelay?.pid);
    await rate('mqtt_plain (Aedes)', aedes && range(rc).map((i) => plainMqttMethod(aedes!.port, { ...plainCreds, clientId: `plain-${i}` })), aedes?.pid);
  } finally {
    say('stopping brokers');
    await Promise.allSettled([stock?.stop(), nodelay?.stop(), aedes?.stop(), mqsec?.stop()]);
    mqsecSetup?.cleanup();
    creds?.cleanup();
  }

  // ---- device-side work: XS engine and Node ---------------------------------------------------
  say('device work under Node');
  json.node_ms = await attempt('device work under Node', () => measureDeviceWorkNode(settings.device));
  if (o.skipXs) notMeasured.push('xs_ms: skipped (--no-xs)');
  else {
    say('device work inside XS');
    json.xs_ms = await attempt('device work inside XS (xsnap)', () => measureDeviceWorkXs(settings.device));
  }
  say('native X25519 on RV32IMC and Xtensa (QEMU)');
  json.device_native = await attempt('device_native (cross toolchains and QEMU)', () => measureNativeX25519());

  report.seconds = Math.round((performance.now() - t0) / 100) / 10;
  return report;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function cpuDescription(): string {
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? 'unknown'} x${cpus.length}`;
}

async function aedesVersion(): Promise<string> {
  try {
    // aedes' package.json is not in its "exports": find it next to the resolved entry
    const { createRequire } = await import('node:module');
    const fs = await import('node:fs');
    const path = await import('node:path');
    let dir = path.dirname(createRequire(import.meta.url).resolve('aedes'));
    for (let i = 0; i < 4; i++, dir = path.dirname(dir)) {
      const f = path.join(dir, 'package.json');
      if (fs.existsSync(f)) {
        const pkg = JSON.parse(fs.readFileSync(f, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'aedes') return pkg.version ?? 'unknown';
      }
    }
  } catch {
    // fall through
  }
  return 'unknown';
}

/** Command-line entry: `npx tsx bench/run.ts [--quick] [--json] [--no-xs]`. */
export async function benchMain(args: { quick: boolean; json: boolean; xs: boolean }, write: (s: string) => void, progress: (s: string) => void): Promise<BenchReport> {
  const rep = await runBench({ quick: args.quick, progress, skipXs: !args.xs });
  if (args.json) write(JSON.stringify(rep.json));
  else {
    const { formatReport } = await import('./report.js');
    write(formatReport(rep));
  }
  return rep;
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  // Ctrl-C / kill: exit normally so the started servers are stopped (bench/servers/spawn.ts)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  const argv = process.argv.slice(2);
  const json = argv.includes('--json');
  await benchMain(
    { quick: argv.includes('--quick'), json, xs: !argv.includes('--no-xs') },
    (s) => process.stdout.write(s + '\n'),
    (s) => process.stderr.write(`[bench] ${s}\n`),
  );
  // brokers are stopped; xsnap and sockets are closed: leave no stray handles behind
  process.exit(0);
}
