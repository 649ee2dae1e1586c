/**
 * The simulated fleet across worker threads: the nodes run in two device
 * groups, each in its own worker thread (the same DeviceGroup code the main
 * thread runs for small fleets), while the main thread keeps the embedded
 * broker, the verifying backend, the attackers and the statistics. One
 * broker restart checks that nodes in workers reconnect to the same port.
 */
import { threadId } from 'node:worker_threads';
import { describe, it, expect } from 'vitest';
import { defaultWorkerCount, runFleet, splitIntoGroups } from '../../host-sim/fleet/fleet.js';

describe('simulated fleet in worker threads', () => {
  it(
    '20 nodes in 2 workers, 8 s with drops, a broker restart and power cuts: every reading reaches the broker, every node ends connected',
    async () => {
      const r = await runFleet({
        devices: 20,
        durationS: 8,
        rate: 16,
        workers: 2,
        drop: 0.01,
        restartBrokerEveryS: 4, // one restart at 4 s (the one due at 8 s falls into quiesce)
        powerCut: 0.01,
        attackers: 1,
        quiesceS: 20,
      });
      console.log(JSON.stringify(r));
      // the nodes really ran in two worker threads, ten each, and both sent readings
      expect(r.groups).toHaveLength(2);
      expect(r.groups.map((g) => g.devices)).toEqual([10, 10]);
      for (const g of r.groups) {
        expect(g.thread_id).not.toBe(threadId);
        expect(g.thread_id).toBeGreaterThan(0);
        expect(g.sent).toBeGreaterThan(0);
      }
      expect(new Set(r.groups.map((g) => g.thread_id)).size).toBe(2);
      expect(r.groups[0].sent + r.groups[1].sent).toBeGreaterThanOrEqual(r.sent);
      expect(r.worker_failures).toEqual([]);
      // device-side errors in the workers reach the summary with the code each node reported
      // (a broker restart always makes some: connections reset, CONNACK refused while it is down)
      expect(r.errors).toBeGreaterThan(0);
      expect(Object.values(r.errors_by_code).reduce((x, y) => x + y, 0)).toBe(r.errors);
      expect(Object.keys(r.errors_by_code).filter((k) => !/^[A-Z][A-Z_0-9]+( \(gave up\))?$/.test(k))).toEqual([]);
      // the run really exercised what it claims to
      expect(r.phase1_ok).toBeGreaterThanOrEqual(20);
      expect(r.phase2_ok).toBeGreaterThan(20);
      expect(r.broker_restarts).toBeGreaterThanOrEqual(1);
      expect(r.sent).toBeGreaterThan(40);
      expect(r.attacks.attempts).toBeGreaterThan(0);
      // the properties, device -> broker leg (mqsec's part): exact. Every reading a node sent
      // was routed by the broker (a reading unacknowledged when its node lost power may be
      // gone with the RAM); copies only from the one-epoch grace (docs/threat-model.md §8),
      // each counted, and rare.
      expect(r.lost_before_broker).toBe(0);
      expect(r.ingested - r.ingest_duplicates).toBeGreaterThanOrEqual(r.sent - r.lost_to_power_cuts);
      expect(r.ingested - r.ingest_duplicates).toBeLessThanOrEqual(r.sent);
      expect(r.ingest_duplicates).toBeLessThanOrEqual(Math.max(3, Math.ceil(r.sent / 200)));
      // Broker -> backend leg: plain MQTT QoS 1 on the backend's persistent session. Nothing
      // is lost on it: a delivery to a backend connection that is already gone stays queued
      // for its next connection (broker/hooks/authorize-forward.ts; test/broker/forward-gone).
      // Aedes resuming that session after the broker restart can still deliver a message
      // both live and from the session queue (QoS 1 is at least once; docs/threat-model.md
      // §8). Every node wakes in lockstep and the restart at 4 s falls on one wake of the
      // whole fleet (2 readings from each of 20 nodes), so the copies are bounded per
      // restart: at most a quarter of that wake.
      const backendCopiesBound = r.broker_restarts * ((20 * 2) / 4);
      expect(r.backend_redeliveries).toBeLessThanOrEqual(backendCopiesBound);
      expect(r.lost).toBe(0);
      expect(r.malformed).toBe(0);
      expect(r.out_of_order).toBe(0);
      expect(r.verified + r.lost_to_power_cuts + r.lost).toBe(r.sent);
      expect(r.connected_at_end).toBe(20);
      expect(r.attacks.accepted).toBe(0);
    },
    60_000,
  );

  it('default worker count: none up to 300 nodes, then one per 300 within the spare CPUs', () => {
    expect(defaultWorkerCount(1, 8)).toBe(0);
    expect(defaultWorkerCount(300, 8)).toBe(0);
    expect(defaultWorkerCount(301, 8)).toBe(2);
    expect(defaultWorkerCount(1000, 8)).toBe(4);
    expect(defaultWorkerCount(1000, 2)).toBe(1);
    expect(defaultWorkerCount(1000, 1)).toBe(1);
    expect(defaultWorkerCount(100_000, 4)).toBe(3);
  });

  it('splits nodes into contiguous near-equal groups', () => {
    const ids = Array.from({ length: 7 }, (_, i) => i);
    expect(splitIntoGroups(ids, 3)).toEqual([[0, 1], [2, 3], [4, 5, 6]]);
    expect(splitIntoGroups(ids, 10)).toHaveLength(7);
    expect(splitIntoGroups(ids, 1)).toEqual([ids]);
  });
});
