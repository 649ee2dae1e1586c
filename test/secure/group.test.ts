/**
 * End-to-end group keys (docs/protocol.md §14): test vectors with both
 * suites, overhead, the receiver checks (forged, replayed, re-topiced,
 * truncated, other epoch, other writer), the channel MAC the broker checks,
 * the key delivery (request binding, replay, stale epochs, removal), and
 * fuzzing of every parser.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { isMqsecError } from '../../firmware/core/errors.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import {
  CHANNEL_TRAILER_LENGTH,
  ChannelReceiver,
  ChannelSender,
  DeliverySender,
  GROUP_READER,
  GROUP_SEQ_LIMIT,
  GROUP_WRITER,
  GroupKeyring,
  decodeGroupDelivery,
  deriveKeyServiceKey,
  encodeGroupDelivery,
  groupSenderKeys,
  parseGroupDeliveryHeader,
  parseGroupEnvelope,
  parseGroupKeyRequest,
  sealGroupEnvelope,
  type GroupDelivery,
  type GroupGrant,
} from '../../firmware/secure/group.js';
import { computeGroupVectors, type GroupVectorInputs } from '../vectors/group-compute.js';
import { seededRandom } from './helpers.js';

const file = JSON.parse(readFileSync(new URL('../vectors/group-v1.json', import.meta.url), 'utf8')) as {
  vectors: { inputs: GroupVectorInputs; outputs: Record<string, string> }[];
};
const noRandom = { fill: () => { throw new Error('no randomness'); } };
const suite = createNobleSuite(seededRandom('group'));

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return isMqsecError(e) ? e.code : `foreign ${String(e)}`;
  }
  return 'no error';
}

const GK1 = new Uint8Array(32).fill(0x11);
const GK2 = new Uint8Array(32).fill(0x22);
const READINGS = 'sensors/dev1/#';
const T = 'sensors/dev1/reading';

function grant(epoch: number, key: Uint8Array, writers: string[], flags: number, filter = READINGS): GroupGrant {
  return { filter, flags, epoch, groupKey: key.slice(), writers };
}

/** A member and the key service's side of its delivery answer, wired together without a network. */
function member(id: string, principalKey = new Uint8Array(32).fill(id.length)) {
  const ks = deriveKeyServiceKey(suite, principalKey, id);
  const ring = new GroupKeyring({ suite, id, keyServiceKey: ks.slice() });
  let sender: DeliverySender | undefined;
  return {
    ring,
    ks,
    /** request + answer: the delivery the member would get at connect. */
    connect(d: GroupDelivery) {
      sender = DeliverySender.answer(suite, ks, id, ring.request());
      return ring.acceptDelivery(sender.seal(d));
    },
    push(d: GroupDelivery) {
      const p = sender!.seal(d);
      return { payload: p, changed: ring.acceptDelivery(p) };
    },
    sealDelivery: (d: GroupDelivery) => sender!.seal(d),
  };
}

function pair() {
  const dev = member('dev1');
  const app = member('app1');
  dev.connect({ seqBase: 0, seqLimit: 4096, groups: [grant(1, GK1, ['dev1'], GROUP_WRITER)] });
  app.connect({ seqBase: 0, seqLimit: 0, groups: [grant(1, GK1, ['dev1'], GROUP_READER)] });
  return { dev, app };
}

describe.each(file.vectors.map((v) => [v.inputs.memberId, v] as const))('group vector %s', (_id, v) => {
  it('noble suite reproduces every output', () => {
    expect(computeGroupVectors(createNobleSuite(noRandom), v.inputs)).toEqual(v.outputs);
  });
  it('node:crypto suite reproduces every output', () => {
    expect(computeGroupVectors(createNodeCryptoSuite(noRandom), v.inputs)).toEqual(v.outputs);
  });
});

describe('group envelope and channel overhead (§14.8)', () => {
  it('a 64 B reading costs 27 B on the wire (18 group + 9 channel), 30 B at most', () => {
    const v = file.vectors[0];
    const pt = utf8Encode(v.inputs.plaintext);
    expect(pt.length).toBe(64);
    expect(v.outputs.groupEnvelope.length / 2 - 64).toBe(18);
    expect(v.outputs.channelPayload.length / 2 - 64).toBe(27);
    // worst case: a 2-byte key id (writer slot >= 32) and a 3-byte sequence number
    const k = groupSenderKeys(suite, GK1, READINGS, 3, 4095);
    const worst = sealGroupEnvelope(suite, k, 4095, 3, GROUP_SEQ_LIMIT - 1, T, pt);
    expect(worst.length + CHANNEL_TRAILER_LENGTH - 64).toBe(30);
  });
});

describe('receivers check everything (§14.7)', () => {
  it('round trip with publisher, group and epoch reported', () => {
    const { dev, app } = pair();
    const m = app.ring.open(T, dev.ring.seal(T, utf8Encode('21.5')));
    expect(m).toEqual({ plaintext: utf8Encode('21.5'), publisher: 'dev1', group: READINGS, epoch: 1 });
  });

  it('forged: every bit flip of an envelope is refused and moves no window', () => {
    const { dev, app } = pair();
    const env = dev.ring.seal(T, utf8Encode('{"t":21.5}'));
    for (let i = 0; i < env.length; i++) {
      for (const bit of [0x01, 0x80]) {
        const f = env.slice();
        f[i] ^= bit;
        expect(['DECRYPT_FAILED', 'UNKNOWN_SESSION', 'MALFORMED', 'TRUNCATED']).toContain(code(() => app.ring.open(T, f)));
      }
    }
    expect(app.ring.open(T, env).plaintext).toEqual(utf8Encode('{"t":21.5}'));
  });

  it('forged by someone with another group key (not a member) -> DECRYPT_FAILED', () => {
    const { app } = pair();
    const k = groupSenderKeys(suite, new Uint8Array(32).fill(0x99), READINGS, 1, 0);
    expect(code(() => app.ring.open(T, sealGroupEnvelope(suite, k, 0, 1, 0, T, utf8Encode('x'))))).toBe('DECRYPT_FAILED');
  });

  it('replayed -> REPLAY; reordering within the window accepted; older than the window -> REPLAY', () => {
    const { dev, app } = pair();
    const envs = Array.from({ length: 70 }, (_, i) => dev.ring.seal(T, utf8Encode(String(i))));
    expect(app.ring.open(T, envs[1]).plaintext).toEqual(utf8Encode('1'));
    expect(code(() => app.ring.open(T, envs[1]))).toBe('REPLAY');
    expect(app.ring.open(T, envs[0]).plaintext).toEqual(utf8Encode('0')); // reordered
    expect(app.ring.open(T, envs[69]).plaintext).toEqual(utf8Encode('69'));
    expect(code(() => app.ring.open(T, envs[2]))).toBe('REPLAY'); // 67 behind: outside the 64 window
    expect(app.ring.open(T, envs[10]).plaintext).toEqual(utf8Encode('10'));
  });

  it('re-topiced: an envelope moved to another topic of the same group -> DECRYPT_FAILED', () => {
    const { dev, app } = pair();
    const env = dev.ring.seal(T, utf8Encode('21.5'));
    expect(code(() => app.ring.open('sensors/dev1/other', env))).toBe('DECRYPT_FAILED');
    expect(code(() => app.ring.open('sensors/dev2/reading', env))).toBe('UNKNOWN_SESSION');
    expect(app.ring.open(T, env).plaintext).toEqual(utf8Encode('21.5')); // the failures moved nothing
  });

  it('truncated at every length -> TRUNCATED / MALFORMED / DECRYPT_FAILED, never a crash', () => {
    const { dev, app } = pair();
    const env = dev.ring.seal(T, utf8Encode('21.5'));
    for (let n = 0; n < env.length; n++) {
      expect(['TRUNCATED', 'MALFORMED', 'DECRYPT_FAILED']).toContain(code(() => app.ring.open(T, env.subarray(0, n))));
    }
  });

  it('claiming another writer slot fails: per-slot keys', () => {
    const dev = member('dev1');
    const app = member('app1');
    dev.connect({ seqBase: 0, seqLimit: 10, groups: [grant(1, GK1, ['dev1', 'dev1b'], GROUP_WRITER)] });
    app.connect({ seqBase: 0, seqLimit: 0, groups: [grant(1, GK1, ['dev1', 'dev1b'], GROUP_READER)] });
    const env = dev.ring.seal(T, utf8Encode('x'));
    const f = env.slice();
    f[0] = 1 * 4 + 1; // kid of slot 1, same epoch
    expect(code(() => app.ring.open(T, f))).toBe('DECRYPT_FAILED');
    f[0] = 2 * 4 + 1; // no such slot
    expect(code(() => app.ring.open(T, f))).toBe('UNKNOWN_SESSION');
  });

  it('a reader that is not a writer cannot seal; a writer that is not a reader cannot open', () => {
    const { dev, app } = pair();
    expect(code(() => app.ring.seal(T, utf8Encode('x')))).toBe('NOT_AUTHORIZED');
    expect(code(() => dev.ring.open(T, dev.ring.seal(T, utf8Encode('x'))))).toBe('NOT_AUTHORIZED');
  });

  it('sequence range: the writer stops at its limit (NONCE_EXHAUSTED) and a new connection gets a fresh range', () => {
    const dev = member('dev1');
    dev.connect({ seqBase: 0, seqLimit: 2, groups: [grant(1, GK1, ['dev1'], GROUP_WRITER)] });
    dev.ring.seal(T, utf8Encode('a'));
    dev.ring.seal(T, utf8Encode('b'));
    expect(code(() => dev.ring.seal(T, utf8Encode('c')))).toBe('NONCE_EXHAUSTED');
    dev.ring.onConnectionLost();
    dev.connect({ seqBase: 2, seqLimit: 4, groups: [grant(1, GK1, ['dev1'], GROUP_WRITER)] });
    expect(parseGroupEnvelope(dev.ring.seal(T, utf8Encode('c'))).seq).toBe(2);
  });

  it('sequence range refill on the same connection: asked for at three quarters, old range used until the answer', () => {
    const { dev, app } = pair();
    dev.connect({ seqBase: 0, seqLimit: 8, groups: [grant(1, GK1, ['dev1'], GROUP_WRITER)] });
    const seqs: number[] = [];
    const send = () => {
      const env = dev.ring.seal(T, utf8Encode('x'));
      seqs.push(parseGroupEnvelope(env).seq);
      expect(app.ring.open(T, env).publisher).toBe('dev1');
    };
    for (let i = 0; i < 5; i++) send();
    expect(dev.ring.wantsRange).toBe(false); // 3 of 8 left
    send();
    expect(dev.ring.wantsRange).toBe(true); // 2 of 8 left: a quarter
    // the request goes out; until its answer the old range goes on, and no second request is wanted
    const answer = DeliverySender.answer(suite, dev.ks, 'dev1', dev.ring.request());
    expect(dev.ring.wantsRange).toBe(false);
    send();
    expect(dev.ring.wantsRange).toBe(false);
    dev.ring.acceptDelivery(answer.seal({ seqBase: 8, seqLimit: 16, groups: [grant(1, GK1, ['dev1'], GROUP_WRITER)] }));
    send();
    expect(seqs).toEqual([0, 1, 2, 3, 4, 5, 6, 8]);
    // a writer that never asks still stops at the end of its range
    for (let i = 0; i < 7; i++) dev.ring.seal(T, utf8Encode('y'));
    expect(code(() => dev.ring.seal(T, utf8Encode('z')))).toBe('NONCE_EXHAUSTED');
    // a reader holds no range and never asks for one
    expect(app.ring.wantsRange).toBe(false);
  });
});

describe('epochs and re-keying (§14.3)', () => {
  it('a new epoch is used at once by writers; readers keep exactly one previous epoch', () => {
    const { dev, app } = pair();
    const old = dev.ring.seal(T, utf8Encode('old'));
    const old2 = dev.ring.seal(T, utf8Encode('old2'));
    dev.push({ seqBase: 0, seqLimit: 4096, groups: [grant(2, GK2, ['dev1'], GROUP_WRITER)] });
    const fresh = dev.ring.seal(T, utf8Encode('new'));
    expect(parseGroupEnvelope(fresh).epochLow).toBe(2);
    expect(code(() => app.ring.open(T, fresh))).toBe('UNKNOWN_SESSION'); // reader has not got epoch 2 yet
    app.push({ seqBase: 0, seqLimit: 0, groups: [grant(2, GK2, ['dev1'], GROUP_READER)] });
    expect(app.ring.open(T, fresh).epoch).toBe(2);
    expect(app.ring.open(T, old).epoch).toBe(1); // in flight across the re-key
    app.push({ seqBase: 0, seqLimit: 0, groups: [grant(3, new Uint8Array(32).fill(3), ['dev1'], GROUP_READER)] });
    expect(app.ring.open(T, dev.ring.seal(T, utf8Encode('x'))).epoch).toBe(2); // epoch 2 is now the previous one
    expect(code(() => app.ring.open(T, old2))).toBe('UNKNOWN_SESSION'); // epoch 1: two re-keys ago, gone
  });

  it('a removed member (flags 0) forgets the group and opens nothing of it', () => {
    const { dev, app } = pair();
    const env = dev.ring.seal(T, utf8Encode('x'));
    expect(app.push({ seqBase: 0, seqLimit: 0, groups: [{ filter: READINGS, flags: 0, epoch: 0, groupKey: new Uint8Array(0), writers: [] }] }).changed).toEqual([READINGS]);
    expect(code(() => app.ring.open(T, env))).toBe('UNKNOWN_SESSION');
    expect(app.ring.list()).toEqual([]);
  });

  it('an older epoch never replaces a newer one; same epoch with another key is refused', () => {
    const { app } = pair();
    app.push({ seqBase: 0, seqLimit: 0, groups: [grant(5, GK2, ['dev1'], GROUP_READER)] });
    expect(app.push({ seqBase: 0, seqLimit: 0, groups: [grant(4, GK1, ['dev1'], GROUP_READER)] }).changed).toEqual([]);
    expect(app.ring.list()[0].epoch).toBe(5);
    expect(code(() => app.push({ seqBase: 0, seqLimit: 0, groups: [grant(5, GK1, ['dev1'], GROUP_READER)] }))).toBe('BAD_KEY');
  });
});

describe('key delivery (§14.6)', () => {
  it('request: tag checked in constant time; a flipped byte or another member id -> BAD_MAC', () => {
    const a = member('app1');
    const req = a.ring.request();
    expect(parseGroupKeyRequest(suite, a.ks, 'app1', req).length).toBe(16);
    for (let i = 1; i < req.length; i++) {
      const f = req.slice();
      f[i] ^= 4;
      expect(code(() => parseGroupKeyRequest(suite, a.ks, 'app1', f))).toBe('BAD_MAC');
    }
    expect(code(() => parseGroupKeyRequest(suite, a.ks, 'app2', req))).toBe('BAD_MAC');
    expect(code(() => parseGroupKeyRequest(suite, a.ks, 'app1', req.subarray(0, 20)))).toBe('TRUNCATED');
    expect(code(() => parseGroupKeyRequest(suite, a.ks, 'app1', new Uint8Array([0x16, ...req.subarray(1)])))).toBe('UNKNOWN_TYPE');
    expect(code(() => parseGroupKeyRequest(suite, a.ks, 'app1', new Uint8Array([0x25, ...req.subarray(1)])))).toBe('BAD_VERSION');
  });

  it('a delivery replayed on the same answer -> REPLAY; an answer to an earlier request -> DECRYPT_FAILED', () => {
    const a = member('app1');
    a.connect({ seqBase: 0, seqLimit: 0, groups: [grant(1, GK1, ['dev1'], GROUP_READER)] });
    const p = a.push({ seqBase: 0, seqLimit: 0, groups: [grant(2, GK2, ['dev1'], GROUP_READER)] }).payload;
    expect(code(() => a.ring.acceptDelivery(p))).toBe('REPLAY');
    a.ring.onConnectionLost();
    expect(code(() => a.ring.acceptDelivery(p))).toBe('BAD_STATE'); // no request outstanding
    a.ring.request(); // next connection: a fresh n_m
    expect(code(() => a.ring.acceptDelivery(p))).toBe('DECRYPT_FAILED');
  });

  it('a delivery for another member (same service nonce, other id) -> DECRYPT_FAILED; bit flips refused', () => {
    const a = member('app1');
    const b = member('app2');
    a.connect({ seqBase: 0, seqLimit: 0, groups: [] });
    b.ring.request();
    const p = a.sealDelivery({ seqBase: 0, seqLimit: 0, groups: [grant(1, GK1, ['dev1'], GROUP_READER)] });
    expect(code(() => b.ring.acceptDelivery(p))).toBe('DECRYPT_FAILED');
    for (let i = 0; i < p.length; i++) {
      const f = p.slice();
      f[i] ^= 1;
      expect(['DECRYPT_FAILED', 'UNKNOWN_TYPE', 'BAD_VERSION', 'MALFORMED', 'REPLAY', 'TRUNCATED']).toContain(code(() => a.ring.acceptDelivery(f)));
    }
    expect(a.ring.acceptDelivery(p)).toEqual([READINGS]);
  });
});

describe('integrity-only channel (§14.5)', () => {
  const key = new Uint8Array(32).fill(5);
  const genv = new Uint8Array(40).fill(1);
  it('broker recovers the counter from its low byte across wrap-around and gaps', () => {
    const tx = new ChannelSender(suite, key.slice());
    const rx = new ChannelReceiver(suite, key.slice());
    for (let i = 0; i < 600; i++) {
      const w = tx.wrap(T, genv);
      if (i % 7 === 3) continue; // wrapped but never sent
      expect(rx.unwrap(T, w)).toEqual(genv);
    }
  });
  it('replayed, re-ordered, re-topiced, forged or truncated trailers -> BAD_MAC / TRUNCATED, state unchanged', () => {
    const tx = new ChannelSender(suite, key.slice());
    const rx = new ChannelReceiver(suite, key.slice());
    const a = tx.wrap(T, genv);
    const b = tx.wrap(T, genv);
    expect(rx.unwrap(T, a)).toEqual(genv);
    expect(code(() => rx.unwrap(T, a))).toBe('BAD_MAC'); // replay
    expect(code(() => rx.unwrap('sensors/dev1/x', b))).toBe('BAD_MAC'); // moved
    const f = b.slice();
    f[3] ^= 1;
    expect(code(() => rx.unwrap(T, f))).toBe('BAD_MAC'); // payload changed
    expect(code(() => rx.unwrap(T, b.subarray(0, 20)))).toBe('TRUNCATED');
    expect(code(() => new ChannelReceiver(suite, new Uint8Array(32)).unwrap(T, b))).toBe('BAD_MAC'); // another connection's key
    expect(rx.unwrap(T, b)).toEqual(genv);
  });
});

describe('parsers on arbitrary input (fuzz)', () => {
  const { app } = pair();
  const known = new Set(['MALFORMED', 'TRUNCATED', 'DECRYPT_FAILED', 'UNKNOWN_SESSION', 'REPLAY', 'OVERSIZE', 'INVALID_UTF8', 'UNKNOWN_TYPE', 'BAD_VERSION', 'BAD_MAC', 'BAD_KEY']);
  it('group envelopes, channel trailers, requests, deliveries and delivery bodies fail only with typed errors', () => {
    const rx = new ChannelReceiver(suite, new Uint8Array(32));
    const ks = new Uint8Array(32);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        for (const f of [
          () => app.ring.open(T, b),
          () => rx.unwrap(T, b),
          () => parseGroupKeyRequest(suite, ks, 'x', b),
          () => parseGroupDeliveryHeader(b),
          () => decodeGroupDelivery(b),
          () => app.ring.acceptDelivery(b),
        ]) {
          const c = code(f);
          if (c !== 'no error') expect(known).toContain(c);
        }
      }),
      { numRuns: 3000 },
    );
  });
  it('delivery body: encode/decode round trip on arbitrary grants, and every prefix refused', () => {
    const arbGrant = fc.record({
      filter: fc.stringMatching(/^[a-z0-9/#+]{1,40}$/),
      flags: fc.integer({ min: 0, max: 3 }),
      epoch: fc.integer({ min: 0, max: 0xffffffff }),
      groupKey: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      writers: fc.array(fc.stringMatching(/^[A-Za-z0-9_.-]{1,23}$/), { maxLength: 5 }),
    });
    fc.assert(
      fc.property(fc.array(arbGrant, { maxLength: 6 }), fc.integer({ min: 0, max: GROUP_SEQ_LIMIT }), (gs, lim) => {
        const d: GroupDelivery = {
          seqBase: Math.floor(lim / 2),
          seqLimit: lim,
          groups: gs.map((g) => (g.flags === 0 ? { filter: g.filter, flags: 0, epoch: 0, groupKey: new Uint8Array(0), writers: [] } : g)),
        };
        const enc = encodeGroupDelivery(d);
        expect(decodeGroupDelivery(enc)).toEqual(d);
        for (let n = 0; n < enc.length; n++) expect(known).toContain(code(() => decodeGroupDelivery(enc.subarray(0, n))));
      }),
      { numRuns: 100 },
    );
  });
});
