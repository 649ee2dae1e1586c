/**
 * Human output of `mqsec bench`: Markdown tables (readable in a terminal and
 * pasted as is into bench/RESULTS.md), each mqsec figure next to its
 * baseline with the ratio and the project's target.
 */
import type { HandshakeFigures } from './handshake/measure.js';
import type { BenchReport } from './run.js';
import { FANOUT_KEYS, RATE_KEYS, RATIO_KEYS, THROUGHPUT_KEYS } from './keys.js';
import { judgeRatio, medianOf, ratioAcrossRounds, type RatioStats, type Verdict } from './stats.js';

export interface TargetCheck {
  figure: string;
  mqsec: number | null;
  baseline: number | null;
  baselineName: string;
  /** Single-run ratio (bytes, round trips) or the median of the per-round ratios. */
  ratio: number | null;
  /** Per-round range of a ratio measured over rounds, e.g. "0.91-1.12 (3 rounds)". */
  spread?: string;
  target: string;
  verdict: Verdict;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;
const ratio = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null || b === 0 ? null : r3(a / b));
const exact = (ok: boolean | null): Verdict => (ok == null ? 'not measured' : ok ? 'met' : 'missed');

/** The smallest full TLS handshake measured (bytes), with its name. */
export function smallestTlsFull(rep: BenchReport): { name: string; bytes: number } | null {
  const h = rep.json.handshake;
  const candidates: Array<[string, HandshakeFigures | null | undefined]> = [
    ['tls12_mutual_cert', h.tls12_mutual_cert],
    ['tls13_cert_password', h.tls13_cert_password],
    ['tls_psk', h.tls_psk],
    ['tls_psk_no_ticket', h.tls_psk_no_ticket],
    ['tls13_psk', rep.handshakeExtra['tls13_psk']],
  ];
  let best: { name: string; bytes: number } | null = null;
  for (const [name, f] of candidates) if (f && (!best || f.bytes < best.bytes)) best = { name, bytes: f.bytes };
  return best;
}

export function spreadText(r: RatioStats | null): string | undefined {
  if (!r) return undefined;
  return `${fmt(r.min)}-${fmt(r.max)} (${r.rounds} round${r.rounds === 1 ? '' : 's'}${r.unstable ? ', UNSTABLE' : ''})`;
}

export function checkTargets(rep: BenchReport): TargetCheck[] {
  const j = rep.json;
  const h = j.handshake;
  const out: TargetCheck[] = [];
  const small = smallestTlsFull(rep);
  const p1 = h.mqsec_phase1;
  const p2 = h.mqsec_phase2;
  const rr = ratio(p1?.bytes, small?.bytes);
  out.push({ figure: 'phase 1 bytes', mqsec: p1?.bytes ?? null, baseline: small?.bytes ?? null, baselineName: `smallest full TLS handshake (${small?.name ?? '-'})`, ratio: rr, target: '< 0.7x', verdict: exact(rr == null ? null : rr < 0.7) });
  const r2 = ratio(p2?.bytes, h.mqtt_plain?.bytes);
  out.push({ figure: 'phase 2 bytes', mqsec: p2?.bytes ?? null, baseline: h.mqtt_plain?.bytes ?? null, baselineName: 'plain MQTT CONNECT/CONNACK', ratio: r2, target: '<= 1.2x', verdict: exact(r2 == null ? null : r2 <= 1.2) });
  out.push({ figure: 'phase 1 round trips', mqsec: p1?.rtt ?? null, baseline: h.mqtt_plain?.rtt ?? null, baselineName: 'plain MQTT', ratio: ratio(p1?.rtt, h.mqtt_plain?.rtt), target: '= 1', verdict: exact(p1 ? p1.rtt === 1 : null) });
  out.push({ figure: 'phase 2 round trips', mqsec: p2?.rtt ?? null, baseline: h.mqtt_plain?.rtt ?? null, baselineName: 'plain MQTT', ratio: ratio(p2?.rtt, h.mqtt_plain?.rtt), target: '= 1', verdict: exact(p2 ? p2.rtt === 1 : null) });

  const cpu = j.broker_cpu_ms_per_handshake;
  const rounds = (figure: string, mqsec: number | null, baseline: number | null, baselineName: string, r: RatioStats | null, limit: number, dir: 'at-most' | 'at-least' | 'below' | 'above') => {
    const sym = { 'at-most': '<=', 'at-least': '>=', below: '<', above: '>' }[dir];
    out.push({ figure, mqsec, baseline, baselineName, ratio: r?.median ?? null, spread: spreadText(r), target: `${sym} ${limit}x`, verdict: judgeRatio(r, limit, dir) });
  };
  const x = j.ratios;
  rounds('phase 2 broker CPU ms/handshake', cpu.mqsec_phase2, cpu.aedes_plain, 'plain Aedes CONNECT', x.phase2_cpu_vs_aedes_connect, 1.3, 'at-most');
  rounds('phase 2 broker CPU ms/handshake', cpu.mqsec_phase2, cpu.mosquitto_tls_resumed, 'Mosquitto TLS 1.2 resumption', x.phase2_cpu_vs_tls12_resumed, 1, 'below');
  rounds('phase 1 broker CPU ms/handshake', cpu.mqsec_phase1, cpu.aedes_plain, 'plain Aedes CONNECT', x.phase1_cpu_vs_aedes_connect, 2.5, 'at-most');
  rounds('phase 1 broker CPU ms/handshake', cpu.mqsec_phase1, cpu.mosquitto_tls13_psk, 'Mosquitto TLS 1.3 PSK (ECDHE) full', x.phase1_cpu_vs_tls13_psk, 1, 'below');
  const msg = (k: 'mqsec_app_subscribers' | 'aedes_plain' | 'mqsec' | 'mqsec_e2e', qos: 'qos0' | 'qos1') => medianOf((rep.throughputRounds[k]?.[qos] ?? []).map((r) => r?.msgsPerSecond ?? null));
  rounds('hop-by-hop msgs/s, QoS 0, app subscribers', msg('mqsec_app_subscribers', 'qos0'), msg('aedes_plain', 'qos0'), 'plain Aedes, same rounds', x.app_subscribers_qos0_msgs_vs_aedes, 0.6, 'at-least');
  rounds('hop-by-hop msgs/s, QoS 1, app subscribers', msg('mqsec_app_subscribers', 'qos1'), msg('aedes_plain', 'qos1'), 'plain Aedes, same rounds', x.app_subscribers_qos1_msgs_vs_aedes, 0.6, 'at-least');
  rounds('hop-by-hop msgs/s, QoS 0, device subscribers', msg('mqsec', 'qos0'), msg('aedes_plain', 'qos0'), 'plain Aedes, same rounds', x.mqsec_qos0_msgs_vs_aedes, 0.8, 'at-least');
  rounds('hop-by-hop msgs/s, QoS 1, device subscribers', msg('mqsec', 'qos1'), msg('aedes_plain', 'qos1'), 'plain Aedes, same rounds', x.mqsec_qos1_msgs_vs_aedes, 0.8, 'at-least');
  const cpuMsg = j.broker_cpu_us_per_msg;
  rounds('end-to-end msgs/s, QoS 0', msg('mqsec_e2e', 'qos0'), msg('aedes_plain', 'qos0'), 'plain Aedes, same rounds', x.e2e_qos0_msgs_vs_aedes, 0.9, 'at-least');
  rounds('end-to-end msgs/s, QoS 1', msg('mqsec_e2e', 'qos1'), msg('aedes_plain', 'qos1'), 'plain Aedes, same rounds', x.e2e_qos1_msgs_vs_aedes, 0.9, 'at-least');
  rounds('end-to-end broker CPU µs/msg, QoS 0', cpuMsg.mqsec_e2e, cpuMsg.aedes_plain, 'plain Aedes, same rounds', x.e2e_qos0_cpu_per_msg_vs_aedes, 1.2, 'at-most');
  const cpu1 = (k: 'mqsec_e2e' | 'aedes_plain') => medianOf((rep.throughputRounds[k]?.qos1 ?? []).map((r) => r?.brokerCpuUsPerMessage ?? null));
  rounds('end-to-end broker CPU µs/msg, QoS 1', cpu1('mqsec_e2e'), cpu1('aedes_plain'), 'plain Aedes, same rounds', x.e2e_qos1_cpu_per_msg_vs_aedes, 1.2, 'at-most');
  out.push({ figure: 'envelope overhead B (64 B payload)', mqsec: j.envelope_overhead_bytes, baseline: 20, baselineName: 'budget', ratio: ratio(j.envelope_overhead_bytes, 20), target: '<= 20 B', verdict: exact(j.envelope_overhead_bytes == null ? null : j.envelope_overhead_bytes <= 20) });
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
  out.push('Ratios measured over rounds are the median of the per-round ratios (both sides from the same round), with their range; a ratio whose rounds disagree by more than 2x is UNSTABLE and is not counted as met.');
  out.push('');
  out.push(
    table(
      ['figure', 'mqsec', 'baseline', 'baseline is', 'ratio', 'rounds', 'target', 'verdict'],
      checkTargets(rep).map((t) => [t.figure, t.mqsec, t.baseline, t.baselineName, t.ratio, t.spread ?? 'exact', t.target, t.verdict === 'met' ? 'met' : t.verdict.toUpperCase()]),
    ),
  );
  out.push('');

  out.push('## Broker throughput');
  out.push('');
  const tps = rep.settings.throughput;
  out.push(
    `${tps.pairs} publishers -> ${tps.pairs} subscribers (1:1 topics), ${tps.payloadBytes} B payloads, <= ${tps.window} in flight per pair, ${tps.durationMs / 1000} s window after ${tps.warmupMs / 1000} s warm-up, ${tps.rounds} interleaved rounds (order rotated each round); medians over rounds. Primary figure: broker CPU µs per delivered message (from /proc); msgs/s beside it, with the median and range of the per-round ratio to plain Aedes. mqsec: devices publish sealed, the broker opens, checks and re-seals per device subscriber (or hands plaintext to an app account). Cores: CPU used during the window.`,
  );
  out.push('');
  const rowsT: Array<Array<string | number | null>> = [];
  for (const k of THROUGHPUT_KEYS) {
    const t = rep.throughputRounds[k];
    if (!t) continue;
    const cells = (qos: 'qos0' | 'qos1') => {
      const rs = t[qos];
      const base = rep.throughputRounds.aedes_plain?.[qos] ?? [];
      const rMsgs = ratioAcrossRounds(rs.map((r) => r?.msgsPerSecond ?? null), base.map((r) => r?.msgsPerSecond ?? null));
      return [
        medianOf(rs.map((r) => r?.brokerCpuUsPerMessage ?? null)),
        medianOf(rs.map((r) => r?.msgsPerSecond ?? null)),
        k === 'aedes_plain' ? '1' : rMsgs ? `${fmt(rMsgs.median)} (${fmt(rMsgs.min)}-${fmt(rMsgs.max)})${rMsgs.unstable ? ' UNSTABLE' : ''}` : null,
        medianOf(rs.map((r) => r?.brokerCpuCores ?? null)),
        medianOf(rs.map((r) => r?.clientCpuCores ?? null)),
      ];
    };
    rowsT.push([k, ...cells('qos0'), ...cells('qos1')]);
  }
  out.push(
    table(
      ['broker', 'QoS 0 broker CPU µs/msg', 'msg/s', 'vs Aedes (range)', 'broker cores', 'client cores', 'QoS 1 broker CPU µs/msg', 'msg/s', 'vs Aedes (range)', 'broker cores', 'client cores'],
      rowsT,
    ),
  );
  out.push('');

  if (Object.keys(rep.fanoutRounds).length) {
    const fo = rep.settings.fanout;
    out.push(`## One publisher -> ${fo.subscribers} subscribers`);
    out.push('');
    out.push(
      `One publisher, ${fo.subscribers} subscribers of its topic, ${fo.payloadBytes} B payloads, <= ${fo.window} messages in flight (until the slowest subscriber has them), ${fo.durationMs / 1000} s window after ${fo.warmupMs / 1000} s warm-up, ${fo.rounds} interleaved rounds; deliveries (one per subscriber) per second and broker CPU µs per delivery, medians over rounds. Hop by hop the broker opens each message once and seals it once per subscriber; end to end it checks one channel MAC and forwards the group envelope to all.`,
    );
    out.push('');
    const fanRows: Array<Array<string | number | null>> = [];
    for (const k of FANOUT_KEYS) {
      const t = rep.fanoutRounds[k];
      if (!t) continue;
      const cells = (qos: 'qos0' | 'qos1') => {
        const rs = t[qos];
        const base = rep.fanoutRounds.aedes_plain?.[qos] ?? [];
        const r = ratioAcrossRounds(rs.map((x) => x?.msgsPerSecond ?? null), base.map((x) => x?.msgsPerSecond ?? null));
        return [
          medianOf(rs.map((x) => x?.brokerCpuUsPerMessage ?? null)),
          medianOf(rs.map((x) => x?.msgsPerSecond ?? null)),
          k === 'aedes_plain' ? '1' : r ? `${fmt(r.median)} (${fmt(r.min)}-${fmt(r.max)})${r.unstable ? ' UNSTABLE' : ''}` : null,
          rs.reduce((n, x) => n + (x?.lostOrStalled ?? 0), 0),
        ];
      };
      fanRows.push([k, ...cells('qos0'), ...cells('qos1')]);
    }
    out.push(table(['broker', 'QoS 0 broker CPU µs/delivery', 'deliveries/s', 'vs Aedes (range)', 'lost', 'QoS 1 broker CPU µs/delivery', 'deliveries/s', 'vs Aedes (range)', 'lost'], fanRows));
    out.push('');
  }

  out.push('## Handshake rate');
  out.push('');
  const rs = rep.settings.rate;
  out.push(
    `${rs.loops} client loops in ${rs.workers} client processes against one broker process, ${rs.durationMs / 1000} s per method and round, ${rs.rounds} interleaved rounds; medians over rounds. Primary figure: broker CPU per handshake (from /proc) and its inverse, handshakes per broker-CPU-second. Mosquitto with \`set_tcp_nodelay true\`.`,
  );
  out.push('');
  out.push(
    table(
      ['method', 'broker CPU ms/handshake', 'range over rounds', 'handshakes per broker-CPU-s', 'handshakes/s', 'failed'],
      RATE_KEYS.filter((k) => rep.rateRounds[k]).map((k) => {
        const rr = rep.rateRounds[k]!;
        const cpu = rr.map((r) => r?.brokerCpuMsPerHandshake).filter((v): v is number => v != null);
        return [
          k,
          j.broker_cpu_ms_per_handshake[k],
          cpu.length ? `${fmt(Math.min(...cpu))}-${fmt(Math.max(...cpu))}` : null,
          j.handshakes_per_broker_cpu_s[k],
          j.handshakes_per_s[k],
          rr.reduce((n, r) => n + (r?.failed ?? 0), 0),
        ];
      }),
    ),
  );
  out.push('');

  out.push('## Ratios over rounds');
  out.push('');
  out.push(
    table(
      ['ratio', 'median', 'min', 'max', 'spread (max/min)', 'rounds', 'stable'],
      RATIO_KEYS.map((k) => {
        const r = j.ratios[k];
        return [k, r?.median ?? null, r?.min ?? null, r?.max ?? null, r?.spread ?? null, r?.rounds ?? null, r ? (r.unstable ? 'UNSTABLE' : 'yes') : null];
      }),
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
