/**
 * Generic handshake measurement: bytes, round trips and latency of one
 * connection method, whatever the method is (plain MQTT, a TLS variant, an
 * mqsec phase). A method is a `dial` function; this module runs it through
 * the byte-counting proxy (bench/proxy.ts) and directly.
 *
 * Definitions (the same for every method):
 * - start: just before the TCP connect; TCP handshake = until the client's
 *   socket reports `connect`.
 * - ready: the first moment the client may send protected application data:
 *   plain MQTT and TLS: CONNACK (return code 0) received; mqsec phase 1: KX2
 *   verified and KX3 written (data may follow KX3 in the same flight);
 *   mqsec phase 2: CONNACK received (the resume credential rode in CONNECT).
 * - bytes: TCP payload in each direction from the TCP connect until the
 *   connection is quiet after ready (the client sends nothing after ready;
 *   the proxy snapshot is taken `settleMs` later, so trailing handshake
 *   messages such as TLS 1.3 NewSessionTicket are counted, as a capture
 *   would). The TCP handshake itself carries no payload.
 * - rtt: round trips after the TCP handshake until ready, measured on an
 *   emulated link: the proxy delays every chunk by D ms each way, and
 *   rtt = round((ready - tcpConnected) / 2D). Every flight the client has to
 *   wait for costs exactly 2D; local computation (well under D here) does
 *   not change the rounding. Unlike counting direction changes in a capture,
 *   this cannot be fooled by how writes are split or merged.
 * - ms_p50: median of (ready - start) over `samples` direct connections on
 *   loopback, no proxy.
 */
import { startCountingProxy } from '../proxy.js';
import { median, sleep } from '../net.js';

export interface DialTimes {
  startedAt: number;
  tcpConnectedAt: number;
  readyAt: number;
  /** Closes the connection (the measurement is over). */
  close(): void;
}

export interface HandshakeMethod {
  name: string;
  /** The server port this method connects to. */
  port: number;
  /** Runs once before any measurement (e.g. to obtain a TLS session or an mqsec ticket). */
  prepare?(): Promise<void>;
  /** Connects to 127.0.0.1:port and resolves when ready (see the module comment). */
  dial(port: number): Promise<DialTimes>;
}

export interface HandshakeFigures {
  bytes_c2s: number;
  bytes_s2c: number;
  bytes: number;
  rtt: number;
  ms_p50: number;
}

export interface MeasureOptions {
  /** Direct connections for ms_p50. */
  samples: number;
  /** Connections through the counting proxy (bytes; medians are reported). */
  byteSamples?: number;
  /** One-way delay of the emulated link for rtt. */
  oneWayDelayMs?: number;
  /** Quiet time after ready before the byte snapshot. */
  settleMs?: number;
}

export async function measureHandshake(method: HandshakeMethod, opts: MeasureOptions): Promise<HandshakeFigures> {
  const byteSamples = opts.byteSamples ?? 3;
  const delay = opts.oneWayDelayMs ?? 25;
  const settleMs = opts.settleMs ?? 60;
  if (method.prepare) await method.prepare();

  // bytes
  const c2s: number[] = [];
  const s2c: number[] = [];
  {
    const proxy = await startCountingProxy({ targetPort: method.port });
    try {
      for (let i = 0; i < byteSamples; i++) {
        const next = proxy.nextConnection();
        const dialed = await method.dial(proxy.port);
        const conn = await next;
        await sleep(settleMs);
        c2s.push(conn.bytesC2S);
        s2c.push(conn.bytesS2C);
        dialed.close();
        await conn.closed;
      }
    } finally {
      await proxy.close();
    }
  }

  // round trips on an emulated link
  const rtts: number[] = [];
  {
    const proxy = await startCountingProxy({ targetPort: method.port, oneWayDelayMs: delay });
    try {
      for (let i = 0; i < 3; i++) {
        const dialed = await method.dial(proxy.port);
        rtts.push(Math.round((dialed.readyAt - dialed.tcpConnectedAt) / (2 * delay)));
        dialed.close();
      }
    } finally {
      await proxy.close();
    }
  }

  // latency, direct
  const ms: number[] = [];
  for (let i = 0; i < opts.samples; i++) {
    const dialed = await method.dial(method.port);
    ms.push(dialed.readyAt - dialed.startedAt);
    dialed.close();
  }

  const bytes_c2s = median(c2s);
  const bytes_s2c = median(s2c);
  return {
    bytes_c2s,
    bytes_s2c,
    bytes: bytes_c2s + bytes_s2c,
    rtt: median(rtts),
    ms_p50: round2(median(ms)),
  };
}

export function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
