/**
 * `mqsec sim --flavour stock` against a stock RabbitMQ 3.10 (MQTT plugin +
 * HTTP auth backend) with `mqsec keyservice --flavour http-auth` answering
 * its checks (docs/protocol.md §15.9): the real worker fleet (two worker
 * threads), the firmware sensor node with `broker.flavour: "stock"`,
 * connection drops, attackers, and a broker restart (a clean stop and start
 * of the node: durable session queues and persistent QoS 1 messages are
 * kept): nothing lost, nothing twice.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/brokers.js';
import { hasRabbitmq, startRabbitmq, type RunningRabbitmq } from '../helpers/rabbitmq.js';
import { checkStockFleet, runStockFleet, startKeyService, type RunningKeyService } from './stock-fleet.js';

const run = hasRabbitmq() ? describe : describe.skip;

run('stock fleet on RabbitMQ + HTTP auth', () => {
  let rabbit: RunningRabbitmq;
  let ks: RunningKeyService;
  let data: string;

  beforeAll(async () => {
    data = await mkdtemp(path.join(os.tmpdir(), 'mqsec-stockfleet-rmq-'));
    // the broker is configured with the key service's URL before either runs
    const httpPort = await freePort();
    rabbit = await startRabbitmq({ baseUrl: `http://127.0.0.1:${httpPort}/auth` });
    const password = Buffer.from(crypto.getRandomValues(new Uint8Array(18))).toString('base64url');
    ks = await startKeyService({ flavour: 'http-auth', broker: rabbit.url, data, username: 'mqsec-keyservice', password, httpPort });
  }, 150_000);

  afterAll(async () => {
    await ks?.stop();
    await rabbit?.stop();
    if (data) await rm(data, { recursive: true, force: true });
  }, 60_000);

  it('20 nodes in 2 workers, drops, attackers, a broker restart: every reading verified once, lost 0', async () => {
    const r = await runStockFleet({ broker: rabbit.url, data, devices: 20, durationS: 12, restartEveryS: 6, restart: () => rabbit.restart() });
    console.log(JSON.stringify({ devices: r.devices, sent: r.sent, verified: r.verified, lost: r.lost, duplicates: r.duplicates, phase1: r.phase1_ok, phase2: r.phase2_ok, reconnects: r.reconnects, restarts: r.broker_restarts, drops: r.drops_injected, attacks: r.attacks, errors: r.errors_by_code, e2e_dropped: r.e2e_dropped, backend: r.backend_events, missing: r.missing_sample, not_back: r.not_back, commands: [r.commands_sent, r.commands_applied], s: r.duration_s }));
    checkStockFleet(r, 20);
    expect(ks.lines.join('\n')).not.toMatch(/stopped/);
  }, 180_000);
});
