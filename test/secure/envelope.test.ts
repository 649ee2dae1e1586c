/**
 * The payload envelope (docs/protocol.md §8): overhead, topic binding, replay
 * window semantics (reordering, duplicates), epochs and the previous-epoch
 * grace for QoS 1 in flight across a reconnect, nonce exhaustion.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { isMqsecError } from '../../firmware/core/errors.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import { SEQ_LIMIT } from '../../firmware/secure/constants.js';
import { ReplayWindow, RxState, TxState, envelopeNonce, sealEnvelope } from '../../firmware/secure/envelope.js';
import { parseEnvelope } from '../../firmware/secure/messages.js';
import { connect, eq, exchange, makeWorld } from './helpers.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { seededRandom } from './helpers.js';

const suite = createNobleSuite(seededRandom('env'));
const key = new Uint8Array(32).fill(7);
const iv = new Uint8Array(12).fill(9);
const T = 'sensors/a/temp';

function pair(epoch = 5, window = 64) {
  return { tx: new TxState(suite, epoch, key.slice(), iv.slice()), rx: new RxState(suite, epoch, key.slice(), iv.slice(), window) };
}
function errCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return isMqsecError(e) ? e.code : `foreign ${String(e)}`;
  }
  return 'no error';
}

describe('envelope', () => {
  it('overhead is 18 B for the first 128 messages and <= 20 B up to the sequence limit', () => {
    const pt = new Uint8Array(10);
    expect(sealEnvelope(suite, key, iv, 1, 0, T, pt).length - pt.length).toBe(18);
    expect(sealEnvelope(suite, key, iv, 1, 127, T, pt).length - pt.length).toBe(18);
    expect(sealEnvelope(suite, key, iv, 1, 128, T, pt).length - pt.length).toBe(19);
    expect(sealEnvelope(suite, key, iv, 1, SEQ_LIMIT - 1, T, pt).length - pt.length).toBe(20);
    expect(errCode(() => sealEnvelope(suite, key, iv, 1, SEQ_LIMIT, T, pt))).toBe('NONCE_EXHAUSTED');
  });

  it('round-trips and binds the topic: an envelope moved to another topic fails', () => {
    const { tx, rx } = pair();
    const env = tx.seal(T, utf8Encode('21.5'));
    expect(errCode(() => rx.open('sensors/b/temp', env))).toBe('DECRYPT_FAILED');
    expect(rx.open(T, env)).toEqual(utf8Encode('21.5')); // the failure did not burn the sequence number
  });

  it('duplicates are refused, reordering within the window accepted, older than the window refused', () => {
    const { tx, rx } = pair(5, 8);
    const envs = Array.from({ length: 20 }, (_, i) => tx.seal(T, new Uint8Array([i])));
    expect(rx.open(T, envs[3])[0]).toBe(3);
    expect(errCode(() => rx.open(T, envs[3]))).toBe('REPLAY');
    expect(rx.open(T, envs[1])[0]).toBe(1); // late but inside the window
    expect(rx.open(T, envs[10])[0]).toBe(10);
    expect(errCode(() => rx.open(T, envs[2]))).toBe('REPLAY'); // 10 - 2 >= 8: too old
    expect(rx.open(T, envs[4])[0]).toBe(4);
    expect(errCode(() => rx.open(T, envs[10]))).toBe('REPLAY');
  });

  it('window: property against a reference set model', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(300), { maxLength: 200 }), fc.integer({ min: 1, max: 70 }), (seqs, size) => {
        const w = new ReplayWindow(size);
        const seen = new Set<number>();
        let highest = -1;
        for (const s of seqs) {
          const expected = !seen.has(s) && (s > highest || highest - s < size);
          expect(w.check(s)).toBe(expected);
          if (expected) {
            w.accept(s);
            seen.add(s);
            highest = Math.max(highest, s);
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  it('nonces are distinct for distinct sequence numbers', () => {
    const seen = new Set<string>();
    for (const s of [0, 1, 255, 256, 65535, 65536, SEQ_LIMIT - 1]) seen.add(Array.from(envelopeNonce(iv, s)).join(','));
    expect(seen.size).toBe(7);
  });

  it('a sender never reuses a sequence number and stops at the limit', () => {
    const { tx } = pair();
    const a = parseEnvelope(tx.seal(T, new Uint8Array(1))).seq;
    const b = parseEnvelope(tx.seal(T, new Uint8Array(1))).seq;
    expect(b).toBe(a + 1);
    (tx as any).seq = SEQ_LIMIT;
    expect(errCode(() => tx.seal(T, new Uint8Array(1)))).toBe('NONCE_EXHAUSTED');
  });

  it('garbage never crashes the opener (fuzz)', () => {
    const { rx } = pair();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
        const c = errCode(() => rx.open(T, b));
        expect(['TRUNCATED', 'MALFORMED', 'UNKNOWN_SESSION', 'DECRYPT_FAILED', 'REPLAY']).toContain(c);
      }),
      { numRuns: 500 },
    );
  });
});

describe('epochs across reconnects (QoS 1 in flight)', () => {
  it('broker accepts the previous epoch during the grace period, exactly once, then refuses it', async () => {
    const w = makeWorld({ server: { graceMs: 10_000 } });
    const first = await connect(w.device, w.server);
    const inFlight = w.device.seal(T, utf8Encode('queued'));
    const delivered = w.device.seal(T, utf8Encode('delivered'));
    expect(first.session.open(T, delivered)).toEqual(utf8Encode('delivered'));
    w.device.onConnectionLost();
    first.session.close();
    const second = await connect(w.device, w.server);
    expect(second.phase).toBe(2);
    expect(second.session.epoch).not.toBe(first.session.epoch);
    // unmodified clients resend as is: the device's glue says null = resend unchanged
    expect(w.device.resealForResend(T, inFlight)).toBeNull();
    expect(second.session.open(T, inFlight)).toEqual(utf8Encode('queued'));
    expect(errCode(() => second.session.open(T, inFlight))).toBe('REPLAY'); // no duplicate to the app
    expect(errCode(() => second.session.open(T, delivered))).toBe('REPLAY'); // already delivered before the drop
    await exchange(w.device, second.session);
  });

  it('after the grace period the previous epoch is refused with UNKNOWN_SESSION', async () => {
    const w = makeWorld({ server: { graceMs: 1000 } });
    await connect(w.device, w.server);
    const old = w.device.seal(T, utf8Encode('late'));
    w.device.onConnectionLost();
    const second = await connect(w.device, w.server);
    w.clock.advance(1000);
    expect(errCode(() => second.session.open(T, old))).toBe('UNKNOWN_SESSION');
  });

  it('messages two epochs old are re-sealed by the device under the current keys', async () => {
    const w = makeWorld();
    await connect(w.device, w.server);
    const old = w.device.seal(T, utf8Encode('very old'));
    w.device.onConnectionLost();
    await connect(w.device, w.server);
    w.device.onConnectionLost();
    const third = await connect(w.device, w.server);
    const resealed = w.device.resealForResend(T, old);
    expect(resealed).not.toBeNull();
    expect(parseEnvelope(resealed!).epoch).toBe(third.session.epoch);
    expect(third.session.open(T, resealed!)).toEqual(utf8Encode('very old'));
    expect(errCode(() => third.session.open(T, old))).toBe('UNKNOWN_SESSION');
  });

  it('the device opens a broker message of the previous epoch (retransmission after reconnect)', async () => {
    const w = makeWorld();
    const first = await connect(w.device, w.server);
    const down = first.session.seal(T, utf8Encode('cmd'));
    w.device.onConnectionLost();
    await connect(w.device, w.server);
    const r = await w.device.handleIncoming(T, down);
    expect(r.kind === 'message' && eq(r.payload, utf8Encode('cmd'))).toBe(true);
    const again = await w.device.handleIncoming(T, down);
    expect(again.kind === 'dropped' && again.error.code).toBe('REPLAY');
  });

  it('grace state written down at a graceful broker stop and read back by a new broker: a restart is just a reconnect', async () => {
    const w = makeWorld({ server: { graceMs: 10_000 } });
    const first = await connect(w.device, w.server);
    const delivered = w.device.seal(T, utf8Encode('delivered'));
    const inFlight = w.device.seal(T, utf8Encode('in flight'));
    const tooLate = w.device.seal(T, utf8Encode('too late'));
    expect(first.session.open(T, delivered)).toEqual(utf8Encode('delivered'));
    w.device.onConnectionLost();
    first.session.close();
    const records = w.server.exportGrace();
    expect(records.map((r) => [r.devId, r.until])).toEqual([[first.session.devId, w.clock.now() + 10_000]]);
    // a new broker process: same ticket store and clock, empty memory
    const restarted = w.newServer();
    w.clock.advance(3000);
    expect(restarted.importGrace(records)).toBe(1);
    const second = await connect(w.device, restarted);
    expect(second.phase).toBe(2);
    expect(w.device.resealForResend(T, inFlight)).toBeNull(); // resent as is
    expect(errCode(() => second.session.open(T, delivered))).toBe('REPLAY'); // the copy that had arrived
    expect(second.session.open(T, inFlight)).toEqual(utf8Encode('in flight'));
    expect(errCode(() => second.session.open(T, inFlight))).toBe('REPLAY');
    // the grace period still counts from the stop: 10 s after it, the old epoch is gone
    w.clock.advance(7000);
    expect(errCode(() => second.session.open(T, tooLate))).toBe('UNKNOWN_SESSION');
    await exchange(w.device, second.session);
  });

  it('expired, duplicate and malformed grace records are not restored', async () => {
    const w = makeWorld({ server: { graceMs: 1000 } });
    await connect(w.device, w.server);
    w.device.onConnectionLost();
    const [rec] = w.server.exportGrace();
    const fresh = w.newServer();
    w.clock.advance(1000);
    expect(fresh.importGrace([rec!])).toBe(0); // expired
    const fresh2 = w.newServer();
    const bad = { ...rec!, until: w.clock.now() + 5000, rx: { ...rec!.rx, key: new Uint8Array(5) } };
    const badWindow = { ...rec!, devId: 'other', until: w.clock.now() + 5000, rx: { ...rec!.rx, seen: new Uint8Array(64).fill(2) } };
    expect(fresh2.importGrace([bad, badWindow])).toBe(0);
    const ok = { ...rec!, until: w.clock.now() + 5000 };
    expect(fresh2.importGrace([ok, ok])).toBe(1);
  });

  it('a receive state snapshot restores the same replay decisions', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(400), { maxLength: 120 }), fc.integer({ min: 1, max: 70 }), fc.array(fc.nat(500), { maxLength: 60 }), (accepted, size, probes) => {
        const { tx, rx } = pair(5, size);
        const sealed = new Map<number, Uint8Array>();
        const maxSeq = Math.max(0, ...accepted, ...probes);
        for (let q = 0; q <= maxSeq; q++) sealed.set(q, tx.seal(T, utf8Encode(`m${q}`)));
        for (const q of accepted) {
          try {
            rx.open(T, sealed.get(q)!);
          } catch {
            // replays and too-old ones are refused; the window state is what matters
          }
        }
        const restored = RxState.restore(suite, rx.snapshot());
        for (const q of probes) {
          const a = (() => { try { rx.open(T, sealed.get(q)!); return 'ok'; } catch (e) { return (e as { code?: string }).code; } })();
          const b = (() => { try { restored.open(T, sealed.get(q)!); return 'ok'; } catch (e) { return (e as { code?: string }).code; } })();
          expect(b).toBe(a);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('seal before ready -> BAD_STATE', () => {
    const w = makeWorld();
    expect(errCode(() => w.device.seal(T, new Uint8Array(1)))).toBe('BAD_STATE');
  });
});
