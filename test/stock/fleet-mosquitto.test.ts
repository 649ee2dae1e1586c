/**
 * `mqsec sim --flavour stock` against a stock Mosquitto 2.0 with dynamic
 * security and `mqsec keyservice --flavour mosquitto-dynsec` beside it
 * (docs/protocol.md §15): the real worker fleet (two worker threads), the
 * firmware sensor node with `broker.flavour: "stock"`, connection drops,
 * attackers, and a broker restart (a clean shutdown with its session store,
 * as a production Mosquitto keeps one): nothing lost, nothing twice.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasMosquittoDynsec, startDynsecMosquitto, type RunningDynsecMosquitto } from '../helpers/mosquitto-dynsec.js';
import { checkStockFleet, runStockFleet, startKeyService, type RunningKeyService } from './stock-fleet.js';

const run = hasMosquittoDynsec() ? describe : describe.skip;

run('stock fleet on Mosquitto + dynamic security', () => {
  let broker: RunningDynsecMosquitto;
  let ks: RunningKeyService;
  let data: string;

  beforeAll(async () => {
    broker = await startDynsecMosquitto({ persistent: true });
    data = await mkdtemp(path.join(os.tmpdir(), 'mqsec-stockfleet-'));
    ks = await startKeyService({ flavour: 'mosquitto-dynsec', broker: broker.url, data, username: broker.adminUser, password: broker.adminPassword });
  }, 60_000);

  afterAll(async () => {
    await ks?.stop();
    await broker?.stop();
    if (data) await rm(data, { recursive: true, force: true });
  }, 30_000);

  it('20 nodes in 2 workers, drops, attackers, a broker restart: every reading verified once, lost 0', async () => {
    const r = await runStockFleet({ broker: broker.url, data, devices: 20, durationS: 12, restartEveryS: 6, restart: () => broker.restart('SIGTERM') });
    console.log(JSON.stringify({ devices: r.devices, sent: r.sent, verified: r.verified, lost: r.lost, duplicates: r.duplicates, phase1: r.phase1_ok, phase2: r.phase2_ok, reconnects: r.reconnects, restarts: r.broker_restarts, drops: r.drops_injected, attacks: r.attacks, errors: r.errors_by_code, e2e_dropped: r.e2e_dropped, backend: r.backend_events, missing: r.missing_sample, not_back: r.not_back, commands: [r.commands_sent, r.commands_applied], s: r.duration_s }));
    checkStockFleet(r, 20);
    expect(ks.lines.join('\n')).not.toMatch(/stopped/);
  }, 120_000);
});
