/**
 * Human output of `mqsec bench`: Markdown tables (readable in a terminal and
 * pasted as is into bench/RESULTS.md), each mqsec figure next to its
 * baseline with the ratio and the project's target.
 */
import type { HandshakeFigures } from './handshake/measure.js';
import type { BenchReport } from './run.js';

export interface TargetCheck {
  figure: string;
  mqsec: number | null;
  baseline: number | null;
  baselineName: string;
  ratio: number | null;
  target: string;
  /** null when a side was not measured. */
  met: boolean | null;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;
const ratio = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null || b === 0 ? null : r3(a / b));

/** The smallest full TLS handshake measured (bytes), with its name. */
export function smallestTlsFull(rep: BenchReport): { name: string; bytes: number } | null {
  const h = rep.json.handshake;
  const candidates: Array<[string, HandshakeFigures | null | undefined]> = [
    ['tls12_mutual_cert', h.tls12_mutual_cert],
    ['tls13_cert_password', h.tls13_cert_password],
    ['tls_psk', h.tls_psk],
    ['tls13_psk', rep.handshakeExtra['tls13_psk']],
  ];
  let best: { name: string; bytes: number } | null = null;
  for (const [name, f] of candidates) if (f && (!best || f.bytes < best.bytes)) best = { name, bytes: f.bytes };
  return best;
}

export function checkTargets(rep: BenchReport): TargetCheck[] {
  const j = rep.json;
  const h = j.handshake;
  const out: TargetCheck[] = [];
  const small = smallestTlsFull(rep);
  const p1 = h.mqsec_phase1;
  const p2 = h.mqsec_phase2;
  const rr = ratio(p1?.bytes, small?.bytes);
  out.push({ figure: 'phase 1 bytes', mqsec: p1?.bytes ?? null, baseline: small?.bytes ?? null, baselineName: `smallest full TLS handshake (${small?.name ?? '-'})`, ratio: rr, target: '< 0.7x', met: rr == null ? null : rr < 0.7 });
  const r2 = ratio(p2?.bytes, h.mqtt_plain?.bytes);
  out.push({ figure: 'phase 2 bytes', mqsec: p2?.bytes ?? null, baseline: h.mqtt_plain?.bytes ?? null, baselineName: 'plain MQTT CONNECT/CONNACK', ratio: r2, target: '<= 1.2x', met: r2 == null ? null : r2 <= 1.2 });
  out.push({ figure: 'phase 1 round trips', mqsec: p1?.rtt ?? null, baseline: h.mqtt_plain?.rtt ?? null, baselineName: 'plain MQTT', ratio: ratio(p1?.rtt, h.mqtt_plain?.rtt), target: '= 1', met: p1 ? p1.rtt === 1 : null });
  out.push({ figure: 'phase 2 round trips', mqsec: p2?.rtt ?? null, baseline: h.mqtt_plain?.rtt ?? null, baselineName: 'plain MQTT', ratio: ratio(p2?.rtt, h.mqtt_plain?.rtt), target: '= 1', met: p2 ? p2.rtt === 1 : null });
  const rb = j.broker_ratio_mqsec_vs_aedes_plain;
  out.push({ figure: 'broker msgs/s, QoS 0', mqsec: j.broker_msgs_per_s.mqsec, baseline: j.broker_msgs_per_s.aedes_plain, baselineName: 'plain Aedes, same run', ratio: rb, target: '>= 0.8x', met: rb == null ? null : rb >= 0.8 });
  const m1 = rep.throughput['mqsec']?.qos1?.msgsPerSecond ?? null;
  const a1 = rep.throughput['aedes_plain']?.qos1?.msgsPerSecond ?? null;
  const rq1 = ratio(m1, a1);
  out.push({ figure: 'broker msgs/s, QoS 1', mqsec: m1, baseline: a1, baselineName: 'plain Aedes, same run', ratio: rq1, target: '>= 0.8x', met: rq1 == null ? null : rq1 >= 0.8 });
  const hr = ratio(j.handshakes_per_s.mqsec_phase2, j.handshakes_per_s.mosquitto_tls_resumed);
  out.push({ figure: 'phase 2 handshakes/s', mqsec: j.handshakes_per_s.mqsec_phase2, baseline: j.handshakes_per_s.mosquitto_tls_resumed, baselineName: 'Mosquitto TLS 1.2 resumed', ratio: hr, target: '> 1x', met: hr == null ? null : hr > 1 });
  const cpu2 = rep.rates['mqsec_phase2']?.brokerCpuMsPerHandshake;
  const cpuR = rep.rates['mosquitto_tls_resumed']?.brokerCpuMsPerHandshake;
  const cr = ratio(cpu2, cpuR);
  out.push({ figure: 'phase 2 broker CPU ms/handshake', mqsec: cpu2 ?? null, baseline: cpuR ?? null, baselineName: 'Mosquitto TLS 1.2 resumed', ratio: cr, target: '(lower is better; no target)', met: null });
  out.push({ figure: 'envelope overhead B (64 B payload)', mqsec: j.envelope_overhead_bytes, baseline: 20, baselineName: 'budget', ratio: ratio(j.envelope_overhead_bytes, 20), target: '<= 20 B', met: j.envelope_overhead_bytes == null ? null : j.envelope_overhead_bytes <= 20 });
  return out;
}

function table(head: string[], rows: Array<Array<string | number | null | undefined>>): string {
  const cell = (v: string | number | null | undefined) => (v == null ? 'n/a' : typeof v === 'number' ? fmt(v) : v);
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) lines.push(`| ${r.map(cell).join(' | ')} |`);
  return lines.join('\n');
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v >= 10000 ? v.toLocaleString('en-US') : String(v);
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3);
}

export function formatReport(rep: BenchReport): string {
  const j = rep.json;
  const out: string[] = [];
  out.push(`# mqsec bench (${rep.quick ? 'quick' : 'full'}) ${rep.startedAt}`);
  out.push('');
  out.push(`Node ${j.env.node}, ${j.env.cpu}, Mosquitto ${j.env.mosquitto}, Aedes ${j.env.aedes}; ${rep.seconds} s.`);
  out.push('');

  out.push('## Connection set-up: bytes, round trips, latency');
  out.push('');
  out.push('Bytes: TCP payload, both directions, TCP connect until ready (+ trailing handshake messages). RTT: round trips after the TCP handshake (emulated link). ms: median, direct loopback. Mosquitto with `set_tcp_nodelay true` unless marked stock; mqsec on the mqsec broker.');
  out.push('');
  const rows: Array<Array<string | number | null>> = [];
  const row = (name: string, f: HandshakeFigures | null | undefined) => rows.push([name, f?.bytes_c2s ?? null, f?.bytes_s2c ?? null, f?.bytes ?? null, f?.rtt ?? null, f?.ms_p50 ?? null]);
  for (const [k, f] of Object.entries(j.handshake)) row(k, f);
  for (const [k, f] of Object.entries(rep.handshakeExtra)) row(k, f);
  out.push(table(['method', 'C→S B', 'S→C B', 'total B', 'RTT', 'ms p50'], rows));
  out.push('');

  out.push('## mqsec against its baselines (same run)');
  out.push('');
  out.push(
    table(
      ['figure', 'mqsec', 'baseline', 'baseline is', 'ratio', 'target', 'met'],
      checkTargets(rep).map((t) => [t.figure, t.mqsec, t.baseline, t.baselineName, t.ratio, t.target, t.met == null ? 'n/a' : t.met ? 'yes' : 'NO']),
    ),
  );
  out.push('');

  out.push('## Broker throughput');
  out.push('');
  const tps = rep.settings.throughput as { pairs: number; payloadBytes: number; window: number; durationMs: number; rounds: number };
  out.push(
    `${tps.pairs} publishers -> ${tps.pairs} subscribers (1:1 topics), ${tps.payloadBytes} B payloads, <= ${tps.window} in flight per pair, ${tps.durationMs / 1000} s window, median of ${tps.rounds} round(s); delivered msgs/s. mqsec: devices publish sealed, the broker opens, checks and re-seals per subscriber; subscribers are mqsec devices (or a plaintext app account where marked). CPU in cores during the window.`,
  );
  out.push('');
  const aq0 = rep.throughput['aedes_plain']?.qos0?.msgsPerSecond;
  const aq1 = rep.throughput['aedes_plain']?.qos1?.msgsPerSecond;
  out.push(
    table(
      ['broker', 'QoS 0 msg/s', 'vs Aedes', 'broker CPU', 'client CPU', 'QoS 1 msg/s', 'vs Aedes', 'broker CPU', 'client CPU'],
      Object.entries(rep.throughput).map(([k, t]) => [
        k,
        t.qos0?.msgsPerSecond ?? null,
        ratio(t.qos0?.msgsPerSecond, aq0),
        t.qos0?.brokerCpuCores ?? null,
        t.qos0?.clientCpuCores ?? null,
        t.qos1?.msgsPerSecond ?? null,
        ratio(t.qos1?.msgsPerSecond, aq1),
        t.qos1?.brokerCpuCores ?? null,
        t.qos1?.clientCpuCores ?? null,
      ]),
    ),
  );
  out.push('');

  out.push('## Handshake rate (one broker process, 8 concurrent client loops)');
  out.push('');
  out.push(
    table(
      ['method', 'handshakes/s', 'broker CPU ms per handshake', 'failed'],
      Object.entries(rep.rates).map(([k, r]) => [k, r?.perSecond ?? null, r?.brokerCpuMsPerHandshake ?? null, r?.failed ?? null]),
    ),
  );
  out.push('');

  out.push('## Device-side work (noble suite; ms per operation, median)');
  out.push('');
  const keys = ['phase1_device', 'phase2_device', 'seal_64B', 'open_64B'] as const;
  out.push(table(['step', 'XS engine ms', 'Node ms', 'XS / Node'], keys.map((k) => [k, j.xs_ms?.[k] ?? null, j.node_ms?.[k] ?? null, ratio(j.xs_ms?.[k], j.node_ms?.[k])])));
  out.push('');
  const n = j.device_native;
  if (n) {
    out.push('## Native X25519 on the ESP32 instruction sets (QEMU instruction counts, one scalar multiplication)');
    out.push('');
    out.push(
      table(
        ['ISA', 'instructions (ten-limb field, device build)', 'instructions (sixteen-limb reference)', 'reference / device'],
        [
          ['RV32IMC (ESP32-C3)', n.x25519_instructions.rv32imc, n.reference_field16_instructions.rv32imc, n.speedup_vs_field16.rv32imc],
          ['Xtensa lx106 (software 64-bit products)', n.x25519_instructions.xtensa, n.reference_field16_instructions.xtensa, n.speedup_vs_field16.xtensa],
          ['Xtensa LX6 (ESP32), estimated', n.xtensa_lx6_instructions_estimate, null, null],
        ],
      ),
    );
    out.push('');
    out.push(
      `Estimated X25519: ${n.x25519_ms_estimate.esp32c3_160mhz} ms on an ESP32-C3 at 160 MHz (CPI ${n.cpi.esp32c3}), ${n.x25519_ms_estimate.esp32_240mhz} ms on an ESP32 at 240 MHz (CPI ${n.cpi.esp32}); CPI sources in bench/RESULTS.md.`,
    );
    out.push('');
  }
  if (rep.envelope) out.push(`Envelope overhead for a 64 B payload: ${rep.envelope.first} B (first message), ${rep.envelope.worst} B (largest sequence number before the mandatory rekey).`);
  if (rep.notMeasured.length) {
    out.push('');
    out.push('## Not measured');
    out.push('');
    for (const n of rep.notMeasured) out.push(`- not measured: ${n}`);
  }
  return out.join('\n');
}
