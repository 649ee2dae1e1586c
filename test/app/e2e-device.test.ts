/**
 * The device side of end-to-end topic keys (docs/protocol.md §14) under Node:
 * the real SensorNode, link, glue, keyring and session against the in-memory
 * §14 broker of e2e-scenarios.ts. test/app/e2e-device.xs.test.ts runs the same
 * scenarios inside XS and requires identical summaries.
 */
import { describe, it, expect } from 'vitest';
import { DEV, e2eScenarios, overheadFor } from './e2e-scenarios.js';

describe('device end to end (§14) under Node', () => {
  it('asks for its group keys after the session is up, learns each topic mode from the delivery, seals readings and opens commands end to end', async () => {
    const r = await e2eScenarios.readingsAndCommands();
    // one GKREQ from the device (plus the app's own) before anything was published
    expect(r.first.keyRequests).toBe(2);
    expect(r.first.modes).toEqual({ reading: 'e2e', command: 'e2e', other: 'hop' });
    expect(r.first.readings).toHaveLength(1);
    expect(r.first.readings[0]).toMatch(new RegExp(`^sensors/${DEV}/temperature=\\{"v":[0-9.]+,"n":0,"u":"C"\\}@1$`));
    expect(r.hopReadings).toBe(0);
    // the app's command, end to end
    expect(r.afterCommand).toEqual({ intervalS: 20, commands: 1 });
    // a replayed, a forged and a re-topiced envelope: refused, nothing applied
    expect(r.attacks).toEqual({ intervalS: 20, commands: 1, e2eDropped: 3 });
    // a re-key push applied: the next reading is under epoch 2 and the app opens it
    expect(r.epoch).toBe(2);
    expect(r.afterRekey).toHaveLength(1);
    expect(r.afterRekey[0]).toMatch(/"n":1,.*@2$/);
    // a command under an epoch whose push the device missed: dropped, keys asked for once more, the next command applies
    expect(r.missedPush).toEqual({ requests: 1, intervalS: 26, e2eDropped: 4 });
    expect(r.appDropped).toEqual([]);
    expect(r.counts.channelRefused).toBe(0);
    expect(r.glue).toMatchObject({ e2eSealed: 2, hopSealed: 0, e2eOpened: 2, keyRequests: 2, keyDeliveries: 3 });
  });

  it('QoS 1 across drops: same group envelope with a new channel trailer, the copy whose PUBACK was lost dropped by the reader, nothing lost', async () => {
    const r = await e2eScenarios.resendAcrossDrops();
    expect(r.connections).toBe(3);
    expect(r.phase2).toBe(2);
    expect(r.channelRefused).toBe(0); // every resend carried a trailer of its new connection
    expect(r.opened).toEqual([0, 1, 2, 3, 4, 5]); // every reading once, in order
    expect(r.sameEnvelopeTwice).toBe(1); // the reading whose PUBACK was lost went out again unchanged...
    expect(r.appDropped).toEqual(['REPLAY']); // ...and the app's replay window dropped the copy
    expect(r.forwarded).toBe(7);
    expect(r.outboxDropped).toBe(0);
  });

  it('at three quarters of its sequence range the device asks for the next one on the same connection: no reconnect, no sequence number twice', async () => {
    const r = await e2eScenarios.rangeRenewed();
    expect(r.connections).toBe(1);
    expect(r.opened).toBe(r.published);
    expect(r.opened).toBeGreaterThanOrEqual(12); // three ranges of 4 and more
    expect(r.distinctSeqs).toBe(r.opened);
    expect(r.keyRequests).toBeGreaterThanOrEqual(1 + Math.ceil(r.opened / 4)); // the app's, the first, then one per range
    expect(r.failures).toBe(0);
  });

  it('a reading whose group moved on by two epochs before it was acknowledged is sealed afresh under the current epoch from the kept plaintext', async () => {
    const r = await e2eScenarios.resealAfterTwoRekeys();
    expect(r.opened).toEqual(['0@1', '1@3', '2@3']);
    expect(r.appDropped).toEqual([]);
    expect(r.channelRefused).toBe(0);
    expect(r.outboxDropped).toBe(0);
  });

  it('a used-up sequence range (the answer with the next one lost: NONCE_EXHAUSTED) makes the node reconnect at once for a new one: nothing lost, no sequence number twice', async () => {
    const r = await e2eScenarios.rangeExhausted();
    expect(r.seqs).toEqual(Array.from({ length: r.seqs.length }, (_, i) => i));
    expect(r.opened).toBe(r.distinctReadings);
    expect(r.opened).toBeGreaterThanOrEqual(14);
    expect(r.connections).toBeGreaterThanOrEqual(Math.ceil(r.opened / 3));
    expect(r.keyRequests).toBe(r.connections + 1); // one per connection, plus the app's
    expect(r.failures).toBe(0);
    expect(r.backoffs).toBe(0);
  });

  it('a device in no group learns from the delivery that its topics are hop by hop', async () => {
    const r = await e2eScenarios.noGroupsMeansHop();
    expect(r).toEqual({ keyRequests: 2, hop: 1, forwarded: 0, mode: 'hop', readings: ['@hop'] });
  });

  it('group envelope overhead: 18 B for a 64 B reading (kid 1 B, seq 1 B, tag 16 B), 27 B with the channel trailer (§14.8)', () => {
    expect(overheadFor(64)).toEqual({ genv: 18, trailer: 9 });
  });
});
