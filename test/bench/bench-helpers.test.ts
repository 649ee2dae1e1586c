/**
 * The benchmark's own helpers: the byte-counting proxy, the handshake
 * measurement on a minimal MQTT server, the JSON shape and the target
 * checks, the statistics over interleaved rounds. No timing is asserted
 * (speed belongs in bench/).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { countFlights, startCountingProxy, totals, type Chunk } from '../../bench/proxy.js';
import { measureHandshake } from '../../bench/handshake/measure.js';
import { connectPacket, plainMqttMethod } from '../../bench/handshake/plain.js';
import { benchSettings, emptyBenchJson, parseSections, HANDSHAKE_KEYS, RATIO_KEYS, summarise, type BenchReport } from '../../bench/run.js';
import { interleavedOrder, judgeRatio, medianOf, perBrokerCpu, ratioAcrossRounds, UNSTABLE_SPREAD } from '../../bench/stats.js';
import { splitLoops } from '../../bench/handshake/rate.js';
import { checkTargets, formatReport, smallestTlsFull } from '../../bench/report.js';
import { encodePacket, MqttParser } from '../../firmware/mqtt/codec.js';
import { median } from '../../bench/net.js';
import { runThroughput, type LoadClient } from '../../bench/throughput/load.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

/** Echo server that also records what it received. */
async function echoServer(): Promise<{ port: number; received: () => number }> {
  let received = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('data', (d) => {
      received += d.length;
      s.write(d);
    });
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  const port = await listen(server);
  cleanups.push(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  return { port, received: () => received };
}

/** Minimal MQTT server: answers every CONNECT with CONNACK 0 (or `returnCode`). */
async function connackServer(returnCode = 0): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    const parser = new MqttParser();
    s.on('data', (d) => {
      parser.feed(new Uint8Array(d), (p) => {
        if (p.type === 'connect') s.write(encodePacket({ type: 'connack', sessionPresent: false, returnCode }));
        if (p.type === 'disconnect') s.end();
      });
    });
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  const port = await listen(server);
  cleanups.push(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  return port;
}

function exchange(port: number, payloads: Uint8Array[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const expected = payloads.reduce((n, p) => n + p.length, 0);
    let got = 0;
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      for (const p of payloads) s.write(p);
    });
    s.on('data', (d) => {
      got += d.length;
      if (got >= expected) {
        s.end();
        resolve(got);
      }
    });
    s.on('error', reject);
  });
}

describe('byte-counting proxy', () => {
  it('counts every payload byte in both directions, per connection', async () => {
    const echo = await echoServer();
    const proxy = await startCountingProxy({ targetPort: echo.port });
    cleanups.push(() => proxy.close());
    const payloads = [new Uint8Array(1), new Uint8Array(1000).fill(7), new Uint8Array(70_000).fill(1)];
    const next = proxy.nextConnection();
    expect(await exchange(proxy.port, payloads)).toBe(71_001);
    const conn = await next;
    await conn.closed;
    expect(conn.bytesC2S).toBe(71_001);
    expect(conn.bytesS2C).toBe(71_001);
    expect(echo.received()).toBe(71_001);
    expect(totals(conn.chunks)).toEqual({ c2s: 71_001, s2c: 71_001 });

    const second = proxy.nextConnection();
    await exchange(proxy.port, [new Uint8Array(5)]);
    const conn2 = await second;
    await conn2.closed;
    expect(proxy.connections.map((c) => c.id)).toEqual([conn.id, conn2.id]);
    expect([conn2.bytesC2S, conn2.bytesS2C]).toEqual([5, 5]);
  });

  it('keeps byte order and counts the same with an added delay', async () => {
    const echo = await echoServer();
    const proxy = await startCountingProxy({ targetPort: echo.port, oneWayDelayMs: 5 });
    cleanups.push(() => proxy.close());
    const data = Uint8Array.from({ length: 3000 }, (_, i) => i % 251);
    const next = proxy.nextConnection();
    const received = await new Promise<Uint8Array>((resolve, reject) => {
      const parts: Buffer[] = [];
      const s = net.connect({ host: '127.0.0.1', port: proxy.port }, () => {
        for (let i = 0; i < data.length; i += 100) s.write(data.subarray(i, i + 100));
      });
      s.on('data', (d) => {
        parts.push(d);
        const all = Buffer.concat(parts);
        if (all.length >= data.length) {
          s.end();
          resolve(new Uint8Array(all));
        }
      });
      s.on('error', reject);
    });
    expect(received).toEqual(data);
    const conn = await next;
    await conn.closed;
    expect(conn.bytesC2S).toBe(3000);
    expect(conn.bytesS2C).toBe(3000);
  });

  it('tells flights apart by direction changes', () => {
    const c = (dir: 'c2s' | 's2c', bytes: number): Chunk => ({ dir, bytes, at: 0 });
    expect(countFlights([])).toBe(0);
    expect(countFlights([c('c2s', 50), c('s2c', 4)])).toBe(2);
    expect(countFlights([c('c2s', 1), c('c2s', 2), c('s2c', 3), c('s2c', 1), c('c2s', 9)])).toBe(3);
    expect(totals([c('c2s', 1), c('c2s', 2), c('s2c', 3)])).toEqual({ c2s: 3, s2c: 3 });
  });
});

describe('handshake measurement', () => {
  it('counts exactly CONNECT and CONNACK for plain MQTT', async () => {
    const port = await connackServer();
    const creds = { clientId: 'sensor01', username: 'sensor01', password: '0123456789abcdef' };
    const f = await measureHandshake(plainMqttMethod(port, creds), { samples: 3, byteSamples: 2, oneWayDelayMs: 10, settleMs: 20 });
    // 2 fixed header + 10 variable header + (2+8) client id + (2+8) user + (2+16) password
    expect(encodePacket(connectPacket(creds)).length).toBe(50);
    expect(f.bytes_c2s).toBe(50);
    expect(f.bytes_s2c).toBe(4);
    expect(f.bytes).toBe(54);
    expect(Number.isInteger(f.rtt)).toBe(true);
    expect(f.ms_p50).toBeGreaterThan(0);
  });

  it('fails, rather than reporting figures, when the server refuses', async () => {
    const port = await connackServer(5);
    await expect(measureHandshake(plainMqttMethod(port, { clientId: 'x' }), { samples: 1, byteSamples: 1 })).rejects.toThrow(/return code 5/);
  });
});

describe('report', () => {
  const fig = (bytes: number, rtt: number) => ({ bytes_c2s: bytes - 4, bytes_s2c: 4, bytes, rtt, ms_p50: 1 });
  const rateRound = (cpuMs: number) => ({ perSecond: 100, completed: 100, failed: 0, seconds: 1, brokerCpuMsPerHandshake: cpuMs, handshakesPerBrokerCpuSecond: Math.round(1000 / cpuMs) });
  const tputRound = (msgs: number, cpuUs: number) => ({ msgsPerSecond: msgs, delivered: msgs, lostOrStalled: 0, seconds: 1, brokerCpuCores: 0.5, brokerCpuUsPerMessage: cpuUs, clientCpuCores: 0.5 });

  function report(): BenchReport {
    const json = emptyBenchJson({ node: 'v20', cpu: 'cpu', mosquitto: '2.0.11', aedes: '1.2.0' });
    json.handshake.mqtt_plain = fig(54, 1);
    json.handshake.mqsec_phase1 = fig(181, 1);
    json.handshake.mqsec_phase2 = fig(70, 1);
    json.handshake.tls12_mutual_cert = fig(3034, 3);
    json.handshake.tls13_cert_password = fig(1727, 2);
    json.handshake.tls_psk = fig(617, 3);
    json.handshake.tls_psk_no_ticket = fig(410, 3);
    json.handshake.tls_resumption = fig(1128, 2);
    json.envelope_overhead_bytes = 18;
    json.device_native = {
      x25519_instructions: { rv32imc: 3_035_059, xtensa: 9_731_000 },
      xtensa_lx106_muldi3: { calls: 204_136, instructions_per_call: 26 },
      xtensa_lx6_instructions_estimate: 4_832_000,
      x25519_ms_estimate: { esp32c3_160mhz: 23.7, esp32_240mhz: 20.1 },
      cpi: { esp32c3: 1.25, esp32: 1 },
      reference_field16_instructions: { rv32imc: 16_510_910, xtensa: 40_000_000 },
      speedup_vs_field16: { rv32imc: 5.44, xtensa: 4.11 },
    };
    const rep: BenchReport = {
      json,
      quick: true,
      startedAt: 'now',
      seconds: 1,
      handshakeExtra: { tls13_psk: fig(890, 2) },
      throughputRounds: {
        aedes_plain: { qos0: [tputRound(1000, 10), tputRound(1200, 10), tputRound(900, 10)], qos1: [tputRound(500, 20), tputRound(500, 20), null] },
        // QoS 0: 0.7, 0.75, 0.667 of Aedes (stable, >= 0.6); QoS 1: 0.2 then 0.9 (disagree > 2x)
        mqsec_app_subscribers: { qos0: [tputRound(700, 15), tputRound(900, 14), tputRound(600, 16)], qos1: [tputRound(100, 40), tputRound(450, 30), tputRound(400, 30)] },
        // QoS 0: 0.95, 0.917, 1.0 of Aedes, CPU 11/10 per message; QoS 1: 0.8 of Aedes, CPU 1.5x
        mqsec_e2e: { qos0: [tputRound(950, 11), tputRound(1100, 11), tputRound(900, 11)], qos1: [tputRound(400, 30), tputRound(400, 30), tputRound(400, 30)] },
      },
      fanoutRounds: {
        aedes_plain: { qos0: [tputRound(50_000, 2), tputRound(40_000, 2), tputRound(45_000, 2)], qos1: [tputRound(20_000, 5), null, tputRound(20_000, 5)] },
        mqsec_hop: { qos0: [tputRound(10_000, 12), tputRound(8_000, 12), tputRound(9_000, 12)], qos1: [tputRound(5_000, 20), tputRound(5_000, 20), tputRound(5_000, 20)] },
        mqsec_e2e: { qos0: [tputRound(45_000, 2.2), tputRound(40_000, 2.2), tputRound(45_000, 2.2)], qos1: [tputRound(18_000, 6), tputRound(18_000, 6), tputRound(19_000, 6)] },
      },
      rateRounds: {
        aedes_plain: [rateRound(0.3), rateRound(0.32), rateRound(0.28)],
        mqsec_phase2: [rateRound(0.36), rateRound(0.4), rateRound(0.35)],
        mosquitto_tls_resumed: [rateRound(0.5), rateRound(0.5), rateRound(0.5)],
        mqsec_phase1: [rateRound(0.9), null, rateRound(0.8)],
        mosquitto_tls13_psk: [rateRound(0.7), rateRound(0.7), rateRound(0.7)],
      },
      envelope: { first: 18, worst: 20 },
      notMeasured: ['xs_ms: skipped'],
      settings: benchSettings(true),
    };
    summarise(rep);
    return rep;
  }

  it('the JSON object has exactly the specified keys', () => {
    const j = emptyBenchJson({ node: '', cpu: '', mosquitto: '', aedes: '' });
    expect(Object.keys(j)).toEqual([
      'handshake',
      'envelope_overhead_bytes',
      'broker_cpu_us_per_msg',
      'broker_msgs_per_s',
      'broker_ratio_mqsec_vs_aedes_plain',
      'broker_ratio_e2e_vs_aedes_plain',
      'fanout_msgs_per_s',
      'fanout_broker_cpu_us_per_delivery',
      'handshakes_per_s',
      'broker_cpu_ms_per_handshake',
      'handshakes_per_broker_cpu_s',
      'ratios',
      'xs_ms',
      'node_ms',
      'device_native',
      'env',
    ]);
    expect(Object.keys(j.handshake)).toEqual([...HANDSHAKE_KEYS]);
    expect(HANDSHAKE_KEYS).toEqual(['mqtt_plain', 'mqsec_phase1', 'mqsec_phase2', 'tls12_mutual_cert', 'tls13_cert_password', 'tls_psk', 'tls_psk_no_ticket', 'tls_resumption']);
    expect(Object.keys(j.broker_msgs_per_s)).toEqual(['aedes_plain', 'mqsec', 'mqsec_app_subscribers', 'mqsec_e2e', 'mosquitto_plain', 'mosquitto_tls']);
    expect(j.broker_ratio_e2e_vs_aedes_plain).toEqual({ qos0: null, qos1: null });
    for (const o of [j.fanout_msgs_per_s, j.fanout_broker_cpu_us_per_delivery]) {
      expect(Object.keys(o)).toEqual(['qos0', 'qos1']);
      expect(Object.keys(o.qos0)).toEqual(['aedes_plain', 'mqsec_hop', 'mqsec_e2e']);
    }
    // the required keys, in both per-handshake objects
    for (const o of [j.broker_cpu_ms_per_handshake, j.handshakes_per_broker_cpu_s, j.handshakes_per_s]) {
      for (const k of ['mqsec_phase1', 'mqsec_phase2', 'aedes_plain', 'mosquitto_tls_resumed', 'mosquitto_tls13_psk']) expect(Object.keys(o)).toContain(k);
    }
    expect(Object.keys(j.ratios)).toEqual([...RATIO_KEYS]);
    expect(Object.keys(j.env)).toEqual(['node', 'cpu', 'mosquitto', 'aedes']);
    expect(JSON.parse(JSON.stringify(j))).toEqual(j);
  });

  it('summarises rounds: medians, per-broker-CPU-second rates, per-round ratios', () => {
    const j = report().json;
    expect(j.broker_cpu_ms_per_handshake.aedes_plain).toBe(0.3);
    expect(j.broker_cpu_ms_per_handshake.mqsec_phase2).toBe(0.36);
    expect(j.handshakes_per_broker_cpu_s.mqsec_phase2).toBe(Math.round(1000 / 0.36));
    // a failed round is left out, not counted as zero
    expect(j.broker_cpu_ms_per_handshake.mqsec_phase1).toBeCloseTo(0.85, 6);
    expect(j.broker_cpu_ms_per_handshake.mosquitto_plain).toBe(null);
    expect(j.broker_msgs_per_s.aedes_plain).toBe(1000);
    expect(j.broker_cpu_us_per_msg.mqsec_app_subscribers).toBe(15);
    // per-round ratio 0.36/0.3, 0.4/0.32, 0.35/0.28 = 1.2, 1.25, 1.25
    expect(j.ratios.phase2_cpu_vs_aedes_connect).toMatchObject({ median: 1.25, min: 1.2, max: 1.25, rounds: 3, unstable: false });
    expect(j.ratios.phase1_cpu_vs_aedes_connect!.rounds).toBe(2);
    expect(j.ratios.app_subscribers_qos1_msgs_vs_aedes).toMatchObject({ rounds: 2, unstable: true });
    // capacity per core: Aedes 10 µs/msg over mqsec's 15, 14, 16
    expect(j.ratios.app_subscribers_qos0_cpu_per_msg_vs_aedes!.median).toBeCloseTo(10 / 15, 3);
    expect(j.ratios.mqsec_qos0_msgs_vs_aedes).toBe(null);
    // end to end, 1:1: per-round 0.95, 0.917, 1.0 -> median 0.95; CPU per message 11/10
    expect(j.broker_ratio_e2e_vs_aedes_plain.qos0).toBe(0.95);
    expect(j.broker_ratio_e2e_vs_aedes_plain.qos1).toBe(0.8);
    expect(j.ratios.e2e_qos0_cpu_per_msg_vs_aedes!.median).toBeCloseTo(1.1, 6);
    // one-to-many: medians per configuration, ratios per round (a failed Aedes round drops that round)
    expect(j.fanout_msgs_per_s.qos0).toEqual({ aedes_plain: 45_000, mqsec_hop: 9_000, mqsec_e2e: 45_000 });
    expect(j.fanout_broker_cpu_us_per_delivery.qos1).toEqual({ aedes_plain: 5, mqsec_hop: 20, mqsec_e2e: 6 });
    expect(j.ratios.fanout_e2e_qos0_vs_hop).toMatchObject({ median: 5, rounds: 3 });
    expect(j.ratios.fanout_hop_qos1_vs_aedes).toMatchObject({ median: 0.25, rounds: 2 });
    expect(j.ratios.fanout_e2e_qos1_vs_aedes!.rounds).toBe(2);
  });

  it('judges each target against its baseline and reports misses and unstable ratios', () => {
    const rep = report();
    expect(smallestTlsFull(rep)).toEqual({ name: 'tls_psk_no_ticket', bytes: 410 });
    const checks = checkTargets(rep);
    const t = (figure: string, baseline?: string) => checks.find((c) => c.figure === figure && (!baseline || c.baselineName.startsWith(baseline)))!;
    expect(t('phase 1 bytes').verdict).toBe('met');
    expect(t('phase 1 bytes').ratio).toBeCloseTo(181 / 410, 3);
    // 70 / 54 = 1.296 > 1.2: a miss must be reported as such
    expect(t('phase 2 bytes').verdict).toBe('missed');
    expect(t('phase 1 round trips').verdict).toBe('met');
    expect(t('phase 2 broker CPU ms/handshake', 'plain Aedes').verdict).toBe('met');
    expect(t('phase 2 broker CPU ms/handshake', 'Mosquitto').verdict).toBe('met');
    // phase 1: 3.0 and 2.86x Aedes > 2.5x
    expect(t('phase 1 broker CPU ms/handshake', 'plain Aedes').verdict).toBe('missed');
    expect(t('hop-by-hop msgs/s, QoS 0, app subscribers').verdict).toBe('met');
    // rounds disagree by more than 2x: never "met", whatever the median says
    expect(t('hop-by-hop msgs/s, QoS 1, app subscribers').verdict).toBe('unstable');
    expect(t('hop-by-hop msgs/s, QoS 0, device subscribers').verdict).toBe('not measured');
    expect(t('envelope overhead B (64 B payload)').verdict).toBe('met');
    expect(t('end-to-end msgs/s, QoS 0').verdict).toBe('met');
    expect(t('end-to-end msgs/s, QoS 1').verdict).toBe('missed');
    expect(t('end-to-end broker CPU µs/msg, QoS 0').verdict).toBe('met');
    expect(t('end-to-end broker CPU µs/msg, QoS 1').verdict).toBe('missed');
    const text = formatReport(rep);
    expect(text).toContain('## One publisher -> 50 subscribers');
    expect(text).toContain('| mqsec_e2e | 2.20 | 45,000 | 1 (0.900-1) | 0 | 6 | 18,000 | 0.925 (0.900-0.950) | 0 |');
    expect(text).toContain('| phase 2 bytes | 70 | 54 |');
    expect(text).toContain('MISSED');
    expect(text).toContain('UNSTABLE');
    expect(text).toContain('not measured: xs_ms: skipped');
    expect(text).toContain('| RV32IMC (ESP32-C3) | 3,035,059 | 16,510,910 | 5.44 |');
    expect(text).toContain('23.7 ms on an ESP32-C3 at 160 MHz (CPI 1.25), 20.1 ms on an ESP32 at 240 MHz (CPI 1)');
  });

  it('median of odd and even samples', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(Number.isNaN(median([]))).toBe(true);
  });
});

describe('load generator, one publisher -> many subscribers', () => {
  /** An in-process bus: deliveries after `delayMs` per subscriber; `drop(s, n)` loses subscriber s's n-th message. */
  function bus(delayMs: (s: number) => number, drop: (s: number, n: number) => boolean = () => false) {
    const subs = new Map<string, Array<(t: string, p: Uint8Array) => void>>();
    let maxInFlight = 0;
    let published = 0;
    const seenBy = new Map<number, number>();
    const factory = async (role: 'pub' | 'sub', i: number): Promise<LoadClient> => {
      let cb: (t: string, p: Uint8Array) => void = () => {};
      let n = 0;
      return {
        publish(topic, payload) {
          published++;
          maxInFlight = Math.max(maxInFlight, published - Math.min(...[...seenBy.values()]));
          for (const deliver of subs.get(topic) ?? []) deliver(topic, payload);
        },
        async subscribe(filter) {
          seenBy.set(i, 0);
          const list = subs.get(filter) ?? [];
          list.push((t, p) => {
            n++;
            if (drop(i, n)) return;
            setTimeout(() => {
              seenBy.set(i, (seenBy.get(i) ?? 0) + 1);
              cb(t, p);
            }, delayMs(i));
          });
          subs.set(filter, list);
        },
        onMessage(f) {
          cb = f;
        },
        async end() {},
      };
    };
    return { factory, maxInFlight: () => maxInFlight, published: () => published };
  }

  it('counts a delivery per subscriber and lets the slowest subscriber set the pace', async () => {
    // subscriber 3 is slow: the window (8) must be held against it, not against the fast ones
    const b = bus((s) => (s === 3 ? 5 : 0));
    const r = await runThroughput(b.factory, { pairs: 1, subscribersPerPair: 5, qos: 1, payloadBytes: 64, warmupMs: 50, durationMs: 300, window: 8, topicFor: () => 'fan/x' });
    expect(b.maxInFlight()).toBeLessThanOrEqual(8);
    expect(r.lostOrStalled).toBe(0);
    // a delivery per subscriber: the 4 fast ones are at most one window ahead of the slow one
    expect(r.delivered).toBeGreaterThanOrEqual(5 * 8);
  });

  it('counts what a subscriber lost once the pair stalls, then goes on', async () => {
    // subscriber 1 loses everything from its 10th message on (a QoS 0 subscriber cut off)
    const b = bus(() => 0, (s, n) => s === 1 && n >= 10);
    const r = await runThroughput(b.factory, { pairs: 1, subscribersPerPair: 3, qos: 0, payloadBytes: 64, warmupMs: 0, durationMs: 400, window: 4, stallMs: 100, topicFor: () => 'fan/y' });
    // each stall finds a full window (4) missing at subscriber 1 only, counts it and sends the next window
    expect(r.lostOrStalled).toBeGreaterThanOrEqual(8);
    expect(r.lostOrStalled % 4).toBe(0);
    expect(b.published()).toBe(9 + r.lostOrStalled + 4);
  });
});

describe('round statistics', () => {
  it('ratio over rounds pairs values of the same round and skips rounds missing a side', () => {
    expect(ratioAcrossRounds([2, 4, null, 3], [1, 2, 5, 0])).toEqual({ median: 2, min: 2, max: 2, spread: 1, rounds: 2, unstable: false });
    expect(ratioAcrossRounds([null], [1])).toBe(null);
    expect(ratioAcrossRounds([], [])).toBe(null);
  });

  it('a ratio whose rounds disagree by more than 2x is unstable; exactly 2x is not', () => {
    expect(ratioAcrossRounds([1, 2.01], [1, 1])!.unstable).toBe(true);
    expect(ratioAcrossRounds([1, 2, 1.5], [1, 1, 1])).toMatchObject({ median: 1.5, spread: 2, unstable: false });
    expect(ratioAcrossRounds([0, 1], [1, 1])).toMatchObject({ spread: Infinity, unstable: true });
    // one round is no spread at all: not enough to call a target met
    expect(ratioAcrossRounds([1], [1])!.unstable).toBe(true);
    expect(UNSTABLE_SPREAD).toBe(2);
  });

  it('judges on the median, and never judges an unstable ratio', () => {
    const r = (median: number, unstable = false) => ({ median, min: median, max: median, spread: 1, rounds: 3, unstable });
    expect(judgeRatio(r(1.3), 1.3, 'at-most')).toBe('met');
    expect(judgeRatio(r(1.31), 1.3, 'at-most')).toBe('missed');
    expect(judgeRatio(r(1), 1, 'below')).toBe('missed');
    expect(judgeRatio(r(0.6), 0.6, 'at-least')).toBe('met');
    expect(judgeRatio(r(0.1, true), 1, 'below')).toBe('unstable');
    expect(judgeRatio(null, 1, 'below')).toBe('not measured');
  });

  it('rotates the order of methods every round so each runs first equally often', () => {
    const items = ['a', 'b', 'c'];
    const firsts = [0, 1, 2, 3, 4, 5].map((r) => interleavedOrder(items, r)[0]);
    expect(firsts).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
    for (let r = 0; r < 3; r++) expect([...interleavedOrder(items, r)].sort()).toEqual(items);
    expect(interleavedOrder([], 2)).toEqual([]);
  });

  it('broker CPU per operation and operations per broker-CPU-second', () => {
    expect(perBrokerCpu(400, 120)).toEqual({ cpuMsPerOp: 0.3, opsPerCpuSecond: 3333 });
    expect(perBrokerCpu(0, 120)).toEqual({ cpuMsPerOp: null, opsPerCpuSecond: null });
    expect(perBrokerCpu(10, undefined)).toEqual({ cpuMsPerOp: null, opsPerCpuSecond: null });
    expect(medianOf([null, 3, undefined, 1])).toBe(2);
    expect(medianOf([null])).toBe(null);
  });

  it('splits client loops over worker processes, each loop always in the same one', () => {
    expect(splitLoops([0, 1, 2, 3, 4], 2)).toEqual([[0, 2, 4], [1, 3]]);
    expect(splitLoops([0], 3)).toEqual([[0]]);
  });
});

describe('mqsec bench command', () => {
  it('registers `bench` with --quick, --json, --no-xs and --only', async () => {
    const { Command } = await import('commander');
    const { benchCommand } = await import('../../cli/commands/bench.js');
    const program = new Command('mqsec');
    benchCommand.register(program, { out: () => {}, err: () => {}, readStdin: async () => '' });
    const bench = program.commands.find((c) => c.name() === 'bench');
    expect(bench).toBeDefined();
    expect(bench!.options.map((o) => o.long)).toEqual(['--quick', '--json', '--no-xs', '--only']);
    expect(parseSections('rates, throughput')).toEqual(['rates', 'throughput']);
    expect(parseSections(undefined)).toBe(undefined);
    expect(() => parseSections('rates,speed')).toThrow(/unknown bench section "speed"/);
  });
});
