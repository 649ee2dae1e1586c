/**
 * Broker throughput: one workload for every broker. `pairs` publishers and
 * `pairs` subscribers; publisher i publishes 64-byte payloads on
 * `bench/<run>/<i>` and subscriber i subscribes to exactly that topic, so
 * every message is delivered once. Reported: messages delivered to
 * subscribers per second during the measurement window (after a warm-up).
 *
 * Flow control: each publisher keeps at most `window` messages in flight
 * (published, not yet delivered to its subscriber), so a fast client cannot
 * bury a slow broker under an unbounded queue and the figure is the
 * broker's sustained rate. The primary figure is the broker process's CPU
 * time per delivered message (from /proc, same window): when a broker is not
 * saturated, msgs/s mostly measures scheduling on a shared machine, while
 * CPU per message measures the broker. If a QoS 0 message is dropped (a broker may drop
 * QoS 0 under load), a pair's window would never drain: after `stallMs`
 * without progress it is reset and the loss is counted.
 *
 * One-to-many: with `subscribersPerPair` = n, publisher i has n subscribers
 * of its topic (the fan-out case, where a re-sealing broker pays one AEAD per
 * subscriber); a message leaves the window when its slowest subscriber has it,
 * and every delivery to every subscriber counts.
 */
import { randomBytes } from 'node:crypto';
import { sleep } from '../net.js';
import { procCpuMs } from '../servers/spawn.js';

const round2 = (x: number) => Math.round(x * 100) / 100;

export interface LoadClient {
  /** Publishes without waiting; throughput is counted at the subscriber. */
  publish(topic: string, payload: Uint8Array, qos: 0 | 1): void;
  subscribe(filter: string, qos: 0 | 1): Promise<void>;
  onMessage(cb: (topic: string, payload: Uint8Array) => void): void;
  end(): Promise<void>;
}

export type LoadClientFactory = (role: 'pub' | 'sub', index: number) => Promise<LoadClient>;

export interface ThroughputOptions {
  pairs: number;
  qos: 0 | 1;
  payloadBytes: number;
  warmupMs: number;
  durationMs: number;
  window: number;
  stallMs?: number;
  /** Subscribers of each publisher's topic (default 1; the factory sees index i * n + k). */
  subscribersPerPair?: number;
  /** Topic of pair i; default `bench/<run>/<i>`. Must be unique per pair. */
  topicFor?: (i: number) => string;
  /** PID of the broker process: its CPU use during the window is reported. */
  brokerPid?: number;
  /** Called when the measured window starts (after the warm-up), e.g. to start a profiler. */
  onMeasureStart?: () => void;
}

export interface ThroughputResult {
  msgsPerSecond: number;
  delivered: number;
  lostOrStalled: number;
  seconds: number;
  /** Broker CPU during the window, in cores (1 = one core fully busy); shows who the bottleneck is. */
  brokerCpuCores?: number;
  /** Broker CPU time per delivered message, µs: the primary throughput figure. */
  brokerCpuUsPerMessage?: number;
  /** Load generator (this process) CPU during the window, in cores. */
  clientCpuCores: number;
}

let runCounter = 0;

export async function runThroughput(factory: LoadClientFactory, o: ThroughputOptions): Promise<ThroughputResult> {
  const run = `${process.pid}-${++runCounter}`;
  const topicOf = o.topicFor ?? ((i: number) => `bench/${run}/${i}`);
  const payload = new Uint8Array(randomBytes(o.payloadBytes));
  const stallMs = o.stallMs ?? 1000;
  const fan = o.subscribersPerPair ?? 1;
  const subs: LoadClient[] = [];
  const pubs: LoadClient[] = [];
  const sent = new Array<number>(o.pairs).fill(0);
  /** Messages of pair i seen by its subscriber k, at [i * fan + k]. */
  const seen = new Array<number>(o.pairs * fan).fill(0);
  /** What every subscriber of pair i has seen (the slowest one's count). */
  const received = new Array<number>(o.pairs).fill(0);
  const lastProgress = new Array<number>(o.pairs).fill(0);
  let measuring = false;
  let running = true;
  let delivered = 0;
  let lost = 0;
  const slowest = (i: number) => {
    let m = Infinity;
    for (let k = 0; k < fan; k++) m = Math.min(m, seen[i * fan + k]);
    return m;
  };
  try {
    for (let i = 0; i < o.pairs; i++) {
      const topic = topicOf(i);
      for (let k = 0; k < fan; k++) {
        const s = i * fan + k;
        const sub = await factory('sub', s);
        subs.push(sub);
        sub.onMessage((t) => {
          if (t !== topic) return;
          seen[s]++;
          lastProgress[i] = performance.now();
          if (measuring) delivered++;
          if (fan === 1 || seen[s] <= received[i] + 1) {
            received[i] = fan === 1 ? seen[s] : slowest(i);
            pump(i);
          }
        });
        await sub.subscribe(topic, o.qos);
      }
    }
    for (let i = 0; i < o.pairs; i++) pubs.push(await factory('pub', i));

    const pump = (i: number) => {
      const pub = pubs[i];
      if (!pub) return;
      const topic = topicOf(i);
      while (running && sent[i] - received[i] < o.window) {
        sent[i]++;
        pub.publish(topic, payload, o.qos);
      }
    };
    const watchdog = setInterval(() => {
      const now = performance.now();
      for (let i = 0; i < o.pairs; i++) {
        if (running && sent[i] > received[i] && now - lastProgress[i] > stallMs) {
          // every subscriber still missing messages of this pair lost them: count, then start level
          for (let k = 0; k < fan; k++) {
            lost += sent[i] - seen[i * fan + k];
            seen[i * fan + k] = sent[i];
          }
          received[i] = sent[i];
          lastProgress[i] = now;
          pump(i);
        }
      }
    }, stallMs / 2);
    const start = performance.now();
    for (let i = 0; i < o.pairs; i++) {
      lastProgress[i] = start;
      pump(i);
    }
    await sleep(o.warmupMs);
    o.onMeasureStart?.();
    const brokerCpu0 = o.brokerPid === undefined ? undefined : procCpuMs(o.brokerPid);
    const clientCpu0 = process.cpuUsage();
    measuring = true;
    const t0 = performance.now();
    await sleep(o.durationMs);
    measuring = false;
    const seconds = (performance.now() - t0) / 1000;
    const clientCpu = process.cpuUsage(clientCpu0);
    const brokerCpu1 = o.brokerPid === undefined ? undefined : procCpuMs(o.brokerPid);
    running = false;
    clearInterval(watchdog);
    const res: ThroughputResult = {
      msgsPerSecond: Math.round(delivered / seconds),
      delivered,
      lostOrStalled: lost,
      seconds,
      clientCpuCores: round2((clientCpu.user + clientCpu.system) / 1e6 / seconds),
    };
    if (brokerCpu0 !== undefined && brokerCpu1 !== undefined) {
      res.brokerCpuCores = round2((brokerCpu1 - brokerCpu0) / 1000 / seconds);
      if (delivered > 0) res.brokerCpuUsPerMessage = round2(((brokerCpu1 - brokerCpu0) * 1000) / delivered);
    }
    return res;
  } finally {
    running = false;
    await Promise.allSettled([...pubs, ...subs].map((c) => c.end()));
  }
}
