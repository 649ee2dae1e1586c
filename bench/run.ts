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
 *   npx tsx bench/run.ts [--quick] [--json] [--no-xs] [--only=handshakes,throughput,rates,device]
 */
import os from 'node:os';
import { generateCredentials, type BenchCredentials } from './pki.js';
import { mosquittoVersion, startMosquitto, type MosquittoInstance } from './servers/mosquitto.js';
import { startChildBroker, type ChildBroker } from './servers/spawn.js';
import { E2E_ROLES, provisionMqsecBroker, type MqsecBrokerSetup } from './servers/mqsec.js';
import { measureHandshake, type HandshakeFigures, type HandshakeMethod } from './handshake/measure.js';
import { plainMqttMethod } from './handshake/plain.js';
import * as tlsMethods from './handshake/tls.js';
import { mqsecPhase1Method, mqsecPhase2Method } from './handshake/mqsec.js';
import { RateClientPool, splitLoops, wireCredentials, type RateResult, type RateSpec } from './handshake/rate.js';
import { interleavedOrder, medianOf, ratioAcrossRounds, type RatioStats } from './stats.js';
import { FANOUT_KEYS, HANDSHAKE_KEYS, RATE_KEYS, RATIO_KEYS, THROUGHPUT_KEYS, type FanoutKey, type HandshakeKey, type RateKey, type RatioKey, type ThroughputKey } from './keys.js';
import { runThroughput, type ThroughputOptions, type ThroughputResult } from './throughput/load.js';
import { mqttJsFactory } from './throughput/mqttjs.js';
import { mqsecFactory, mqsecTopic } from './throughput/mqsec.js';
import { e2eFactory } from './throughput/e2e.js';
import { measureDeviceWorkNode, measureDeviceWorkXs, measureEnvelopeOverhead, type DeviceFigures } from './xs.js';
import { measureNativeX25519, type NativeX25519Figures } from '../tools/native-isa.js';

export { FANOUT_KEYS, HANDSHAKE_KEYS, RATE_KEYS, RATIO_KEYS, THROUGHPUT_KEYS } from './keys.js';

type PerKey<K extends string, V> = Record<K, V>;

/** The `--json` object: exactly these keys. Fields that could not be measured are null. */
export interface BenchJson {
  handshake: Record<HandshakeKey, HandshakeFigures | null>;
  envelope_overhead_bytes: number | null;
  /** Primary throughput figure: broker CPU µs per delivered message, QoS 0, median over rounds. */
  broker_cpu_us_per_msg: PerKey<ThroughputKey, number | null>;
  broker_msgs_per_s: PerKey<ThroughputKey, number | null>;
  /** mqsec (device subscribers) / plain Aedes msgs/s, QoS 0: median of the per-round ratios. */
  broker_ratio_mqsec_vs_aedes_plain: number | null;
  /** mqsec end to end (§14) / plain Aedes msgs/s, same 1:1 workload: median of the per-round ratios. */
  broker_ratio_e2e_vs_aedes_plain: { qos0: number | null; qos1: number | null };
  /** One publisher -> `fanout.subscribers` subscribers: deliveries/s and broker CPU µs per delivery, medians over rounds. */
  fanout_msgs_per_s: { qos0: PerKey<FanoutKey, number | null>; qos1: PerKey<FanoutKey, number | null> };
  fanout_broker_cpu_us_per_delivery: { qos0: PerKey<FanoutKey, number | null>; qos1: PerKey<FanoutKey, number | null> };
  handshakes_per_s: PerKey<RateKey, number | null>;
  broker_cpu_ms_per_handshake: PerKey<RateKey, number | null>;
  handshakes_per_broker_cpu_s: PerKey<RateKey, number | null>;
  ratios: PerKey<RatioKey, RatioStats | null>;
  xs_ms: DeviceFigures | null;
  node_ms: DeviceFigures | null;
  /** The native X25519 counted on the ESP32 families' instruction sets under QEMU (tools/native-isa.ts). */
  device_native: NativeX25519Figures | null;
  env: { node: string; cpu: string; mosquitto: string; aedes: string };
}

const nullsOf = <K extends string, V>(keys: readonly K[]): Record<K, V | null> => Object.fromEntries(keys.map((k) => [k, null])) as Record<K, V | null>;

/** The `--json` object before any measurement: every figure null. */
export function emptyBenchJson(env: BenchJson['env']): BenchJson {
  return {
    handshake: nullsOf<HandshakeKey, HandshakeFigures>(HANDSHAKE_KEYS),
    envelope_overhead_bytes: null,
    broker_cpu_us_per_msg: nullsOf<ThroughputKey, number>(THROUGHPUT_KEYS),
    broker_msgs_per_s: nullsOf<ThroughputKey, number>(THROUGHPUT_KEYS),
    broker_ratio_mqsec_vs_aedes_plain: null,
    broker_ratio_e2e_vs_aedes_plain: { qos0: null, qos1: null },
    fanout_msgs_per_s: { qos0: nullsOf<FanoutKey, number>(FANOUT_KEYS), qos1: nullsOf<FanoutKey, number>(FANOUT_KEYS) },
    fanout_broker_cpu_us_per_delivery: { qos0: nullsOf<FanoutKey, number>(FANOUT_KEYS), qos1: nullsOf<FanoutKey, number>(FANOUT_KEYS) },
    handshakes_per_s: nullsOf<RateKey, number>(RATE_KEYS),
    broker_cpu_ms_per_handshake: nullsOf<RateKey, number>(RATE_KEYS),
    handshakes_per_broker_cpu_s: nullsOf<RateKey, number>(RATE_KEYS),
    ratios: nullsOf<RatioKey, RatioStats>(RATIO_KEYS),
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
  /** Throughput per configuration and QoS: every round (null: that round failed). */
  throughputRounds: Partial<Record<ThroughputKey, { qos0: Array<ThroughputResult | null>; qos1: Array<ThroughputResult | null> }>>;
  /** One-to-many per configuration and QoS: every round (null: that round failed). */
  fanoutRounds: Partial<Record<FanoutKey, { qos0: Array<ThroughputResult | null>; qos1: Array<ThroughputResult | null> }>>;
  /** Handshake rates per method: every round (null: that round failed). */
  rateRounds: Partial<Record<RateKey, Array<RateResult | null>>>;
  envelope: { first: number; worst: number } | null;
  notMeasured: string[];
  settings: BenchSettings;
}

export interface BenchSettings {
  handshakeSamples: number;
  rttOneWayDelayMs: number;
  throughput: { pairs: number; payloadBytes: number; window: number; warmupMs: number; durationMs: number; rounds: number };
  /** One publisher, `subscribers` subscribers of its topic; `window` messages in flight until the slowest has them. */
  fanout: { subscribers: number; payloadBytes: number; window: number; warmupMs: number; durationMs: number; rounds: number };
  rate: { workers: number; loops: number; durationMs: number; rounds: number };
  device: { runs: number; messages: number };
}

export interface BenchOptions {
  quick?: boolean;
  /** Progress lines (stderr in the CLI); never stdout in --json mode. */
  progress?: (line: string) => void;
  /** Skip the XS engine (e.g. when xsnap is not built). */
  skipXs?: boolean;
  /** Run only these sections (default: all); the others stay null / empty. */
  only?: BenchSection[];
}

export const BENCH_SECTIONS = ['handshakes', 'throughput', 'fanout', 'rates', 'device'] as const;
export type BenchSection = (typeof BENCH_SECTIONS)[number];

/** Parses `--only a,b`; throws on an unknown section name. */
export function parseSections(list: string | undefined): BenchSection[] | undefined {
  if (!list) return undefined;
  const out = list.split(',').map((x) => x.trim()).filter(Boolean);
  for (const x of out) if (!(BENCH_SECTIONS as readonly string[]).includes(x)) throw new Error(`unknown bench section "${x}" (one of ${BENCH_SECTIONS.join(', ')})`);
  return out as BenchSection[];
}

const DEVICE_ID = 'sensor01'; // 8 characters, the same client id for every method

export function benchSettings(quick: boolean): BenchSettings {
  return {
    handshakeSamples: quick ? 20 : 200,
    rttOneWayDelayMs: 25,
    // quick: 3 short interleaved rounds, so every ratio has a spread
    throughput: { pairs: 10, payloadBytes: 64, window: 64, warmupMs: quick ? 500 : 1000, durationMs: quick ? 1500 : 6000, rounds: quick ? 3 : 5 },
    fanout: { subscribers: 50, payloadBytes: 64, window: 16, warmupMs: quick ? 500 : 1000, durationMs: quick ? 1500 : 6000, rounds: quick ? 3 : 5 },
    rate: { workers: 2, loops: 8, durationMs: quick ? 1500 : 4000, rounds: quick ? 3 : 5 },
    device: { runs: quick ? 5 : 20, messages: quick ? 50 : 200 },
  };
}

export async function runBench(o: BenchOptions = {}): Promise<BenchReport> {
  const quick = o.quick ?? false;
  const say = o.progress ?? (() => {});
  const t0 = performance.now();
  const notMeasured: string[] = [];
  const settings = benchSettings(quick);
  const want = (x: BenchSection) => !o.only || o.only.includes(x);
  const json = emptyBenchJson({ node: process.version, cpu: cpuDescription(), mosquitto: mosquittoVersion(), aedes: await aedesVersion() });
  const report: BenchReport = {
    json,
    quick,
    startedAt: new Date().toISOString(),
    seconds: 0,
    handshakeExtra: {},
    throughputRounds: {},
    fanoutRounds: {},
    rateRounds: {},
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
  let pool: RateClientPool | undefined;
  try {
    say('starting brokers (Mosquitto stock + nodelay, Aedes, mqsec)');
    creds = generateCredentials(DEVICE_ID);
    const c = creds;
    stock = (await attempt('Mosquitto (stock)', () => startMosquitto(c, { nodelay: false }))) ?? undefined;
    nodelay = (await attempt('Mosquitto (set_tcp_nodelay)', () => startMosquitto(c, { nodelay: true }))) ?? undefined;
    aedes = (await attempt('plain Aedes', () => startChildBroker('aedes-plain'))) ?? undefined;
    const rl = settings.rate.loops;
    const pairs = settings.throughput.pairs;
    const fanSubs = settings.fanout.subscribers;
    const ids = [
      DEVICE_ID,
      'sensor02',
      ...range(rl).map((i) => `rate1-${i}`),
      ...range(rl).map((i) => `rate2-${i}`),
      ...range(2 * pairs).map((i) => `tput-${i}`),
      // hop-by-hop fan-out: one more publisher, device subscribers (the broker re-seals for each)
      'fanhop-pub',
      ...range(fanSubs).map((i) => `fanhop-${i}`),
      ...range(pairs).map((i) => ({ id: `e2epub-${i}`, role: E2E_ROLES.pairsWriter.name })),
      ...range(pairs).map((i) => ({ id: `e2esub-${i}`, role: E2E_ROLES.pairsReader.name })),
      { id: 'fane2e-pub', role: E2E_ROLES.fanWriter.name },
      ...range(fanSubs).map((i) => ({ id: `fane2e-${i}`, role: E2E_ROLES.fanReader.name })),
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
    if (want('handshakes')) {
      json.handshake.mqtt_plain = await hs('mqtt_plain', n && plainMqttMethod(n.plain, plainCreds));
      json.handshake.mqsec_phase1 = await hs('mqsec_phase1', mqsec && mqsecPhase1Method(mqsec.port, dev(DEVICE_ID)));
      json.handshake.mqsec_phase2 = await hs('mqsec_phase2', mqsec && mqsecPhase2Method(mqsec.port, dev('sensor02')));
      json.handshake.tls12_mutual_cert = await hs('tls12_mutual_cert', n && tlsMethods.tls12MutualCertMethod(n.tls12MutualCert, c));
      json.handshake.tls13_cert_password = await hs('tls13_cert_password', n && tlsMethods.tls13CertPasswordMethod(n.tls13CertPassword, c));
      json.handshake.tls_psk = await hs('tls_psk', n && tlsMethods.tls12PskMethod(n.tls12Psk, c));
      json.handshake.tls_psk_no_ticket = await hs('tls_psk_no_ticket', n && tlsMethods.tls12PskMethod(n.tls12Psk, c, c.deviceId, false));
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
    }

    // ---- broker throughput (configurations interleaved, order rotated per round) --------------
    const tp = settings.throughput;
    function tputDevices() {
      return range(2 * tp.pairs).map((i) => dev(`tput-${i}`));
    }
    const configs: Array<{ key: ThroughputKey; pid?: number; run?: (o: ThroughputOptions) => Promise<ThroughputResult> }> = [
      { key: 'aedes_plain', pid: aedes?.pid, run: aedes && ((to) => runThroughput(mqttJsFactory(`mqtt://127.0.0.1:${aedes!.port}`), to)) },
      {
        key: 'mqsec',
        pid: mqsec?.pid,
        run:
          mqsec &&
          ((to) =>
            runThroughput(mqsecFactory({ url: `mqtt://127.0.0.1:${mqsec!.port}`, devices: tputDevices(), pairs: tp.pairs, subscribers: 'device' }), {
              ...to,
              topicFor: mqsecTopic(tputDevices()),
            })),
      },
      {
        key: 'mqsec_app_subscribers',
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
        key: 'mqsec_e2e',
        pid: mqsec?.pid,
        run:
          mqsec &&
          ((to) =>
            runThroughput(
              e2eFactory(
                `mqtt://127.0.0.1:${mqsec!.port}`,
                range(tp.pairs).map((i) => dev(`e2epub-${i}`)),
                range(tp.pairs).map((i) => dev(`e2esub-${i}`)),
              ),
              { ...to, topicFor: (i) => `e2e/e2epub-${i}/bench` },
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
          ((to) => runThroughput(mqttJsFactory(`mqtts://127.0.0.1:${s.tls13CertPassword}`, { username: DEVICE_ID, password: c.password, ca: c.pem.ca }), to)),
      },
    ];
    /**
     * QoS 0 then QoS 1, each over `rounds` interleaved rounds (order rotated per round):
     * one load per configuration and round into `rounds_[key].qos0|qos1` (null: failed or no server).
     */
    const runRounds = async <K extends string>(
      cfgs: Array<{ key: K; pid?: number; run?: (o: ThroughputOptions) => Promise<ThroughputResult> }>,
      into: Partial<Record<K, { qos0: Array<ThroughputResult | null>; qos1: Array<ThroughputResult | null> }>>,
      rounds: number,
      label: string,
      load: Omit<ThroughputOptions, 'qos' | 'brokerPid'>,
    ) => {
      for (const cfg of cfgs) into[cfg.key] = { qos0: [], qos1: [] };
      for (const qos of [0, 1] as const) {
        for (let round = 0; round < rounds; round++) {
          for (const cfg of interleavedOrder(cfgs, round)) {
            const slot = into[cfg.key]![qos === 0 ? 'qos0' : 'qos1'];
            if (!cfg.run) {
              slot[round] = null;
              continue;
            }
            say(`${label} ${cfg.key} QoS ${qos} (round ${round + 1}/${rounds})`);
            slot[round] = await attempt(`${label} ${cfg.key} QoS ${qos} round ${round + 1}`, () => cfg.run!({ ...load, qos, brokerPid: cfg.pid }));
          }
        }
      }
    };
    if (want('throughput'))
      await runRounds(configs, report.throughputRounds, tp.rounds, 'throughput', {
        pairs: tp.pairs,
        payloadBytes: tp.payloadBytes,
        warmupMs: tp.warmupMs,
        durationMs: tp.durationMs,
        window: tp.window,
      });

    // ---- one publisher -> many subscribers (configurations interleaved, order rotated per round) --
    const fo = settings.fanout;
    const fanConfigs: Array<{ key: FanoutKey; pid?: number; run?: (o: ThroughputOptions) => Promise<ThroughputResult> }> = [
      { key: 'aedes_plain', pid: aedes?.pid, run: aedes && ((to) => runThroughput(mqttJsFactory(`mqtt://127.0.0.1:${aedes!.port}`), to)) },
      {
        key: 'mqsec_hop',
        pid: mqsec?.pid,
        run:
          mqsec &&
          ((to) =>
            runThroughput(
              mqsecFactory({
                url: `mqtt://127.0.0.1:${mqsec!.port}`,
                devices: [dev('fanhop-pub'), ...range(fo.subscribers).map((i) => dev(`fanhop-${i}`))],
                pairs: 1,
                subscribers: 'device',
              }),
              { ...to, topicFor: () => 'sensors/fanhop-pub/bench' },
            )),
      },
      {
        key: 'mqsec_e2e',
        pid: mqsec?.pid,
        run:
          mqsec &&
          ((to) =>
            runThroughput(
              e2eFactory(`mqtt://127.0.0.1:${mqsec!.port}`, [dev('fane2e-pub')], range(fo.subscribers).map((i) => dev(`fane2e-${i}`))),
              { ...to, topicFor: () => 'fan/fane2e-pub/bench' },
            )),
      },
    ];
    if (want('fanout'))
      await runRounds(fanConfigs, report.fanoutRounds, fo.rounds, `fan-out 1->${fo.subscribers}`, {
        pairs: 1,
        subscribersPerPair: fo.subscribers,
        payloadBytes: fo.payloadBytes,
        warmupMs: fo.warmupMs,
        durationMs: fo.durationMs,
        window: fo.window,
      });

    // ---- handshake rates (client loops in worker processes; methods interleaved per round) ------
    const rt = settings.rate;
    if (want('rates')) pool = (await attempt('handshake-rate client processes', () => RateClientPool.start(rt.workers))) ?? undefined;
    const wire = wireCredentials(c);
    const hex = (k: Uint8Array) => Buffer.from(k).toString('hex');
    const loopsOf = (f: (i: number) => RateSpec) => range(rt.loops).map(f);
    const rateMethods: Array<{ key: RateKey; pid?: number; specs?: RateSpec[] }> = [
      { key: 'mqsec_phase1', pid: mqsec?.pid, specs: mqsec && loopsOf((i) => ({ kind: 'mqsec_phase1', port: mqsec!.port, device: { id: `rate1-${i}`, keyHex: hex(dev(`rate1-${i}`).key) } })) },
      { key: 'mqsec_phase2', pid: mqsec?.pid, specs: mqsec && loopsOf((i) => ({ kind: 'mqsec_phase2', port: mqsec!.port, device: { id: `rate2-${i}`, keyHex: hex(dev(`rate2-${i}`).key) } })) },
      { key: 'aedes_plain', pid: aedes?.pid, specs: aedes && loopsOf((i) => ({ kind: 'plain', port: aedes!.port, ...plainCreds, clientId: `plain-${i}` })) },
      { key: 'mosquitto_tls_resumed', pid: nodelay?.pid, specs: n && loopsOf((i) => ({ kind: 'tls_resumption', port: n.tls12MutualCert, creds: wire, clientId: `tlsr-${i}` })) },
      { key: 'mosquitto_tls13_psk', pid: nodelay?.pid, specs: n && loopsOf((i) => ({ kind: 'tls13_psk', port: n.tls13Psk, creds: wire, clientId: `psk3-${i}` })) },
      { key: 'mosquitto_tls_full', pid: nodelay?.pid, specs: n && loopsOf((i) => ({ kind: 'tls12_mutual_cert', port: n.tls12MutualCert, creds: wire, clientId: `tls-${i}` })) },
      { key: 'mosquitto_plain', pid: nodelay?.pid, specs: n && loopsOf((i) => ({ kind: 'plain', port: n.plain, ...plainCreds, clientId: `plain-${i}` })) },
    ];
    if (want('rates')) for (const m of rateMethods) report.rateRounds[m.key] = [];
    for (let round = 0; round < (want('rates') ? rt.rounds : 0); round++) {
      for (const m of interleavedOrder(rateMethods, round)) {
        const slot = report.rateRounds[m.key]!;
        if (!m.specs || !pool) {
          slot[round] = null;
          continue;
        }
        say(`handshake rate ${m.key} (round ${round + 1}/${rt.rounds})`);
        const r = await attempt(`handshake rate ${m.key} round ${round + 1}`, () => pool!.measure(splitLoops(m.specs!, rt.workers), rt.durationMs, m.pid));
        if (r && r.completed === 0) notMeasured.push(`handshake rate ${m.key} round ${round + 1}: no handshake completed (${r.firstError ?? 'no error'})`);
        slot[round] = r && r.completed > 0 ? r : null;
      }
    }
  } finally {
    say('stopping brokers');
    await Promise.allSettled([stock?.stop(), nodelay?.stop(), aedes?.stop(), mqsec?.stop(), pool?.stop()]);
    mqsecSetup?.cleanup();
    creds?.cleanup();
  }
  summarise(report);

  // ---- device-side work: XS engine and Node ---------------------------------------------------
  if (want('device')) {
    say('device work under Node');
    json.node_ms = await attempt('device work under Node', () => measureDeviceWorkNode(settings.device));
  }
  if (!want('device')) notMeasured.push(`device work: not selected (--only ${o.only?.join(',')})`);
  else if (o.skipXs) notMeasured.push('xs_ms: skipped (--no-xs)');
  else {
    say('device work inside XS');
    json.xs_ms = await attempt('device work inside XS (xsnap)', () => measureDeviceWorkXs(settings.device));
  }
  say('native X25519 on RV32IMC and Xtensa (QEMU)');
  json.device_native = await attempt('device_native (cross toolchains and QEMU)', () => measureNativeX25519());

  report.seconds = Math.round((performance.now() - t0) / 100) / 10;
  return report;
}

/** Fills the JSON summary (medians over rounds, per-round ratios) from the rounds in `rep`. */
export function summarise(rep: BenchReport): void {
  const j = rep.json;
  const tput = (k: ThroughputKey, qos: 'qos0' | 'qos1') => rep.throughputRounds[k]?.[qos] ?? [];
  const msgs = (k: ThroughputKey, qos: 'qos0' | 'qos1') => tput(k, qos).map((r) => r?.msgsPerSecond ?? null);
  const cpuUs = (k: ThroughputKey, qos: 'qos0' | 'qos1') => tput(k, qos).map((r) => r?.brokerCpuUsPerMessage ?? null);
  for (const k of THROUGHPUT_KEYS) {
    const m = medianOf(msgs(k, 'qos0'));
    j.broker_msgs_per_s[k] = m === null ? null : Math.round(m);
    const c = medianOf(cpuUs(k, 'qos0'));
    j.broker_cpu_us_per_msg[k] = c === null ? null : Math.round(c * 100) / 100;
  }
  const fan = (k: FanoutKey, qos: 'qos0' | 'qos1') => rep.fanoutRounds[k]?.[qos] ?? [];
  const fanMsgs = (k: FanoutKey, qos: 'qos0' | 'qos1') => fan(k, qos).map((r) => r?.msgsPerSecond ?? null);
  for (const qos of ['qos0', 'qos1'] as const) {
    for (const k of FANOUT_KEYS) {
      const m = medianOf(fanMsgs(k, qos));
      j.fanout_msgs_per_s[qos][k] = m === null ? null : Math.round(m);
      const c = medianOf(fan(k, qos).map((r) => r?.brokerCpuUsPerMessage ?? null));
      j.fanout_broker_cpu_us_per_delivery[qos][k] = c === null ? null : Math.round(c * 100) / 100;
    }
  }
  const rate = (k: RateKey) => rep.rateRounds[k] ?? [];
  const cpuMs = (k: RateKey) => rate(k).map((r) => r?.brokerCpuMsPerHandshake ?? null);
  for (const k of RATE_KEYS) {
    const ps = medianOf(rate(k).map((r) => r?.perSecond ?? null));
    j.handshakes_per_s[k] = ps === null ? null : Math.round(ps);
    const c = medianOf(cpuMs(k));
    j.broker_cpu_ms_per_handshake[k] = c === null ? null : Math.round(c * 10000) / 10000;
    j.handshakes_per_broker_cpu_s[k] = c ? Math.round(1000 / c) : null;
  }
  const inv = (xs: Array<number | null>) => xs.map((x) => (x ? 1 / x : null));
  j.ratios = {
    phase2_cpu_vs_aedes_connect: ratioAcrossRounds(cpuMs('mqsec_phase2'), cpuMs('aedes_plain')),
    phase2_cpu_vs_tls12_resumed: ratioAcrossRounds(cpuMs('mqsec_phase2'), cpuMs('mosquitto_tls_resumed')),
    phase1_cpu_vs_aedes_connect: ratioAcrossRounds(cpuMs('mqsec_phase1'), cpuMs('aedes_plain')),
    phase1_cpu_vs_tls13_psk: ratioAcrossRounds(cpuMs('mqsec_phase1'), cpuMs('mosquitto_tls13_psk')),
    app_subscribers_qos0_msgs_vs_aedes: ratioAcrossRounds(msgs('mqsec_app_subscribers', 'qos0'), msgs('aedes_plain', 'qos0')),
    app_subscribers_qos1_msgs_vs_aedes: ratioAcrossRounds(msgs('mqsec_app_subscribers', 'qos1'), msgs('aedes_plain', 'qos1')),
    // capacity per broker core: Aedes' CPU per message over mqsec's (higher is better, like msgs/s)
    app_subscribers_qos0_cpu_per_msg_vs_aedes: ratioAcrossRounds(inv(cpuUs('mqsec_app_subscribers', 'qos0')), inv(cpuUs('aedes_plain', 'qos0'))),
    app_subscribers_qos1_cpu_per_msg_vs_aedes: ratioAcrossRounds(inv(cpuUs('mqsec_app_subscribers', 'qos1')), inv(cpuUs('aedes_plain', 'qos1'))),
    mqsec_qos0_msgs_vs_aedes: ratioAcrossRounds(msgs('mqsec', 'qos0'), msgs('aedes_plain', 'qos0')),
    mqsec_qos1_msgs_vs_aedes: ratioAcrossRounds(msgs('mqsec', 'qos1'), msgs('aedes_plain', 'qos1')),
    e2e_qos0_msgs_vs_aedes: ratioAcrossRounds(msgs('mqsec_e2e', 'qos0'), msgs('aedes_plain', 'qos0')),
    e2e_qos1_msgs_vs_aedes: ratioAcrossRounds(msgs('mqsec_e2e', 'qos1'), msgs('aedes_plain', 'qos1')),
    e2e_qos0_cpu_per_msg_vs_aedes: ratioAcrossRounds(cpuUs('mqsec_e2e', 'qos0'), cpuUs('aedes_plain', 'qos0')),
    e2e_qos1_cpu_per_msg_vs_aedes: ratioAcrossRounds(cpuUs('mqsec_e2e', 'qos1'), cpuUs('aedes_plain', 'qos1')),
    fanout_e2e_qos0_vs_aedes: ratioAcrossRounds(fanMsgs('mqsec_e2e', 'qos0'), fanMsgs('aedes_plain', 'qos0')),
    fanout_e2e_qos1_vs_aedes: ratioAcrossRounds(fanMsgs('mqsec_e2e', 'qos1'), fanMsgs('aedes_plain', 'qos1')),
    fanout_hop_qos0_vs_aedes: ratioAcrossRounds(fanMsgs('mqsec_hop', 'qos0'), fanMsgs('aedes_plain', 'qos0')),
    fanout_hop_qos1_vs_aedes: ratioAcrossRounds(fanMsgs('mqsec_hop', 'qos1'), fanMsgs('aedes_plain', 'qos1')),
    fanout_e2e_qos0_vs_hop: ratioAcrossRounds(fanMsgs('mqsec_e2e', 'qos0'), fanMsgs('mqsec_hop', 'qos0')),
    fanout_e2e_qos1_vs_hop: ratioAcrossRounds(fanMsgs('mqsec_e2e', 'qos1'), fanMsgs('mqsec_hop', 'qos1')),
  };
  j.broker_ratio_mqsec_vs_aedes_plain = j.ratios.mqsec_qos0_msgs_vs_aedes?.median ?? null;
  j.broker_ratio_e2e_vs_aedes_plain = { qos0: j.ratios.e2e_qos0_msgs_vs_aedes?.median ?? null, qos1: j.ratios.e2e_qos1_msgs_vs_aedes?.median ?? null };
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

/** Command-line entry: `npx tsx bench/run.ts [--quick] [--json] [--no-xs] [--only=sections]`. */
export async function benchMain(args: { quick: boolean; json: boolean; xs: boolean; only?: string }, write: (s: string) => void, progress: (s: string) => void): Promise<BenchReport> {
  const rep = await runBench({ quick: args.quick, progress, skipXs: !args.xs, only: parseSections(args.only) });
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
    { quick: argv.includes('--quick'), json, xs: !argv.includes('--no-xs'), only: argv.find((a) => a.startsWith('--only='))?.slice('--only='.length) },
    (s) => process.stdout.write(s + '\n'),
    (s) => process.stderr.write(`[bench] ${s}\n`),
  );
  // brokers are stopped; xsnap and sockets are closed: leave no stray handles behind
  process.exit(0);
}
