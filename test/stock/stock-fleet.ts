/**
 * What the stock-broker fleet tests share (fleet-mosquitto.test.ts,
 * fleet-rabbitmq.test.ts): the key service as `mqsec keyservice --flavour
 * ...` runs it (in this process), and `mqsec sim --flavour stock` with the
 * real worker fleet, faults, attackers and a broker restart the harness
 * performs, and the checks every run must pass.
 */
import { expect } from 'vitest';
import { runStockKeyService, type StockFlavourName } from '../../cli/commands/keyservice-stock.js';
import { runSimCommand } from '../../cli/commands/sim.js';
import type { CliIo } from '../../cli/command.js';
import type { FleetResult } from '../../host-sim/fleet/fleet.js';

export interface RunningKeyService {
  lines: string[];
  stop(): Promise<void>;
}

export async function startKeyService(o: { flavour: StockFlavourName; broker: string; data: string; username: string; password: string; httpPort?: number }): Promise<RunningKeyService> {
  const lines: string[] = [];
  const io: CliIo = { out: (l) => lines.push(l), err: (l) => lines.push(l), readStdin: async () => '' };
  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  const done = runStockKeyService({ flavour: o.flavour, broker: o.broker, data: o.data, username: o.username, password: o.password, httpHost: '127.0.0.1', httpPort: o.httpPort ?? 0, logLevel: process.env.KS_LOG ?? 'silent' }, io, stopped);
  const failed = done.then(() => new Error(`key service ended: ${lines.join(' / ')}`));
  for (const end = Date.now() + 60_000; !lines.some((l) => l.includes('linked to')); ) {
    const f = await Promise.race([failed, new Promise((r) => setTimeout(r, 50))]);
    if (f instanceof Error) throw f;
    if (Date.now() > end) throw new Error(`key service did not link: ${lines.join(' / ')}`);
  }
  return {
    lines,
    stop: async () => {
      stop();
      await done;
    },
  };
}

export async function runStockFleet(o: { broker: string; data: string; restart: () => Promise<void>; restartEveryS: number; durationS: number; devices: number }): Promise<FleetResult> {
  const io: CliIo = { out: () => {}, err: () => {}, readStdin: async () => '' };
  return runSimCommand(
    {
      flavour: 'stock',
      broker: o.broker,
      data: o.data,
      devices: o.devices,
      duration: o.durationS,
      rate: o.devices / 2,
      drop: 0.02,
      latency: 0,
      clockSkew: 0,
      powerCut: 0,
      attackers: 2,
      sleepMode: 'deep',
      workers: 2,
      json: true,
      logLevel: process.env.SIM_LOG ?? 'silent',
    },
    io,
    { restartBrokerEveryS: o.restartEveryS, restartExternalBroker: o.restart, quiesceS: 40 },
  );
}

/** What every stock fleet run must show: the faults happened, and nothing was lost, duplicated or let in. */
export function checkStockFleet(r: FleetResult, devices: number): void {
  // the run exercised what it claims to
  expect(r.flavour).toBe('stock');
  expect(r.mode).toBe('e2e');
  expect(r.groups.map((g) => g.devices)).toEqual([devices / 2, devices / 2]); // two worker threads
  expect(r.worker_failures).toEqual([]);
  expect(r.broker_restarts).toBeGreaterThanOrEqual(1);
  expect(r.drops_injected).toBeGreaterThan(0);
  expect(r.sent).toBeGreaterThan(devices * 2);
  // a drop after the bootstrap but before the keys makes that node's first ready a phase 2 (its ticket is kept)
  expect(r.phase1_ok).toBeGreaterThanOrEqual(devices / 2);
  expect(r.phase2_ok).toBeGreaterThan(devices);
  expect(r.reconnects!.phase2).toBeGreaterThan(0);
  expect(r.topic_modes).toEqual([
    { action: 'publish', filter: 'sensors/<node>/#', mode: 'e2e' },
    { action: 'subscribe', filter: 'cmd/<node>/#', mode: 'e2e' },
  ]);
  // attackers ran against the broker's own checks, and none got in
  expect(r.attacks.attempts).toBeGreaterThan(0);
  expect(r.attacks.accepted).toBe(0);
  // the app's end-to-end commands reached their nodes (queued while they slept) and were applied once each
  expect(r.commands_sent).toBeGreaterThanOrEqual(devices / 2);
  expect(r.commands_failed).toBe(0);
  expect(r.commands_applied).toBe(r.commands_sent);
  // nothing lost, nothing twice: every reading the nodes sent was opened once by the app
  expect(r.lost).toBe(0);
  expect(r.verified).toBe(r.sent);
  expect(r.duplicates).toBe(0);
  expect(r.out_of_order).toBe(0);
  expect(r.malformed).toBe(0);
  expect(Object.keys(r.e2e_dropped).filter((k) => k !== 'REPLAY')).toEqual([]);
  expect(r.connected_at_end).toBe(devices);
}
