/**
 * Statistics of interleaved benchmark rounds. On a shared machine one run
 * of a method says little; what the bench reports is a ratio against a
 * baseline measured in the same round, over several rounds, with its
 * spread. A ratio whose rounds disagree by more than `UNSTABLE_SPREAD` is
 * reported as unstable and never counted as a met target.
 */
import { median } from './net.js';

/** max / min of a ratio's per-round values above which the ratio is unstable. */
export const UNSTABLE_SPREAD = 2;

export interface RatioStats {
  median: number;
  min: number;
  max: number;
  /** max / min (1 = the rounds agree); Infinity when a round's ratio is 0. */
  spread: number;
  /** Rounds in which both sides were measured. */
  rounds: number;
  unstable: boolean;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Per-round ratio numerator[i] / denominator[i] (both from round i), then
 * median, range and spread over the rounds where both sides were measured.
 * Null when no round has both.
 */
export function ratioAcrossRounds(numerator: ReadonlyArray<number | null | undefined>, denominator: ReadonlyArray<number | null | undefined>): RatioStats | null {
  const per: number[] = [];
  for (let i = 0; i < Math.min(numerator.length, denominator.length); i++) {
    const a = numerator[i];
    const b = denominator[i];
    if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) continue;
    per.push(a / b);
  }
  if (per.length === 0) return null;
  const min = Math.min(...per);
  const max = Math.max(...per);
  const spread = min > 0 ? max / min : max === 0 ? 1 : Infinity;
  return { median: r3(median(per)), min: r3(min), max: r3(max), spread: r3(spread), rounds: per.length, unstable: per.length < 2 || spread > UNSTABLE_SPREAD };
}

export type Verdict = 'met' | 'missed' | 'unstable' | 'not measured';

/**
 * A target on a ratio (`lower`: ratio must be <= limit, or < limit when
 * `strict`; else >= / >). Judged on the median; an unstable ratio is
 * 'unstable' whatever its median says.
 */
export function judgeRatio(r: RatioStats | null, limit: number, direction: 'at-most' | 'at-least' | 'below' | 'above'): Verdict {
  if (!r) return 'not measured';
  if (r.unstable) return 'unstable';
  const m = r.median;
  const ok = direction === 'at-most' ? m <= limit : direction === 'at-least' ? m >= limit : direction === 'below' ? m < limit : m > limit;
  return ok ? 'met' : 'missed';
}

/**
 * The order of `items` in round `round`: rotated by one per round, so every
 * item runs first, second, ... equally often and no method always gets the
 * coolest (or hottest) moment of the run.
 */
export function interleavedOrder<T>(items: readonly T[], round: number): T[] {
  if (items.length === 0) return [];
  const k = ((round % items.length) + items.length) % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** Broker CPU ms per operation and operations per broker-CPU-second, or nulls when nothing completed or CPU is unknown. */
export function perBrokerCpu(operations: number, brokerCpuMs: number | undefined): { cpuMsPerOp: number | null; opsPerCpuSecond: number | null } {
  if (brokerCpuMs === undefined || operations <= 0 || brokerCpuMs <= 0) return { cpuMsPerOp: null, opsPerCpuSecond: null };
  return { cpuMsPerOp: Math.round((brokerCpuMs / operations) * 10000) / 10000, opsPerCpuSecond: Math.round((operations * 1000) / brokerCpuMs) };
}

/** Median of the non-null values, or null. */
export function medianOf(values: ReadonlyArray<number | null | undefined>): number | null {
  const v = values.filter((x): x is number => x != null && Number.isFinite(x));
  return v.length ? median(v) : null;
}
