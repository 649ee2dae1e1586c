/**
 * The benchmark's own helpers: the byte-counting proxy, the handshake
 * measurement on a minimal MQTT server, the JSON shape and the target
 * checks. No timing is asserted (speed belongs in bench/).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { countFlights, startCountingProxy, totals, type Chunk } from '../../bench/proxy.js';
import { measureHandshake } from '../../bench/handshake/measure.js';
import { connectPacket, plainMqttMethod } from '../../bench/handshake/plain.js';
import { emptyBenchJson, HANDSHAKE_KEYS, type BenchReport } from '../../bench/run.js';
import { checkTargets, formatReport, smallestTlsFull } from '../../bench/report.js';
import { encodePacket, MqttParser } from '../../firmware/mqtt/codec.js';
import { median } from '../../bench/net.js';

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

  function report(): BenchReport {
    const json = emptyBenchJson({ node: 'v20', cpu: 'cpu', mosquitto: '2.0.11', aedes: '1.2.0' });
    json.handshake.mqtt_plain = fig(54, 1);
    json.handshake.mqsec_phase1 = fig(181, 1);
    json.handshake.mqsec_phase2 = fig(70, 1);
    json.handshake.tls12_mutual_cert = fig(3034, 3);
    json.handshake.tls13_cert_password = fig(1727, 2);
    json.handshake.tls_psk = fig(617, 3);
    json.handshake.tls_resumption = fig(1128, 2);
    json.broker_msgs_per_s = { aedes_plain: 1000, mqsec: 900, mosquitto_plain: 1200, mosquitto_tls: 1100 };
    json.broker_ratio_mqsec_vs_aedes_plain = 0.9;
    json.handshakes_per_s = { mqsec_phase1: 10, mqsec_phase2: 50, mosquitto_tls_full: 20, mosquitto_tls_resumed: 60 };
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
    return {
      json,
      quick: true,
      startedAt: 'now',
      seconds: 1,
      handshakeExtra: { tls13_psk: fig(890, 2) },
      throughput: {},
      rates: {},
      envelope: { first: 18, worst: 20 },
      notMeasured: ['xs_ms: skipped'],
      settings: { throughput: { pairs: 10, payloadBytes: 64, window: 64, durationMs: 1000, rounds: 1 } },
    };
  }

  it('the JSON object has exactly the specified keys', () => {
    const j = emptyBenchJson({ node: '', cpu: '', mosquitto: '', aedes: '' });
    expect(Object.keys(j)).toEqual([
      'handshake',
      'envelope_overhead_bytes',
      'broker_msgs_per_s',
      'broker_ratio_mqsec_vs_aedes_plain',
      'handshakes_per_s',
      'xs_ms',
      'node_ms',
      'device_native',
      'env',
    ]);
    expect(Object.keys(j.handshake)).toEqual([...HANDSHAKE_KEYS]);
    expect(HANDSHAKE_KEYS).toEqual(['mqtt_plain', 'mqsec_phase1', 'mqsec_phase2', 'tls12_mutual_cert', 'tls13_cert_password', 'tls_psk', 'tls_resumption']);
    expect(Object.keys(j.broker_msgs_per_s)).toEqual(['aedes_plain', 'mqsec', 'mosquitto_plain', 'mosquitto_tls']);
    expect(Object.keys(j.handshakes_per_s)).toEqual(['mqsec_phase1', 'mqsec_phase2', 'mosquitto_tls_full', 'mosquitto_tls_resumed']);
    expect(Object.keys(j.env)).toEqual(['node', 'cpu', 'mosquitto', 'aedes']);
    expect(JSON.parse(JSON.stringify(j))).toEqual(j);
  });

  it('judges each target against its baseline and reports misses', () => {
    const rep = report();
    expect(smallestTlsFull(rep)).toEqual({ name: 'tls_psk', bytes: 617 });
    const t = Object.fromEntries(checkTargets(rep).map((c) => [c.figure, c]));
    expect(t['phase 1 bytes'].met).toBe(true);
    expect(t['phase 1 bytes'].ratio).toBeCloseTo(181 / 617, 3);
    // 70 / 54 = 1.296 > 1.2: a miss must be reported as such
    expect(t['phase 2 bytes'].met).toBe(false);
    expect(t['phase 1 round trips'].met).toBe(true);
    expect(t['broker msgs/s, QoS 0'].met).toBe(true);
    expect(t['broker msgs/s, QoS 1'].met).toBe(null);
    expect(t['phase 2 handshakes/s'].met).toBe(false);
    expect(t['envelope overhead B (64 B payload)'].met).toBe(true);
    const text = formatReport(rep);
    expect(text).toContain('| phase 2 bytes | 70 | 54 |');
    expect(text).toContain('NO');
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

describe('mqsec bench command', () => {
  it('registers `bench` with --quick, --json and --no-xs', async () => {
    const { Command } = await import('commander');
    const { benchCommand } = await import('../../cli/commands/bench.js');
    const program = new Command('mqsec');
    benchCommand.register(program, { out: () => {}, err: () => {}, readStdin: async () => '' });
    const bench = program.commands.find((c) => c.name() === 'bench');
    expect(bench).toBeDefined();
    expect(bench!.options.map((o) => o.long)).toEqual(['--quick', '--json', '--no-xs']);
  });
});
