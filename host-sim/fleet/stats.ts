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

/**
 * Per-second rates of monotonically increasing counters over a sliding window
 * (default 10 s). A fleet that wakes every few seconds is bursty: a rate
 * between two redraws half a second apart reads 0 most of the time.
 */
export class WindowedRate {
  private readonly samples = new Map<string, { value: number; at: number }[]>();
  constructor(readonly windowMs = 10_000) {}

  /** Records `value` at `now`; returns the rate over the window, or null before 1 s of history. */
  rate(name: string, value: number, now: number): number | null {
    let s = this.samples.get(name);
    if (!s) this.samples.set(name, (s = []));
    if (s.length === 0 || now > s[s.length - 1].at) s.push({ value, at: now });
    // keep one sample at or before the window start as the base
    while (s.length > 2 && s[1].at <= now - this.windowMs) s.shift();
    const base = s[0];
    const span = now - base.at;
    if (span < 1000) return null;
    return ((value - base.value) * 1000) / span;
  }
}
