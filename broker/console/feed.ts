/**
 * What the operator console shows live, computed in the broker process from
 * the broker's own state: its Prometheus counters (read in memory, never
 * scraped), Aedes' client events and the registry's change notifications.
 * The page never polls: it loads a snapshot once and then follows the
 * events this feed pushes (over Server-Sent Events, see routes.ts).
 *
 * - `stats`, once a second: connected devices, phase 1 / phase 2 per minute,
 *   messages per second in and out, refused logins per minute; kept for 15
 *   minutes so a page opened later still draws the whole window.
 * - `health`, every two seconds: memory, CPU and event-loop delay.
 * - `device`, whenever a device's session starts or ends (id only; the page
 *   asks for the row it shows), and `devices` when the registry changed.
 */
import { EventEmitter } from 'node:events';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { aedesClients, type BrokerContext } from '../context.js';
import type { BrokerMetrics } from '../metrics.js';

/** Seconds of history kept (the charts' window). */
export const HISTORY_S = 15 * 60;

export interface StatsPoint {
  /** Unix ms. */
  t: number;
  connected: number;
  phase1PerMin: number;
  phase2PerMin: number;
  inPerSec: number;
  outPerSec: number;
  refusedPerMin: number;
}

export interface Totals {
  connected: number;
  pending: number;
  phase1: number;
  phase2: number;
  phase1Failed: number;
  phase2Failed: number;
  messagesIn: number;
  messagesOut: number;
  revocationDisconnects: number;
  /** Refused logins by class (handshake error code, BAD_PASSWORD, RATE_LIMITED, ...). */
  refusedLogins: Record<string, number>;
  /** Messages and subscriptions refused by policy, by reason. */
  refusedByPolicy: Record<string, number>;
  /** Connections cut by the pre-parse limits, by reason. */
  refusedByLimits: Record<string, number>;
}

export interface HealthSample {
  t: number;
  pid: number;
  uptimeS: number;
  rssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  /** Share of one core used by the broker process since the last sample, 0..cores. */
  cpu: number;
  eventLoopDelayMs: { p50: number; p99: number; max: number };
  connections: number;
}

interface CounterValues {
  phase1: number;
  phase2: number;
  in: number;
  out: number;
  refused: number;
}

export class ConsoleFeed extends EventEmitter {
  private readonly history: StatsPoint[] = [];
  /** One counter sample per second over the last minute (the per-minute rates). */
  private readonly lastMinute: CounterValues[] = [];
  private totals: Totals | undefined;
  private healthSample: HealthSample | undefined;
  private readonly lastSeen = new Map<string, number>();
  private readonly sessionSince = new Map<string, number>();
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  private cpuAt = { usage: process.cpuUsage(), t: performance.now() };
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly detach: (() => void)[] = [];

  constructor(
    private readonly ctx: BrokerContext,
    private readonly metrics: BrokerMetrics,
  ) {
    super();
    this.setMaxListeners(0);
  }

  async start(): Promise<void> {
    const events = this.ctx.events;
    const onOnline = (devId: string) => this.devicePresence(devId, true);
    const onOffline = (devId: string) => this.devicePresence(devId, false);
    events.on('device-online', onOnline);
    events.on('device-offline', onOffline);
    this.detach.push(() => {
      events.off('device-online', onOnline);
      events.off('device-offline', onOffline);
    });
    this.loopDelay.enable();
    await this.sample();
    this.sampleHealth();
    const s = setInterval(() => void this.sample().catch(() => {}), 1000);
    const h = setInterval(() => this.sampleHealth(), 2000);
    s.unref();
    h.unref();
    this.timers.push(s, h);
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    for (const d of this.detach) d();
    this.loopDelay.disable();
    this.removeAllListeners();
  }

  /** The registry changed (an admin action here or from the CLI): device rows may differ. */
  registryChanged(): void {
    this.emit('devices', {});
  }

  series(): StatsPoint[] {
    return this.history.slice();
  }

  currentTotals(): Totals {
    return this.totals!;
  }

  health(): HealthSample {
    return this.healthSample!;
  }

  /** When the broker last saw the device connect or disconnect (since it started). */
  lastSeenOf(devId: string): number | undefined {
    return this.lastSeen.get(devId);
  }

  /** When the device's current session became ready (if it is online). */
  sessionSinceOf(devId: string): number | undefined {
    return this.sessionSince.get(devId);
  }

  private devicePresence(id: string, online: boolean): void {
    const now = Date.now();
    this.lastSeen.set(id, now);
    if (online) this.sessionSince.set(id, now);
    else this.sessionSince.delete(id);
    this.emit('device', { id, online, at: now });
  }

  private async counterValues(): Promise<{ values: CounterValues; totals: Totals }> {
    const m = this.metrics;
    const byLabel = async (metric: { get(): Promise<{ values: { labels: Record<string, string | number>; value: number }[] }> }, label: string) => {
      const out: Record<string, number> = {};
      for (const v of (await metric.get()).values) if (v.value > 0) out[String(v.labels[label])] = v.value;
      return out;
    };
    const auth = (await m.auth.get()).values;
    const authOf = (kind: string, result: string) => auth.find((v) => v.labels.kind === kind && v.labels.result === result)?.value ?? 0;
    const refusedLogins = await byLabel(m.refusals, 'class');
    const totals: Totals = {
      connected: this.ctx.liveDevices.size,
      pending: this.ctx.pendingCount.value,
      phase1: authOf('phase1', 'ok'),
      phase2: authOf('phase2', 'ok'),
      phase1Failed: authOf('phase1', 'fail'),
      phase2Failed: authOf('phase2', 'fail'),
      messagesIn: (await m.messages.get()).values[0]?.value ?? 0,
      messagesOut: (await m.delivered.get()).values[0]?.value ?? 0,
      revocationDisconnects: (await m.revocations.get()).values[0]?.value ?? 0,
      refusedLogins,
      refusedByPolicy: await byLabel(m.drops, 'reason'),
      refusedByLimits: await byLabel(m.rejects, 'reason'),
    };
    const refused = Object.values(refusedLogins).reduce((a, b) => a + b, 0);
    return { values: { phase1: totals.phase1, phase2: totals.phase2, in: totals.messagesIn, out: totals.messagesOut, refused }, totals };
  }

  private async sample(): Promise<void> {
    const { values, totals } = await this.counterValues();
    const prev = this.lastMinute[this.lastMinute.length - 1] ?? values;
    const first = this.lastMinute[0] ?? values;
    this.lastMinute.push(values);
    if (this.lastMinute.length > 61) this.lastMinute.shift();
    // per minute: the increase over the last 60 s (less right after start: then it is what was seen so far)
    const point: StatsPoint = {
      t: Date.now(),
      connected: totals.connected,
      phase1PerMin: values.phase1 - first.phase1,
      phase2PerMin: values.phase2 - first.phase2,
      inPerSec: values.in - prev.in,
      outPerSec: values.out - prev.out,
      refusedPerMin: values.refused - first.refused,
    };
    this.totals = totals;
    this.history.push(point);
    if (this.history.length > HISTORY_S) this.history.shift();
    this.emit('stats', { point, totals });
  }

  private sampleHealth(): void {
    const now = performance.now();
    const usage = process.cpuUsage();
    const usedUs = usage.user - this.cpuAt.usage.user + (usage.system - this.cpuAt.usage.system);
    const cpu = usedUs / 1000 / Math.max(1, now - this.cpuAt.t);
    this.cpuAt = { usage, t: now };
    const mem = process.memoryUsage();
    const ms = (ns: number) => Math.round((Number.isFinite(ns) ? ns : 0) / 1e4) / 100;
    const h = this.loopDelay;
    this.healthSample = {
      t: Date.now(),
      pid: process.pid,
      uptimeS: Math.round(process.uptime()),
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      heapTotalBytes: mem.heapTotal,
      cpu: Math.round(cpu * 1000) / 1000,
      eventLoopDelayMs: { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max) },
      connections: Object.keys(aedesClients(this.ctx)).length,
    };
    h.reset();
    this.emit('health', this.healthSample);
  }
}
