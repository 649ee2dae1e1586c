/**
 * firmware/secure inside the real XS engine (xsnap): test vectors byte for
 * byte, and an XS device completing phase 1, phase 2 and sealed traffic with
 * a Node-side ServerHandshake on the node:crypto suite, including the
 * negative paths a device sees. Prints timings for the report.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { startXs, type XsWorker } from './harness.js';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { ServerHandshake, connackCodeFor, type ServerSession } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import type { VectorInputs } from '../vectors/compute.js';
import type { GroupVectorInputs } from '../vectors/group-compute.js';
import { DeliverySender, GROUP_READER, GROUP_WRITER, GroupKeyring, deriveKeyServiceKey } from '../../firmware/secure/group.js';

const file = JSON.parse(readFileSync(new URL('../vectors/protocol-v1.json', import.meta.url), 'utf8')) as {
  vectors: { inputs: VectorInputs; outputs: Record<string, string> }[];
};
const groupFile = JSON.parse(readFileSync(new URL('../vectors/group-v1.json', import.meta.url), 'utf8')) as {
  vectors: { inputs: GroupVectorInputs; outputs: Record<string, string> }[];
};
const DEV = 'xsdev001';
const KEY = '1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100';
const T = 'sensors/xsdev001/t';

let xs: XsWorker;
beforeAll(async () => {
  xs = await startXs(new URL('./secure.entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});

function makeServer() {
  const store = new MemoryTicketStore();
  let now = 1_700_000_000_000;
  const server = new ServerHandshake({
    suite: createNodeCryptoSuite(),
    clock: { now: () => now },
    lookupDevice: (id) => (id === DEV ? { deviceKey: fromHex(KEY), status: 'active' } : undefined),
    ticketStore: store,
  });
  return { server, store, advance: (ms: number) => (now += ms) };
}

/** One connect of the XS device against the Node server. */
async function xsConnect(server: ServerHandshake): Promise<{ phase: number; session?: ServerSession; code?: string }> {
  const cred = await xs.call('devCredentials');
  if (cred.code) return { phase: 0, code: cred.code };
  let res;
  try {
    res = await server.acceptConnect(cred.clientId, cred.username, cred.password);
  } catch (e: any) {
    await xs.call('devConnack', connackCodeFor(e));
    return { phase: cred.phase, code: e.code };
  }
  expect(await xs.call('devConnack', 0)).toBe(cred.phase === 2 ? 'awaiting-confirm' : 'awaiting-kx2');
  if (res.kind === 'phase2') {
    expect(await xs.call('devIncoming', res.reply.topic, res.reply.payload)).toEqual({ kind: 'confirmed' });
    return { phase: 2, session: res.session };
  }
  if (res.kind === 'counter-hint') {
    const h = await xs.call('devIncoming', res.reply.topic, res.reply.payload);
    await xs.call('devLost');
    return { phase: 1, code: h.kind === 'counter-hint' ? `hint ${h.counter}` : h.code };
  }
  if (res.kind !== 'phase1') throw new Error('not mqsec');
  const h = await xs.call('devIncoming', res.reply.topic, res.reply.payload);
  expect(h.kind).toBe('handshake');
  return { phase: 1, session: await server.completePhase1(res.pending, h.payload) };
}

async function roundTrip(session: ServerSession) {
  const up = utf8Encode('from XS');
  const env = await xs.call('devSeal', T, up);
  expect(session.open(T, env)).toEqual(up);
  const down = utf8Encode('from Node');
  const r = await xs.call('devIncoming', T, session.seal(T, down));
  expect(r).toEqual({ kind: 'message', payload: down });
}

describe('firmware/secure under XS', () => {
  it('runs in XS, not Node', async () => {
    expect(await xs.call('engine')).toEqual({ hasProcess: false, hasBuffer: false });
  });

  it.each(file.vectors.map((v) => [v.inputs.devId, v] as const))('reproduces test vector %s byte for byte', async (_n, v) => {
    expect(await xs.call('vectors', v.inputs)).toEqual(v.outputs);
  });

  it('XS device <-> Node broker: phase 1, sealed traffic, phase 2 (several), reboot', async () => {
    const { server } = makeServer();
    await xs.call('devCreate', DEV, KEY, false);
    const a = await xsConnect(server);
    expect(a.phase).toBe(1);
    await roundTrip(a.session!);
    for (let i = 0; i < 5; i++) {
      await xs.call('devLost');
      const b = await xsConnect(server);
      expect(b.phase).toBe(2);
      await roundTrip(b.session!);
    }
    await xs.call('devCreate', DEV, KEY, true); // reboot, flash kept
    const c = await xsConnect(server);
    expect(c.phase).toBe(2);
    await roundTrip(c.session!);
  });

  it('XS device drops forged KX2 and falls back to phase 1 when its ticket is revoked', async () => {
    const { server, store } = makeServer();
    await xs.call('devCreate', DEV, KEY, false);
    const cred = await xs.call('devCredentials');
    const res = await server.acceptConnect(cred.clientId, cred.username, cred.password);
    if (res.kind !== 'phase1') throw new Error();
    await xs.call('devConnack', 0);
    const bad = res.reply.payload.slice();
    bad[40] ^= 1;
    expect(await xs.call('devIncoming', KX_TOPIC, bad)).toEqual({ kind: 'dropped', code: 'BAD_MAC' });
    expect(await xs.call('devSeal', T, new Uint8Array(1))).toEqual({ code: 'BAD_STATE' });
    const h = await xs.call('devIncoming', KX_TOPIC, res.reply.payload);
    await server.completePhase1(res.pending, h.payload);
    await xs.call('devLost');
    await store.revokeDevice(DEV);
    const refused = await xsConnect(server);
    expect(refused).toMatchObject({ phase: 2, code: 'UNKNOWN_SESSION' });
    const again = await xsConnect(server);
    expect(again.phase).toBe(1);
    await roundTrip(again.session!);
  });

  it('XS device: a CONNACK alone gives no keys; a forged or foreign confirmation is dropped; the genuine one makes it ready (§6.4)', async () => {
    const { server } = makeServer();
    await xs.call('devCreate', DEV, KEY, false);
    await xsConnect(server);
    await xs.call('devLost');
    // an on-path attacker answers CONNACK 0 itself: the device has nothing to seal with
    const held = await xs.call('devCredentials');
    expect(await xs.call('devConnack', 0)).toBe('awaiting-confirm');
    expect(await xs.call('devSeal', T, new Uint8Array(1))).toEqual({ code: 'BAD_STATE' });
    const stolen = await server.acceptConnect(held.clientId, held.username, held.password); // released to the broker later
    if (stolen.kind !== 'phase2') throw new Error('phase 2');
    await xs.call('devLost');
    const cred = await xs.call('devCredentials');
    const res = await server.acceptConnect(cred.clientId, cred.username, cred.password);
    if (res.kind !== 'phase2') throw new Error('phase 2');
    expect(await xs.call('devConnack', 0)).toBe('awaiting-confirm');
    const forged = res.reply.payload.slice();
    forged[3] ^= 1;
    expect(await xs.call('devIncoming', KX_TOPIC, forged)).toEqual({ kind: 'dropped', code: 'BAD_MAC' });
    expect(await xs.call('devIncoming', KX_TOPIC, stolen.reply.payload)).toEqual({ kind: 'dropped', code: 'BAD_MAC' });
    expect(await xs.call('devIncoming', KX_TOPIC, res.reply.payload)).toEqual({ kind: 'confirmed' });
    await roundTrip(res.session);
  });

  it('XS device with wiped flash comes back by itself: authenticated counter hint, jump, phase 1; nothing accepted twice (§5.5)', async () => {
    const { server, store } = makeServer();
    await xs.call('devCreate', DEV, KEY, false);
    await xsConnect(server);
    for (let i = 0; i < 6; i++) {
      await xs.call('devLost');
      expect((await xsConnect(server)).phase).toBe(2);
    }
    const highest = await store.getCounter(DEV);
    await xs.call('devWipe');
    await xs.call('devCreate', DEV, KEY, true);
    const hinted = await xsConnect(server);
    expect(hinted).toEqual({ phase: 1, code: `hint ${highest}` });
    expect(await store.getCounter(DEV)).toBe(highest); // the stale KX1 moved nothing
    const back = await xsConnect(server);
    expect(back.phase).toBe(1);
    expect(await store.getCounter(DEV)).toBeGreaterThan(highest);
    await roundTrip(back.session!);
    await xs.call('devLost');
    await xs.call('devCreate', DEV, KEY, true); // reboot after the recovery: the jump was persisted
    const after = await xsConnect(server);
    expect(after.phase).toBe(2);
    await roundTrip(after.session!);
  });

  it('XS device refuses to connect when flash cannot be written (STORAGE), then recovers', async () => {
    const { server } = makeServer();
    await xs.call('devCreate', DEV, KEY, false);
    await xs.call('devFailNextPut');
    expect(await xs.call('devCredentials')).toEqual({ code: 'STORAGE' });
    const a = await xsConnect(server);
    expect(a.phase).toBe(1);
    await roundTrip(a.session!);
  });

  it('XS broker side holding only K_auth and K_psk (registry split, §14.2): phases 1 and 2, keys wiped after use, another key BAD_MAC', async () => {
    expect(await xs.call('splitKeys')).toEqual(['keys wiped', 'phase 1', 'phase 2', 'BAD_MAC']);
  });

  it('XS broker side: grace state exported at a graceful stop and imported by a new server (a restart is a reconnect)', async () => {
    expect(await xs.call('graceRestart')).toEqual(['restored 1', 'phase 2', 'REPLAY', 'ok', 'REPLAY', 'UNKNOWN_SESSION']);
  });

  it.each(groupFile.vectors.map((v) => [v.inputs.memberId, v] as const))('reproduces group test vector %s byte for byte (§14.9)', async (_n, v) => {
    expect(await xs.call('groupVectors', v.inputs)).toEqual(v.outputs);
  });

  it('XS group member: key delivery, seal and open against Node members, typed drops, channel MAC to a Node broker session', async () => {
    const ns = createNodeCryptoSuite();
    const F = 'sensors/xsdev001/#';
    const gk = ns.randomBytes(32);
    const grants = (flags: number) => [{ filter: F, flags, epoch: 7, groupKey: gk.slice(), writers: [DEV] }];
    // key service answers the XS member's request
    await xs.call('ringCreate', DEV, KEY);
    const ksDev = deriveKeyServiceKey(ns, fromHex(KEY), DEV);
    const ans = DeliverySender.answer(ns, ksDev, DEV, await xs.call('ringRequest'));
    expect(await xs.call('ringAccept', ans.seal({ seqBase: 100, seqLimit: 200, groups: grants(GROUP_READER | GROUP_WRITER) }))).toEqual([F]);
    // a Node reader
    const appKey = ns.randomBytes(32);
    const app = new GroupKeyring({ suite: ns, id: 'app1', keyServiceKey: deriveKeyServiceKey(ns, appKey, 'app1') });
    app.acceptDelivery(DeliverySender.answer(ns, deriveKeyServiceKey(ns, appKey, 'app1'), 'app1', app.request()).seal({ seqBase: 0, seqLimit: 0, groups: grants(GROUP_READER) }));
    const env = await xs.call('ringSeal', T, utf8Encode('21.5'));
    expect(app.open(T, env)).toMatchObject({ plaintext: utf8Encode('21.5'), publisher: DEV, epoch: 7 });
    // the XS member opens its own group as a reader too; replay, re-topic and forgery are typed drops
    expect((await xs.call('ringOpen', T, env)).plaintext).toEqual(utf8Encode('21.5'));
    expect(await xs.call('ringOpen', T, env)).toEqual({ code: 'REPLAY' });
    const env2 = await xs.call('ringSeal', T, utf8Encode('22.0'));
    expect(await xs.call('ringOpen', 'sensors/xsdev001/other', env2)).toEqual({ code: 'DECRYPT_FAILED' });
    const forged = env2.slice();
    forged[forged.length - 1] ^= 1;
    expect(await xs.call('ringOpen', T, forged)).toEqual({ code: 'DECRYPT_FAILED' });
    expect(await xs.call('ringOpen', T, env2.subarray(0, 5))).toEqual({ code: 'TRUNCATED' });
    // a replayed delivery is refused in XS
    const push = ans.seal({ seqBase: 100, seqLimit: 200, groups: grants(GROUP_READER | GROUP_WRITER) });
    expect(await xs.call('ringAccept', push)).toEqual([]);
    expect(await xs.call('ringAccept', push)).toEqual({ code: 'REPLAY' });
    // §14.4 range refill in XS: 2 of the range [100, 200) used; wanted at 75 used, not before
    expect((await xs.call('ringSealMany', T, 72)).wantsRange).toBe(false);
    expect((await xs.call('ringSealMany', T, 1)).wantsRange).toBe(true);
    const next = DeliverySender.answer(ns, ksDev, DEV, await xs.call('ringRequest'));
    expect((await xs.call('ringSealMany', T, 1)).wantsRange).toBe(false);
    expect(await xs.call('ringAccept', next.seal({ seqBase: 200, seqLimit: 300, groups: grants(GROUP_READER | GROUP_WRITER) }))).toEqual([]);
    expect(app.open(T, await xs.call('ringSeal', T, utf8Encode('23.0'))).plaintext).toEqual(utf8Encode('23.0'));
    // channel MAC: the XS device session wraps, the Node broker session unwraps without any AEAD
    await xs.call('devCreate', DEV, KEY, false);
    const { server } = makeServer();
    const c = await xsConnect(server);
    const wrapped = await xs.call('devWrap', T, env2);
    expect(c.session!.unwrapChannel(T, wrapped)).toEqual(env2);
    expect(() => c.session!.unwrapChannel(T, wrapped)).toThrow(/channel MAC/);
  });

  it('reports timings under XS (printed, not asserted)', async () => {
    const r = await xs.call('bench', 5);
    console.log(`XS timings (ms): ${JSON.stringify(r)}`);
    expect(r.phase1BothMs).toBeGreaterThan(0);
  });
});
