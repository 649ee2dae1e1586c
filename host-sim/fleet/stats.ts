/**
 * Fleet statistics: counters and a bounded latency sample with percentiles.
 * Kept allocation-light because a 1,000-device soak updates it constantly.
 */
export interface FleetSummary {
  devices: number;
  phase1_ok: number;
  phase2_ok: number;
  sent: number;
  verified: number;
  lost: number;
  duplicates: number;
  errors: number;
  handshake_ms_p50: number | null;
  handshake_ms_p99: number | null;
}

export class LatencySample {
  private readonly values: number[] = [];
  private seen = 0;
  constructor(private readonly capacity = 20_000, private readonly rand: () => number = Math.random) {}
  add(ms: number): void {
    this.seen++;
    if (this.values.length < this.capacity) this.values.push(ms);
    else {
      // reservoir sampling keeps an unbiased sample of everything seen
      const j = Math.floor(this.rand() * this.seen);
      if (j < this.capacity) this.values[j] = ms;
    }
  }
  get count(): number {
    return this.seen;
  }
  percentile(p: number): number | null {
    if (this.values.length === 0) return null;
    const sorted = [...this.values].sort((a, b) => a - b);
    const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return Math.round(sorted[idx] * 100) / 100;
  }
}

/** Per-second rates from monotonically increasing counters. */
export class RateMeter {
  private last = new Map<string, { value: number; at: number }>();
  rate(name: string, value: number, now: number): number {
    const prev = this.last.get(name);
    this.last.set(name, { value, at: now });
    if (!prev || now <= prev.at) return 0;
    return ((value - prev.value) * 1000) / (now - prev.at);
  }
}
