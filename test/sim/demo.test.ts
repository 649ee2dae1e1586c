/**
 * The demo explains itself: rates over a 10 s window (not the instant between
 * two redraws, which reads 0 between bursts), wakes spread over the interval
 * instead of in lockstep, a banner that says what the attacker does and why
 * reading numbers jump by 32, and a QoS 1 retained command hint that really
 * reaches a sleeping node, whose applying it shows in the view.
 */
import { describe, expect, it, vi } from 'vitest';
import { exec } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import type { CliIo } from '../../cli/command.js';
import { DEMO_INTERVAL_S, runDemo } from '../../cli/commands/demo.js';
import { LiveView, type LiveSnapshot } from '../../host-sim/fleet/live-view.js';
import { WindowedRate } from '../../host-sim/fleet/stats.js';

const snap = (over: Partial<LiveSnapshot> = {}): LiveSnapshot => ({
  elapsedS: 30, devices: 20, connected: 1, phase1: 20, phase2: 100, sent: 280, verified: 280, lost: 0, duplicates: 0, errors: 0, p50: 12, p99: 40, ...over,
});

describe('live view', () => {
  it('a bursty counter reads as its average rate over the window, not 0 between bursts', () => {
    const r = new WindowedRate(10_000);
    const readings: (number | null)[] = [];
    let sent = 0;
    // 8 readings every 2 s (a burst), sampled every 500 ms for 30 s: 4 readings/s on average
    for (let t = 0; t <= 30_000; t += 500) {
      if (t % 2000 === 0) sent += 8;
      readings.push(r.rate('sent', sent, t));
    }
    expect(readings[0]).toBeNull(); // less than a second of history
    for (const x of readings.slice(25)) expect(x!).toBeGreaterThanOrEqual(3.2), expect(x!).toBeLessThanOrEqual(4.8);
  });

  it('says how many nodes sleep, how often they wake, the rate window, and the commands nodes applied', () => {
    const text = new LiveView({ tty: true }).render(snap({ intervalS: 5, commandsApplied: 1, lastCommand: 'node-0001 interval=10 at t=23s' }), 0).join('\n');
    expect(text).toMatch(/devices 20: 1 awake and connected, 19 asleep or connecting \(each wakes every 5 s\)/);
    expect(text).toMatch(/rates over 10 s/);
    expect(text).toMatch(/commands\s+applied 1\s+last: node-0001 interval=10 at t=23s/);
  });

  it('shows the protection mode of each device topic rule, with the group epochs behind the e2e ones', () => {
    const text = new LiveView({ tty: true })
      .render(
        snap({
          topicModes: [
            { action: 'publish', filter: 'sensors/<node>/#', mode: 'e2e', groups: 20, epochs: [2, 3] },
            { action: 'subscribe', filter: 'cmd/<node>/#', mode: 'hop' },
          ],
          e2eDropped: { REPLAY: 2 },
        }),
        0,
      )
      .join('\n');
    expect(text).toMatch(/topic modes\s+publish\s+sensors\/<node>\/#\s+e2e .*cannot read it \(20 groups, epoch 2-3\)/);
    expect(text).toMatch(/\n\s+subscribe cmd\/<node>\/#\s+hop  sealed per hop/);
    expect(text).toMatch(/REPLAY 2/);
  });
});

describe.runIf(existsSync('/usr/bin/mosquitto_pub'))('mqsec demo', () => {
  it('banner explains; the printed QoS 1 command reaches a sleeping node and shows as applied; wakes are staggered', async () => {
    const lines: string[] = [];
    const io: CliIo = { out: (l) => lines.push(l), err: () => {}, readStdin: async () => '' };
    const snapshots: LiveSnapshot[] = [];
    const spy = vi.spyOn(LiveView.prototype, 'update').mockImplementation((s: LiveSnapshot) => void snapshots.push(s));
    let published: Promise<unknown> | undefined;
    try {
      const devices = 6;
      const r = await runDemo({ devices, port: 0, durationS: 16 }, io, () => {
        const cmd = lines.find((l) => /^\s+mosquitto_pub .* -q 1 -r -t cmd\/node-0001\/interval -m 10$/.test(l));
        expect(cmd).toBeDefined();
        // sent while node-0001 sleeps or has not booted yet: retained, it gets it when it subscribes
        published = promisify(exec)(cmd!.trim());
      });
      await published;
      expect(r.commands_applied).toBeGreaterThanOrEqual(1);
      expect(r.attacks.accepted).toBe(0);
      const last = snapshots.at(-1)!;
      expect(last.commandsApplied).toBeGreaterThanOrEqual(1);
      expect(new LiveView({ tty: true }).render(last, Date.now()).join('\n')).toMatch(/commands\s+applied \d+\s+last: node-0001 interval=10/);
      // which mode each device topic uses, from the broker's policy (hop by hop by default)
      expect(last.topicModes).toEqual([
        { action: 'publish', filter: 'sensors/<node>/#', mode: 'hop' },
        { action: 'subscribe', filter: 'cmd/<node>/#', mode: 'hop' },
      ]);
      expect(new LiveView({ tty: true }).render(last, Date.now()).join('\n')).toMatch(/topic modes\s+publish\s+sensors\/<node>\/#\s+hop  sealed per hop/);
      // first boots spread over the interval: never all nodes awake at once (lockstep would be)
      const running = snapshots.filter((s) => s.elapsedS > DEMO_INTERVAL_S + 1 && s.elapsedS < 16);
      expect(running.length).toBeGreaterThan(5);
      expect(Math.max(...running.map((s) => s.connected))).toBeLessThanOrEqual(devices - 2);
    } finally {
      spy.mockRestore();
      process.exitCode = 0;
    }
    const banner = lines.join('\n');
    expect(banner).toMatch(/attacks rejected: an attacker records the logins it sees on the wire and replays them/);
    expect(banner).toMatch(/jumps by 32 at every wake/);
    expect(banner).toMatch(/mosquitto_sub .* -t 'sensors\/#' -v/);
  }, 150_000);
});
