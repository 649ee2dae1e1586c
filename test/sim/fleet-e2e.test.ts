/**
 * `mqsec sim --e2e` (docs/protocol.md §14): the fleet's device topics end to
 * end. The nodes ask for their group keys after every session and seal their
 * readings under them (the broker checks the channel MAC and forwards what it
 * cannot read); the verifying backend is an app principal on the SDK that
 * opens every reading itself. With connection drops and a broker restart
 * (which re-keys every group) nothing is lost and the backend sees nothing
 * twice.
 */
import { describe, it, expect } from 'vitest';
import { runFleet } from '../../host-sim/fleet/fleet.js';

describe('simulated fleet end to end', () => {
  it(
    '20 nodes, e2e device topics, drops and a broker restart: every reading verified once by the SDK backend, every node ends connected',
    async () => {
      const r = await runFleet({
        devices: 20,
        durationS: 10,
        rate: 16,
        workers: 2,
        drop: 0.01,
        restartBrokerEveryS: 5, // one restart at 5 s (the one due at 10 s falls into quiesce)
        e2e: true,
        quiesceS: 20,
      });
      console.log(JSON.stringify(r));
      // the run really exercised what it claims to
      expect(r.mode).toBe('e2e');
      expect(r.groups.map((g) => g.devices)).toEqual([10, 10]); // nodes in two worker threads
      expect(r.worker_failures).toEqual([]);
      expect(r.broker_restarts).toBeGreaterThanOrEqual(1);
      expect(r.drops_injected).toBeGreaterThan(0);
      expect(r.sent).toBeGreaterThan(40);
      expect(r.phase1_ok).toBeGreaterThanOrEqual(15); // a drop between KX3 and the key delivery makes that node's first ready a phase 2
      expect(r.phase2_ok).toBeGreaterThan(20);
      // every device topic end to end, one group per node, re-keyed by the restart (epoch 2 or later)
      expect(r.topic_modes).toEqual([
        { action: 'publish', filter: 'sensors/<node>/#', mode: 'e2e', groups: 20, epochs: [expect.any(Number), expect.any(Number)] },
        { action: 'subscribe', filter: 'cmd/<node>/#', mode: 'e2e', groups: 20, epochs: [expect.any(Number), expect.any(Number)] },
      ]);
      expect(r.topic_modes[0].epochs![0]).toBeGreaterThanOrEqual(2);
      // the properties: every reading sent was opened by the backend once, in order, none lost;
      // a copy the broker routed twice (a resend after a lost PUBACK) was dropped by the
      // backend's replay window, never handed to it
      expect(r.lost).toBe(0);
      expect(r.verified).toBe(r.sent);
      expect(r.duplicates).toBe(0);
      expect(r.out_of_order).toBe(0);
      expect(r.malformed).toBe(0);
      expect(r.ingested).toBeGreaterThanOrEqual(r.sent); // every reading routed (copies counted apart)
      expect(Object.keys(r.e2e_dropped).filter((k) => k !== 'REPLAY')).toEqual([]);
      expect(r.connected_at_end).toBe(20);
    },
    90_000,
  );
});
