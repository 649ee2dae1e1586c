/**
 * The names of the benchmark's figures (JSON keys), in their own module so
 * the report can import them without importing bench/run.ts, whose
 * command-line entry awaits the report at its top level.
 */
export const HANDSHAKE_KEYS = [
  'mqtt_plain',
  'mqsec_phase1',
  'mqsec_phase2',
  'tls12_mutual_cert',
  'tls13_cert_password',
  'tls_psk',
  'tls_psk_no_ticket',
  'tls_resumption',
] as const;
export type HandshakeKey = (typeof HANDSHAKE_KEYS)[number];

/**
 * Handshake-rate methods, each against one broker process whose CPU is read
 * from /proc: mqsec phases on the mqsec broker, a plain CONNECT on plain
 * Aedes and on Mosquitto, and Mosquitto's TLS 1.2 resumption, TLS 1.3 PSK
 * (with ECDHE) and TLS 1.2 full mutual-certificate handshakes.
 */
export const RATE_KEYS = [
  'mqsec_phase1',
  'mqsec_phase2',
  'aedes_plain',
  'mosquitto_tls_resumed',
  'mosquitto_tls13_psk',
  'mosquitto_tls_full',
  'mosquitto_plain',
] as const;
export type RateKey = (typeof RATE_KEYS)[number];

/** 1:1 pairs. `mqsec` and `mqsec_app_subscribers` are hop by hop (§8), `mqsec_e2e` end to end (§14). */
export const THROUGHPUT_KEYS = ['aedes_plain', 'mqsec', 'mqsec_app_subscribers', 'mqsec_e2e', 'mosquitto_plain', 'mosquitto_tls'] as const;
export type ThroughputKey = (typeof THROUGHPUT_KEYS)[number];

/** One publisher -> many subscribers of its topic: plain Aedes, mqsec hop by hop (device subscribers), mqsec end to end. */
export const FANOUT_KEYS = ['aedes_plain', 'mqsec_hop', 'mqsec_e2e'] as const;
export type FanoutKey = (typeof FANOUT_KEYS)[number];

/**
 * Ratios judged against the project's targets, each over the interleaved
 * rounds of one run (bench/stats.ts): numerator and denominator come from
 * the same round.
 */
export const RATIO_KEYS = [
  'phase2_cpu_vs_aedes_connect',
  'phase2_cpu_vs_tls12_resumed',
  'phase1_cpu_vs_aedes_connect',
  'phase1_cpu_vs_tls13_psk',
  'app_subscribers_qos0_msgs_vs_aedes',
  'app_subscribers_qos1_msgs_vs_aedes',
  'app_subscribers_qos0_cpu_per_msg_vs_aedes',
  'app_subscribers_qos1_cpu_per_msg_vs_aedes',
  'mqsec_qos0_msgs_vs_aedes',
  'mqsec_qos1_msgs_vs_aedes',
  'e2e_qos0_msgs_vs_aedes',
  'e2e_qos1_msgs_vs_aedes',
  // broker CPU per delivered message, mqsec e2e over plain Aedes (lower is better)
  'e2e_qos0_cpu_per_msg_vs_aedes',
  'e2e_qos1_cpu_per_msg_vs_aedes',
  // one-to-many deliveries/s
  'fanout_e2e_qos0_vs_aedes',
  'fanout_e2e_qos1_vs_aedes',
  'fanout_hop_qos0_vs_aedes',
  'fanout_hop_qos1_vs_aedes',
  'fanout_e2e_qos0_vs_hop',
  'fanout_e2e_qos1_vs_hop',
] as const;
export type RatioKey = (typeof RATIO_KEYS)[number];
