/**
 * `mqsec sim --nodes 3 --cluster redis://...`: three real `mqsec broker
 * --cluster` processes over a real redis-server, devices spread over them, and
 * one node killed with SIGKILL under load (`--kill-node 1@T`) and started
 * again. Its devices come back on the other nodes through phase 2 only, the
 * verifying backend (a persistent session on node 1, so it fails over too and
 * finds its queue in Redis) sees every QoS 1 reading, and
 * `mqsec status` shows the cluster view.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCli } from '../helpers/cli-process.js';
import { listNodes } from '../../broker/cluster/redis-state.js';
import { hasRedis, startRedis, type RunningRedis } from '../helpers/redis.js';

const run = hasRedis() ? describe : describe.skip;

run('sim over broker nodes, one killed', () => {
  let redis: RunningRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('kill -9 of a node under load: phase 2 only on the way back, sent = verified, nothing lost; the node rejoins', async () => {
    const sim = startCli(['sim', '--nodes', '3', '--cluster', redis.url, '--devices', '24', '--rate', '24', '--duration', '16', '--kill-node', '1@5', '--restart-after', '6', '--json']);
    let done = false;
    const code = sim.exited.then((c) => ((done = true), c));
    // while the run goes on: the cluster view (the command once, then the directory it reads)
    let statusText = '';
    let sawDown = false;
    let sawThree = false;
    let sawBack = false;
    while (!done) {
      await new Promise((r) => setTimeout(r, 300));
      const nodes = await listNodes(redis.url).catch(() => []);
      if (nodes.length === 3 && nodes.every((n) => n.up)) {
        // the first moment all three are up can come before the verifier's account session has
        // connected: the cluster view is asked again (with all three up) until it shows it
        if (!/ 1 account sessions/.test(statusText)) {
          const st = startCli(['status', '--cluster', redis.url]);
          if ((await st.exited) === 0) statusText = st.out();
        }
        sawThree = true;
      }
      if (nodes.some((n) => n.id === 'node1' && !n.up)) sawDown = true;
      else if (sawDown && nodes.some((n) => n.id === 'node1' && n.up)) sawBack = true;
    }
    expect(statusText).toMatch(/3 of 3 nodes up; \d+ device sessions, 1 account sessions/);
    expect(statusText).toMatch(/node1\s+up\s+127\.0\.0\.1:\d+/);
    expect(await code, sim.err()).toBe(0);
    const line = sim.out().trim().split('\n').at(-1)!;
    const r = JSON.parse(line) as { sent: number; verified: number; lost: number; devices: number; detail: { reconnects: { phase1: number; phase2: number }; nodes: { kills: number; restarts: number; cpu_ms: Record<string, number> }; connected_at_end: number } };
    expect(r.lost).toBe(0);
    expect(r.sent).toBeGreaterThan(100);
    expect(r.verified).toBe(r.sent);
    expect(r.detail.connected_at_end).toBe(24);
    expect(r.detail.nodes).toMatchObject({ kills: 1, restarts: 1 });
    expect(Object.keys(r.detail.nodes.cpu_ms)).toEqual(['node1', 'node2', 'node3']);
    // every device came back without a phase 1 (its ticket is valid on every node)
    expect(r.detail.reconnects.phase1).toBe(0);
    expect(r.detail.reconnects.phase2).toBeGreaterThan(24);
    expect(sawThree).toBe(true);
    expect(sawDown).toBe(true);
    expect(sawBack).toBe(true); // restarted, it announces itself again (rejoined)
  }, 120_000);
});
