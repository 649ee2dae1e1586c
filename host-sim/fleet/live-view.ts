/**
 * Live terminal view of a running fleet: a compact block redrawn in place on
 * a TTY, periodic single log lines otherwise (CI logs, pipes).
 */
import { WindowedRate } from './stats.js';
import { formatTopicModes, type TopicModeRow } from './topic-modes.js';

export interface LiveSnapshot {
  elapsedS: number;
  devices: number;
  connected: number;
  phase1: number;
  phase2: number;
  sent: number;
  verified: number;
  /** Sent and not (yet) delivered: in flight while running, lost only at the end. */
  lost: number;
  duplicates: number;
  errors: number;
  p50: number | null;
  p99: number | null;
  attacksRejected?: number;
  brokerRestarts?: number;
  /** Seconds each node sleeps between wakes (deep-sleep mode). */
  intervalS?: number;
  /** Commands (cmd/<node>/...) nodes received and applied. */
  commandsApplied?: number;
  /** The last one, e.g. "node-0001 interval=10 at t=42s". */
  lastCommand?: string;
  /** Protection mode of each device topic rule (docs/protocol.md §14.1). */
  topicModes?: TopicModeRow[];
  /** End-to-end messages the backend refused (REPLAY copies, ...), by code. */
  e2eDropped?: Record<string, number>;
}

export interface LiveViewOptions {
  stream?: NodeJS.WriteStream;
  tty?: boolean;
  /** ms between redraws on a TTY / between lines otherwise */
  intervalMs?: number;
  lineIntervalMs?: number;
  header?: string[];
}

const fmt = (n: number | null, d = 0) => (n === null ? '-' : n.toFixed(d));

/** Rates are averaged over this window: wakes are bursts a few seconds apart. */
export const RATE_WINDOW_MS = 10_000;

export class LiveView {
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly rates = new WindowedRate(RATE_WINDOW_MS);
  private drawnLines = 0;
  private lastLineAt = -Infinity;
  private readonly lineIntervalMs: number;

  constructor(private readonly options: LiveViewOptions = {}) {
    this.stream = options.stream ?? process.stderr;
    this.tty = options.tty ?? Boolean(this.stream.isTTY);
    this.lineIntervalMs = options.lineIntervalMs ?? 5000;
  }

  render(s: LiveSnapshot, now: number): string[] {
    const p1s = this.rates.rate('p1', s.phase1, now);
    const p2s = this.rates.rate('p2', s.phase2, now);
    const mps = this.rates.rate('sent', s.sent, now);
    const asleep = s.devices - s.connected;
    const lines = [
      `mqsec fleet  t=${s.elapsedS.toFixed(0)}s  devices ${s.devices}: ${s.connected} awake and connected, ${asleep} asleep or connecting` +
        (s.intervalS !== undefined ? ` (each wakes every ${fmt(s.intervalS, s.intervalS % 1 ? 1 : 0)} s)` : '') +
        (s.brokerRestarts ? `  broker restarts ${s.brokerRestarts}` : ''),
      `handshakes   phase1 ${s.phase1} (${fmt(p1s, 1)}/s)   phase2 ${s.phase2} (${fmt(p2s, 1)}/s)   latency p50 ${fmt(s.p50, 1)} ms  p99 ${fmt(s.p99, 1)} ms   (rates over ${RATE_WINDOW_MS / 1000} s)`,
      `messages     sent ${s.sent} (${fmt(mps, 1)}/s)   verified ${s.verified}   in flight ${s.lost}   duplicates ${s.duplicates}   errors ${s.errors}` +
        (s.attacksRejected !== undefined ? `   attacks rejected ${s.attacksRejected}` : ''),
    ];
    if (s.commandsApplied !== undefined) lines.push(`commands     applied ${s.commandsApplied}${s.lastCommand ? `   last: ${s.lastCommand}` : ''}`);
    if (s.topicModes?.length) {
      const modes = formatTopicModes(s.topicModes);
      lines.push(`topic modes  ${modes[0]}`, ...modes.slice(1).map((m) => `             ${m}`));
    }
    if (s.e2eDropped && Object.keys(s.e2eDropped).length)
      lines.push(`backend      e2e copies and refusals dropped by its checks: ${Object.entries(s.e2eDropped).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    return lines;
  }

  update(s: LiveSnapshot, now = Date.now()): void {
    if (this.tty) {
      const lines = this.render(s, now);
      let out = this.drawnLines > 0 ? `\x1b[${this.drawnLines}A` : '';
      for (const l of lines) out += `\x1b[2K${l}\n`;
      this.stream.write(out);
      this.drawnLines = lines.length;
    } else if (now - this.lastLineAt >= this.lineIntervalMs) {
      this.lastLineAt = now;
      const l = this.render(s, now);
      this.stream.write(`[sim] ${l.map((x) => x.replace(/\s+/g, ' ')).join(' | ')}\n`);
    }
  }
}

export function summaryTable(rows: [string, string | number | null][]): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v === null ? '-' : v}`).join('\n');
}
