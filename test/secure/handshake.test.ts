/**
 * Phase 1 and phase 2 end to end between DeviceSecureSession (noble suite)
 * and ServerHandshake (node:crypto suite), the byte budgets, and the negative
 * tests of docs/protocol.md §10: every bad input fails closed with a specific
 * error code and changes nothing.
 */
import { describe, it, expect } from 'vitest';
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { MqsecError, isMqsecError } from '../../firmware/core/errors.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import { COUNTER_MAX, KX_TOPIC, MSG_KX1, SID_LENGTH, TEXT_MARKER, TICKET_COUNTER_SPAN } from '../../firmware/secure/constants.js';
import { deriveDeviceKeys, kx1Tag, resumeTag } from '../../firmware/secure/key-schedule.js';
import { buildKx1, buildKx1Body, buildResume, buildResumeBody, parseKx1, parseResume, toTextForm } from '../../firmware/secure/messages.js';
import type { AcceptResult } from '../../firmware/secure/server.js';
import { connackBytes, connectBytes, kxPublishBytes } from './budget.js';
import { LOW_ORDER_POINTS, DEV_ID, REFUSED, connect, connectWithFallback, deviceKeyFor, eq, exchange, makeWorld } from './helpers.js';

/** CONNECT 85 + CONNACK 4 + KX2 PUBLISH 62 + KX3 PUBLISH 30 (8-char id, counter < 128). */
const EXPECTED_PHASE1_TOTAL = 181;
/** CONNECT 56 + CONNACK 4 + resume-confirmation PUBLISH 36 (8-char id, counter < 128); 100 at the 2^32 counter limit. */
const EXPECTED_PHASE2_TOTAL = 96;

async function code(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (e instanceof MqsecError) return e.code;
    return `foreign: ${String(e)}`;
  }
  return 'no error';
}

describe('phase 1 (full handshake)', () => {
  it('authenticates both sides and agrees keys in one round trip', async () => {
    const w = makeWorld();
    const { session, phase } = await connect(w.device, w.server);
    expect(phase).toBe(1);
    expect(w.device.state).toBe('ready');
    expect(session.devId).toBe(DEV_ID);
    expect(w.device.sid).toEqual(session.sid);
    await exchange(w.device, session);
    expect(w.store.ticketCount(DEV_ID)).toBe(1);
  });

  it('stays within the byte budget (<= 256 B all-in, 1 round trip)', async () => {
    const w = makeWorld();
    const cred = await w.device.connectCredentials();
    const res = (await w.server.acceptConnect(cred.clientId, cred.username, cred.password)) as Extract<AcceptResult, { kind: 'phase1' }>;
    await w.device.onConnack(0);
    const r = await w.device.handleIncoming(res.reply.topic, res.reply.payload);
    if (r.kind !== 'handshake') throw new Error('no KX3');
    const total = connectBytes(cred.clientId, cred.username, cred.password) + connackBytes() + kxPublishBytes(res.reply.payload) + kxPublishBytes(r.reply.payload);
    expect(cred.password.length).toBe(51);
    expect(res.reply.payload.length).toBe(49);
    expect(r.reply.payload.length).toBe(17);
    expect(total).toBeLessThanOrEqual(256);
    expect(total).toBe(EXPECTED_PHASE1_TOTAL);
  });

  it('accepts the text form of KX1 (string password and UTF-8 bytes)', async () => {
    for (const asBytes of [false, true]) {
      const w = makeWorld({ seed: `text${asBytes}` });
      const cred = await w.device.connectCredentials();
      const text = toTextForm(cred.password);
      expect(text.startsWith(TEXT_MARKER)).toBe(true);
      const res = await w.server.acceptConnect(cred.clientId, cred.username, asBytes ? utf8Encode(text) : text);
      expect(res.kind).toBe('phase1');
    }
  });

  it('ignores clients that are not registered devices (not-mqsec)', async () => {
    const w = makeWorld();
    expect((await w.server.acceptConnect('someone', 'someone', utf8Encode('pw'))).kind).toBe('not-mqsec');
  });
});

describe('phase 2 (resumption)', () => {
  it('resumes in <= 100 B all-in (CONNECT, CONNACK, confirmation), 1 round trip, no public-key op, fresh keys each time', async () => {
    const w = makeWorld();
    const first = await connect(w.device, w.server);
    w.device.onConnectionLost();
    first.session.close();
    let dh = 0;
    const origDh = w.suiteServer.dh;
    (w.suiteServer as any).dh = (...a: [Uint8Array, Uint8Array]) => (dh++, origDh(...a));
    const epochs = new Set<number>();
    for (let i = 0; i < 5; i++) {
      const cred = await w.device.connectCredentials();
      expect(cred.phase).toBe(2);
      const res = await w.server.acceptConnect(cred.clientId, cred.username, cred.password);
      if (res.kind !== 'phase2') throw new Error('expected phase 2');
      // one flight each way: CONNECT; CONNACK + confirmation (§6.4)
      const total = connectBytes(cred.clientId, cred.username, cred.password) + connackBytes() + kxPublishBytes(res.reply.payload);
      expect(res.reply.payload.length).toBe(23);
      expect(total).toBe(EXPECTED_PHASE2_TOTAL);
      await w.device.onConnack(0);
      expect(w.device.state).toBe('awaiting-confirm');
      expect(() => w.device.seal('sensors/sensor01/t', utf8Encode('x'))).toThrow(/BAD_STATE/);
      expect((await w.device.handleIncoming(res.reply.topic, res.reply.payload)).kind).toBe('confirmed');
      expect(w.device.state).toBe('ready');
      await exchange(w.device, res.session);
      epochs.add(res.session.epoch);
      w.device.onConnectionLost();
      res.session.close();
    }
    expect(dh).toBe(0);
    expect(epochs.size).toBe(5);
    // the largest counter (5-byte varint) still fits: 100 B
    const longest = buildResume(buildResumeBody(new Uint8Array(SID_LENGTH), COUNTER_MAX), new Uint8Array(16));
    expect(connectBytes(DEV_ID, DEV_ID, longest) + connackBytes() + kxPublishBytes(new Uint8Array(23))).toBe(100);
  });

  it('survives a device reboot: skips to the next counter block, writes storage once per block', async () => {
    const w = makeWorld({ device: { counterBlock: 8 } });
    await connect(w.device, w.server);
    const putsAfterPhase1 = w.storage.puts; // one reservation + one ticket write
    expect(putsAfterPhase1).toBe(2);
    for (let i = 0; i < 7; i++) {
      w.device.onConnectionLost();
      expect((await connect(w.device, w.server)).phase).toBe(2);
    }
    expect(w.storage.puts).toBe(putsAfterPhase1); // counters 1..7 came from the first block
    w.device.onConnectionLost();
    await connect(w.device, w.server); // counter 8: a new block
    expect(w.storage.puts).toBe(putsAfterPhase1 + 1);
    // reboot: a new object on the same storage
    const rebooted = w.newDevice({ counterBlock: 8 });
    const cred = await rebooted.connectCredentials();
    expect(cred.phase).toBe(2);
    expect(parseResume(cred.password).counter).toBe(16); // 8..15 reserved before the reboot
    const res = await w.server.acceptConnect(cred.clientId, cred.username, cred.password);
    await rebooted.onConnack(0);
    if (res.kind !== 'phase2') throw new Error('expected phase 2');
    await rebooted.handleIncoming(res.reply.topic, res.reply.payload);
    await exchange(rebooted, res.session);
  });

  it('accepts the text form of the resume token', async () => {
    const w = makeWorld();
    await connect(w.device, w.server);
    w.device.onConnectionLost();
    const cred = await w.device.connectCredentials();
    expect((await w.server.acceptConnect(cred.clientId, cred.username, toTextForm(cred.password))).kind).toBe('phase2');
  });

  it('falls back to phase 1 when the broker refuses the ticket', async () => {
    const w = makeWorld();
    await connect(w.device, w.server);
    w.device.onConnectionLost();
    await w.store.revokeDevice(DEV_ID); // tickets gone, device still registered
    await expect(connect(w.device, w.server)).rejects.toMatchObject({ code: 'UNKNOWN_SESSION' });
    expect(w.device.hasTicket).toBe(false);
    const again = await connect(w.device, w.server);
    expect(again.phase).toBe(1);
    await exchange(w.device, again.session);
  });
});

describe('negative tests: fail closed with a specific code', () => {
  async function kx1World() {
    const w = makeWorld({ seed: 'neg' });
    const cred = await w.device.connectCredentials();
    return { w, cred };
  }

  it('wrong device key -> BAD_MAC, before any public-key operation', async () => {
    const w = makeWorld();
    w.devices.set(DEV_ID, { deviceKey: deviceKeyFor('other'), status: 'active' });
    let dh = 0;
    const origDh = w.suiteServer.dh;
    (w.suiteServer as any).dh = (...a: [Uint8Array, Uint8Array]) => (dh++, origDh(...a));
    const cred = await w.device.connectCredentials();
    expect(await code(w.server.acceptConnect(cred.clientId, cred.username, cred.password))).toBe('BAD_MAC');
    expect(dh).toBe(0);
    expect(await w.store.getCounter(DEV_ID)).toBe(-1); // no write either
  });

  it('every byte of KX1 flipped, truncated or extended is refused', async () => {
    const { w, cred } = await kx1World();
    const pw = cred.password;
    for (let i = 0; i < pw.length; i++) {
      const bad = pw.slice();
      bad[i] ^= 0x01;
      const c = await code(w.server.acceptConnect(DEV_ID, DEV_ID, bad));
      const expected = i === 0 ? 'UNKNOWN_TYPE' : i === 1 ? 'BAD_SUITE' : 'BAD_MAC';
      expect([expected, 'MALFORMED'], `byte ${i}: ${c}`).toContain(c);
    }
    for (let n = 1; n < pw.length; n++) {
      expect(['TRUNCATED', 'MALFORMED'], `len ${n}`).toContain(await code(w.server.acceptConnect(DEV_ID, DEV_ID, pw.subarray(0, n))));
    }
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, new Uint8Array([...pw, 0])))).toBe('MALFORMED');
    expect(await w.store.getCounter(DEV_ID)).toBe(-1);
    // the genuine one still works afterwards
    expect((await w.server.acceptConnect(DEV_ID, DEV_ID, pw)).kind).toBe('phase1');
  });

  it('replayed KX1 -> counter hint only (no session, no public-key operation, no write), live session untouched', async () => {
    const w = makeWorld();
    const cred = await w.device.connectCredentials();
    const res = await w.server.acceptConnect(cred.clientId, cred.username, cred.password);
    await w.device.onConnack(0);
    if (res.kind !== 'phase1') throw new Error();
    const r = await w.device.handleIncoming(res.reply.topic, res.reply.payload);
    if (r.kind !== 'handshake') throw new Error();
    const session = await w.server.completePhase1(res.pending, r.reply.payload);
    let dh = 0;
    const origDh = w.suiteServer.dh;
    (w.suiteServer as any).dh = (...a: [Uint8Array, Uint8Array]) => (dh++, origDh(...a));
    const counter = await w.store.getCounter(DEV_ID);
    for (const pw of [cred.password, toTextForm(cred.password)]) {
      const again = await w.server.acceptConnect(DEV_ID, DEV_ID, pw);
      expect(again.kind).toBe('counter-hint'); // §5.5: no pending handshake, no keys, no session
    }
    expect(dh).toBe(0);
    expect(await w.store.getCounter(DEV_ID)).toBe(counter);
    await exchange(w.device, session);
  });

  it('replayed KX3 -> BAD_STATE; forged KX3 -> BAD_MAC and the pending handshake dies', async () => {
    const w = makeWorld();
    const cred = await w.device.connectCredentials();
    const res = await w.server.acceptConnect(cred.clientId, cred.username, cred.password);
    await w.device.onConnack(0);
    if (res.kind !== 'phase1') throw new Error();
    const r = await w.device.handleIncoming(res.reply.topic, res.reply.payload);
    if (r.kind !== 'handshake') throw new Error();
    await w.server.completePhase1(res.pending, r.reply.payload);
    expect(await code(w.server.completePhase1(res.pending, r.reply.payload))).toBe('BAD_STATE');

    const w2 = makeWorld({ seed: 'kx3' });
    const c2 = await w2.device.connectCredentials();
    const res2 = await w2.server.acceptConnect(c2.clientId, c2.username, c2.password);
    await w2.device.onConnack(0);
    if (res2.kind !== 'phase1') throw new Error();
    const r2 = await w2.device.handleIncoming(res2.reply.topic, res2.reply.payload);
    if (r2.kind !== 'handshake') throw new Error();
    const kx3 = r2.reply.payload;
    for (let i = 0; i < kx3.length; i++) {
      const bad = kx3.slice();
      bad[i] ^= 0x80;
      const c = await code(w2.server.completePhase1(res2.pending, bad));
      // the first wrong KX3 spends the pending handshake; later attempts see BAD_STATE
      expect(i === 0 ? ['BAD_VERSION'] : ['BAD_STATE']).toContain(c);
    }
    const w3 = makeWorld({ seed: 'kx3b' });
    const c3 = await w3.device.connectCredentials();
    const res3 = await w3.server.acceptConnect(c3.clientId, c3.username, c3.password);
    if (res3.kind !== 'phase1') throw new Error();
    const forged = new Uint8Array(17);
    forged[0] = 0x13;
    expect(await code(w3.server.completePhase1(res3.pending, forged))).toBe('BAD_MAC');
    expect(await code(w3.server.completePhase1(res3.pending, forged))).toBe('BAD_STATE');
    expect(w3.store.ticketCount(DEV_ID)).toBe(0);
    expect(await code(w3.server.completePhase1(res3.pending, new Uint8Array(0)))).toBe('BAD_STATE');
  });

  it('every byte of KX2 flipped, truncated or extended is dropped by the device', async () => {
    for (let i = 0; i < 49 + 2; i++) {
      const w = makeWorld({ seed: `kx2-${i}` });
      const cred = await w.device.connectCredentials();
      const res = await w.server.acceptConnect(cred.clientId, cred.username, cred.password);
      await w.device.onConnack(0);
      if (res.kind !== 'phase1') throw new Error();
      let bad: Uint8Array;
      if (i < 49) {
        bad = res.reply.payload.slice();
        bad[i] ^= 0x04;
      } else bad = i === 49 ? res.reply.payload.subarray(0, 48) : new Uint8Array([...res.reply.payload, 0]);
      const r = await w.device.handleIncoming(KX_TOPIC, bad);
      expect(r.kind).toBe('dropped');
      if (r.kind === 'dropped') expect(['UNKNOWN_TYPE', 'BAD_MAC', 'BAD_KEY', 'TRUNCATED', 'MALFORMED'], `byte ${i}`).toContain(r.error.code);
      expect(w.device.state).toBe('awaiting-kx2');
      if (i === 0) {
        // after garbage, the genuine KX2 still completes
        const ok = await w.device.handleIncoming(KX_TOPIC, res.reply.payload);
        expect(ok.kind).toBe('handshake');
      }
    }
  });

  it('unexpected KX2 (not awaiting one) -> BAD_STATE', async () => {
    const w = makeWorld();
    await connect(w.device, w.server);
    const kx2 = new Uint8Array(49);
    kx2[0] = 0x12;
    const r = await w.device.handleIncoming(KX_TOPIC, kx2);
    expect(r.kind === 'dropped' && r.error.code).toBe('BAD_STATE');
  });

  it('every byte of the resume token flipped, truncated or extended is refused, counter unchanged', async () => {
    const w = makeWorld();
    await connect(w.device, w.server);
    w.device.onConnectionLost();
    const cred = await w.device.connectCredentials();
    const pw = cred.password;
    const before = await w.store.getCounter(DEV_ID);
    for (let i = 0; i < pw.length; i++) {
      const bad = pw.slice();
      bad[i] ^= 0x01;
      const c = await code(w.server.acceptConnect(DEV_ID, DEV_ID, bad));
      const expected = i === 0 ? 'UNKNOWN_TYPE' : i <= SID_LENGTH ? 'UNKNOWN_SESSION' : 'BAD_MAC';
      expect(c, `byte ${i}`).toBe(expected);
    }
    for (let n = 1; n < pw.length; n++) expect(['TRUNCATED', 'MALFORMED']).toContain(await code(w.server.acceptConnect(DEV_ID, DEV_ID, pw.subarray(0, n))));
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, new Uint8Array([...pw, 1])))).toBe('MALFORMED');
    expect(await w.store.getCounter(DEV_ID)).toBe(before);
    expect((await w.server.acceptConnect(DEV_ID, DEV_ID, pw)).kind).toBe('phase2');
  });

  it('replayed resume token -> REPLAY; older token -> COUNTER_ROLLBACK', async () => {
    const w = makeWorld();
    await connect(w.device, w.server);
    w.device.onConnectionLost();
    const old = await w.device.connectCredentials();
    await w.device.onConnack(0);
    w.device.onConnectionLost();
    const cur = await w.device.connectCredentials();
    expect((await w.server.acceptConnect(DEV_ID, DEV_ID, cur.password)).kind).toBe('phase2');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, cur.password))).toBe('REPLAY');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, old.password))).toBe('COUNTER_ROLLBACK');
  });

  it('expired ticket (broker clock) -> EXPIRED; unknown sid -> UNKNOWN_SESSION; revoked -> REVOKED', async () => {
    const w = makeWorld({ server: { ticketLifetimeMs: 1000 } });
    await connect(w.device, w.server);
    w.device.onConnectionLost();
    w.clock.advance(1000);
    const cred = await w.device.connectCredentials();
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, cred.password))).toBe('EXPIRED');
    expect(w.store.ticketCount(DEV_ID)).toBe(0);
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, cred.password))).toBe('UNKNOWN_SESSION');
    w.devices.set(DEV_ID, { deviceKey: deviceKeyFor(DEV_ID), status: 'revoked' });
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, cred.password))).toBe('REVOKED');
  });

  it('wrong version / suite / type; downgrade to a plain password; username mismatch', async () => {
    const { w, cred } = await kx1World();
    const pw = cred.password;
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, new Uint8Array([0x21 - 0x10 + 0x80, ...pw.subarray(1)])))).toBe('BAD_VERSION');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, new Uint8Array([0x01, ...pw.subarray(1)])))).toBe('BAD_VERSION');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, new Uint8Array([MSG_KX1, 2, ...pw.subarray(2)])))).toBe('BAD_SUITE');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, new Uint8Array([0x12, ...pw.subarray(1)])))).toBe('UNKNOWN_TYPE');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, utf8Encode('hunter2')))).toBe('DOWNGRADE');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, 'hunter2'))).toBe('DOWNGRADE');
    expect(await code(w.server.acceptConnect(DEV_ID, undefined, undefined))).toBe('DOWNGRADE');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, new Uint8Array(0)))).toBe('DOWNGRADE');
    expect(await code(w.server.acceptConnect(DEV_ID, 'other', pw))).toBe('NOT_AUTHORIZED');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, '~not*base64'))).toBe('MALFORMED');
  });

  it('a 1 MB password -> OVERSIZE without parsing', async () => {
    const { w } = await kx1World();
    const big = new Uint8Array(1 << 20).fill(0x11);
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, big))).toBe('OVERSIZE');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, TEXT_MARKER + 'A'.repeat(1 << 20)))).toBe('OVERSIZE');
  });

  it('low-order X25519 points in a correctly MACed KX1 -> BAD_KEY, no KX2', async () => {
    const w = makeWorld();
    const { authKey } = deriveDeviceKeys(w.suiteDevice, deviceKeyFor(DEV_ID), DEV_ID);
    let counter = 100;
    for (const p of LOW_ORDER_POINTS) {
      const body = buildKx1Body(1, counter++, fromHex(p));
      const kx1 = buildKx1(body, kx1Tag(w.suiteDevice, authKey, DEV_ID, body));
      expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, kx1)), p).toBe('BAD_KEY');
    }
  });

  it('low-order Y_s in a KX2 is dropped by the device with BAD_KEY', async () => {
    const w = makeWorld();
    await w.device.connectCredentials();
    await w.device.onConnack(0);
    const kx2 = new Uint8Array(49);
    kx2[0] = 0x12;
    const r = await w.device.handleIncoming(KX_TOPIC, kx2);
    expect(r.kind === 'dropped' && r.error.code).toBe('BAD_KEY');
  });

  it('a refused phase-1 CONNACK leaves the device able to retry', async () => {
    const w = makeWorld();
    await w.device.connectCredentials();
    await w.device.onConnack(REFUSED);
    expect(w.device.state).toBe('idle');
    expect((await connect(w.device, w.server)).phase).toBe(1);
  });

  it('parse of the KX1 the device sends is canonical (round trip)', async () => {
    const { cred } = await kx1World();
    const p = parseKx1(cred.password);
    expect(p.counter).toBe(0);
    expect(toHex(buildKx1(p.body, p.tag))).toBe(toHex(cred.password));
  });

  it('client-id takeover: a replayed phase-2 CONNECT never yields a session', async () => {
    const w = makeWorld();
    const a = await connectWithFallback(w.device, w.server);
    w.device.onConnectionLost();
    const cred = await w.device.connectCredentials();
    const res = await w.server.acceptConnect(DEV_ID, DEV_ID, cred.password);
    await w.device.onConnack(0);
    expect(res.kind).toBe('phase2');
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, cred.password))).toBe('REPLAY');
    expect(isMqsecError(new MqsecError('REPLAY', 'x'), 'REPLAY')).toBe(true);
    expect(eq(a.session.sid, w.device.sid!)).toBe(true);
  });
});

describe('device storage wiped: counter hint (§5.5)', () => {
  it('a device restarting at counter 0 gets an authenticated hint, jumps past it and is back in phase 1; no counter is ever accepted twice', async () => {
    const w = makeWorld({ device: { counterBlock: 4 } });
    await connect(w.device, w.server);
    for (let i = 0; i < 9; i++) {
      w.device.onConnectionLost();
      await connect(w.device, w.server);
    }
    const highest = await w.store.getCounter(DEV_ID);
    expect(highest).toBe(9);
    w.storage.data.clear(); // flash wiped (or a new board with the same key)
    const wiped = w.newDevice({ counterBlock: 4 });
    const first = await wiped.connectCredentials();
    expect(parseKx1(first.password).counter).toBe(0);
    wiped.onConnectionLost();
    // the connect with counter 0 is answered by a hint, never by a session
    await expect(connect(wiped, w.server)).rejects.toMatchObject({ counter: highest });
    const again = await connect(wiped, w.server);
    expect(again.phase).toBe(1);
    expect(await w.store.getCounter(DEV_ID)).toBeGreaterThan(highest);
    await exchange(wiped, again.session);
    // and the counter jump is on flash: a reboot does not go back below the hint
    const rebooted = w.newDevice({ counterBlock: 4 });
    const cred = await rebooted.connectCredentials();
    expect(parseResume(cred.password).counter).toBeGreaterThan(highest + 1);
  });

  it('a hint is bound to the KX1 it answers: replayed to another attempt, forged, or unexpected, it moves nothing', async () => {
    const w = makeWorld();
    await connect(w.device, w.server);
    await w.store.advanceCounter(DEV_ID, 50); // the device had used counters up to 50
    w.storage.data.clear();
    const wiped = w.newDevice();
    const c1 = await wiped.connectCredentials();
    const res = await w.server.acceptConnect(DEV_ID, DEV_ID, c1.password);
    if (res.kind !== 'counter-hint') throw new Error('counter hint expected');
    // the recovery path's cost on the wire (§13): CONNECT 85 + CONNACK 4 + HINT PUBLISH 31
    expect(connectBytes(c1.clientId, c1.username, c1.password) + connackBytes() + kxPublishBytes(res.reply.payload)).toBe(120);
    // the attacker keeps the hint and offers it to the device's next attempt (new X_d): refused
    wiped.onConnectionLost();
    const c2 = await wiped.connectCredentials();
    await wiped.onConnack(0);
    const replayed = await wiped.handleIncoming(KX_TOPIC, res.reply.payload);
    expect(replayed.kind === 'dropped' && replayed.error.code).toBe('BAD_MAC');
    // a forged hint with a huge counter: refused, and the counter does not move
    const forged = res.reply.payload.slice();
    forged[1] = 0x7f;
    const f = await wiped.handleIncoming(KX_TOPIC, forged);
    expect(f.kind === 'dropped' && f.error.code).toBe('BAD_MAC');
    wiped.onConnectionLost();
    const c3 = await wiped.connectCredentials();
    expect(parseKx1(c3.password).counter).toBe(parseKx1(c2.password).counter + 1);
    // a device that is not waiting for KX2 takes no hint
    const h = await w.server.acceptConnect(DEV_ID, DEV_ID, c3.password);
    expect(h.kind).toBe('counter-hint');
    if (h.kind !== 'counter-hint') return;
    const notWaiting = await wiped.handleIncoming(KX_TOPIC, h.reply.payload);
    expect(notWaiting.kind === 'dropped' && notWaiting.error.code).toBe('BAD_STATE');
  });
});

describe('ticket counter span (§6.5)', () => {
  it('a ticket serves TICKET_COUNTER_SPAN counters: the device then runs phase 1 by itself, the broker refuses the old ticket', async () => {
    const w = makeWorld({ device: { counterBlock: 256 } });
    await connect(w.device, w.server); // phase 1 at counter 0: the ticket serves 1 .. 1024
    const sid = w.device.sid!;
    let rebooted = w.device;
    const tokens: Uint8Array[] = [];
    // reboots skip a block of 256 each: counters 256, 512, 768, then 1024 is the last in the span
    for (const expected of [256, 512, 768, 1024]) {
      rebooted = w.newDevice({ counterBlock: 256 });
      const c = await rebooted.connectCredentials();
      expect(c.phase).toBe(2);
      expect(parseResume(c.password).counter).toBe(expected);
      tokens.push(c.password);
      const res = await w.server.acceptConnect(DEV_ID, DEV_ID, c.password);
      expect(res.kind).toBe('phase2');
    }
    rebooted = w.newDevice({ counterBlock: 256 });
    const next = await rebooted.connectCredentials();
    expect(next.phase).toBe(1); // 1280 is past the span: fresh X25519, new ticket
    expect(parseKx1(next.password).counter).toBe(1280);
    // the broker side of the same bound: a token past the span is EXPIRED even with a valid tag
    const { decodeDeviceRecord } = await import('../../firmware/secure/device.js');
    const w2 = makeWorld();
    await connect(w2.device, w2.server);
    const t = decodeDeviceRecord(w2.storage.data.get('mqsec.state')!).ticket!;
    expect(t.chainStart).toBe(1);
    const tokenAt = (c: number) => {
      const body = buildResumeBody(t.sid, c);
      return buildResume(body, resumeTag(w2.suiteDevice, t.authKey, DEV_ID, body));
    };
    expect(await code(w2.server.acceptConnect(DEV_ID, DEV_ID, tokenAt(1 + TICKET_COUNTER_SPAN)))).toBe('EXPIRED');
    expect(await w2.store.getCounter(DEV_ID)).toBe(0); // refused before the counter moved
    expect(await code(w2.server.acceptConnect(DEV_ID, DEV_ID, tokenAt(TICKET_COUNTER_SPAN)))).toBe('UNKNOWN_SESSION'); // and the ticket is gone
    expect(sid.length).toBe(SID_LENGTH);
  });
});

describe('forward secrecy of the resumption chain (§6.6)', () => {
  it('neither the broker store nor the device flash holds the chain key of a used connection', async () => {
    const w = makeWorld({ device: { counterBlock: 4 } });
    await connect(w.device, w.server); // counter 0
    const counters: number[] = [];
    for (let i = 0; i < 6; i++) {
      w.device.onConnectionLost();
      const cred = await w.device.connectCredentials();
      counters.push(parseResume(cred.password).counter);
      const res = await w.server.acceptConnect(cred.clientId, cred.username, cred.password);
      await w.device.onConnack(0);
      if (res.kind !== 'phase2') throw new Error();
    }
    const last = counters[counters.length - 1];
    const t = await w.store.getTicket(DEV_ID, w.device.sid!);
    expect(t!.chainIndex).toBe(last + 1); // broker: S_(c+1) only
    const { decodeDeviceRecord } = await import('../../firmware/secure/device.js');
    const rec = decodeDeviceRecord(w.storage.data.get('mqsec.state')!);
    // flash: S at the start of the current block (4), never earlier; connections 1..3 are out of reach
    expect(rec.ticket!.chainIndex).toBe(4);
    expect(counters).toEqual([1, 2, 3, 4, 5, 6]);
  });
});

describe('suppress-and-delay of a CONNECT (docs/threat-model.md §2, residual risk)', () => {
  it('a resume token held back and delivered late is accepted once but yields no keys, and never blocks the device', async () => {
    const w = makeWorld();
    await connectWithFallback(w.device, w.server);
    w.device.onConnectionLost();
    // the on-path attacker swallows the device's CONNECT; the device times out and retries
    const held = await w.device.connectCredentials();
    w.device.onConnectionLost();
    const retry = await w.device.connectCredentials();
    // the attacker delivers the swallowed token first: it is the genuine, unused one
    const stolen = await w.server.acceptConnect(DEV_ID, DEV_ID, held.password);
    expect(stolen.kind).toBe('phase2');
    // ...but the attacker has no traffic keys: whatever it sends does not open
    if (stolen.kind !== 'phase2') throw new Error('unreachable');
    const forged = new Uint8Array(40).fill(7);
    forged[0] = stolen.session.epoch;
    expect(['DECRYPT_FAILED', 'MALFORMED']).toContain(await code(() => stolen.session.open('sensors/sensor01/t', forged)));
    // the device's own, later token still gets in (strictly greater counter) and works
    const res = await w.server.acceptConnect(DEV_ID, DEV_ID, retry.password);
    await w.device.onConnack(0);
    expect(res.kind).toBe('phase2');
    if (res.kind !== 'phase2') throw new Error('unreachable');
    // the confirmation of the stolen connection does not verify for the device's own connection
    const wrong = await w.device.handleIncoming(stolen.reply.topic, stolen.reply.payload);
    expect(wrong.kind === 'dropped' && wrong.error.code).toBe('BAD_MAC');
    expect((await w.device.handleIncoming(res.reply.topic, res.reply.payload)).kind).toBe('confirmed');
    await exchange(w.device, res.session);
    // and the held-back token can never be used again
    expect(await code(w.server.acceptConnect(DEV_ID, DEV_ID, held.password))).toMatch(/REPLAY|COUNTER_ROLLBACK/);
  });
});

describe('a broker holding only K_auth and K_psk (registry split, docs/protocol.md §14.2)', () => {
  it('runs phases 1 and 2, wipes the keys it was handed, and fails another key as BAD_MAC (also inside XS)', async () => {
    const { createNodeCryptoSuite } = await import('../../platform-node/crypto-suite.js');
    const { splitKeysScenario } = await import('./split-keys.js');
    expect(await splitKeysScenario(createNodeCryptoSuite())).toEqual(['keys wiped', 'phase 1', 'phase 2', 'BAD_MAC']);
  });
});
