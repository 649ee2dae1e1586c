/**
 * The firmware StockConnector (firmware/app/stock-connector.ts) against an
 * in-memory stand-in for "stock broker + key service" built from firmware
 * modules only (ServerHandshake, MemoryTicketStore, DeliverySender), so the
 * very same scenario runs under Node and inside the XS engine
 * (test/xs/entries/stock.entry.ts). The stand-in behaves like dynamic
 * security (§15.3): a password check against the one installed token, RC
 * after the connect, the next token installed when the connection ends.
 */
import { constantTimeEqual } from '../../firmware/core/bytes.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { StockConnector, type StockLink, type StockLinkOptions } from '../../firmware/app/stock-connector.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { DeliverySender, GROUP_READER, GROUP_WRITER, GroupKeyring, MSG_GKREQ, deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { deriveDeviceKeys, resumeTag } from '../../firmware/secure/key-schedule.js';
import { buildResume, buildResumeBody, toTextForm } from '../../firmware/secure/messages.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { bootPassword, bootUsername, downTopic, idOfUpTopic, upTopic } from '../../firmware/secure/stock.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';

export interface ScenarioResult {
  /** Per connect: [phase1, sessionPresent]. */
  connects: [boolean, boolean][];
  /** What the reader opened, as "publisher|topic|text". */
  read: string[];
  /** Refused logins the stand-in saw (replayed token, plain password). */
  refusedLogins: number;
  /** The payload on the wire never contained the plaintext. */
  plaintextOnWire: boolean;
  errors: string[];
}

const ID = 'xsnode01';
const READER = 'reader01';
const GROUP = 'sensors/xsnode01/#';

export async function connectorScenario(suite: CryptoSuite, keyDevice: Uint8Array, keyReader: Uint8Array): Promise<ScenarioResult> {
  const res: ScenarioResult = { connects: [], read: [], refusedLogins: 0, plaintextOnWire: false, errors: [] };
  const tickets = new MemoryTicketStore();
  const keysOf = (id: string) => (id === ID ? keyDevice : id === READER ? keyReader : undefined);
  const hs = new ServerHandshake({
    suite,
    clock: { now: () => 1_700_000_000_000 },
    ticketStore: tickets,
    lookupDevice: (id) => {
      const k = keysOf(id);
      return k ? { keys: deriveDeviceKeys(suite, k, id), status: 'active' } : undefined;
    },
  });
  const groupKey = suite.randomBytes(32);
  let nextSeq = 0;
  // the stand-in's state per principal: installed token, whether its connection was seen, RC to resend
  const installed = new Map<string, { sid: Uint8Array; counter: number; text: string; used: boolean; rc?: Uint8Array }>();
  const sessions = new Set<string>(); // persistent sessions with the down subscription
  const links = new Map<string, StockLinkOptions>();
  const wire: Uint8Array[] = [];

  const token = async (id: string, sid: Uint8Array, counter: number) => {
    const t = (await tickets.getTicket(id, sid))!;
    const body = buildResumeBody(sid, counter);
    return buildResume(body, resumeTag(suite, t.authKey, id, body));
  };
  /** A PUBLISH on `id`'s down topic, to whichever of its connections (phase-2 or bootstrap) is open. */
  const deliver = (id: string, payload: Uint8Array) => (links.get(id) ?? links.get(bootUsername(id)))?.onMessage(downTopic(id), payload);

  const keyService = async (id: string, payload: Uint8Array) => {
    if (payload[0] === 0x11) {
      const r = await hs.acceptConnect(id, id, payload);
      if (r.kind === 'counter-hint') return deliver(id, r.reply.payload);
      if (r.kind !== 'phase1') return;
      const { secrets } = r.pending.take();
      const c = r.pending.counter + 1;
      const sid = secrets.sid.slice();
      await tickets.putTicket({ devId: id, sid, suite: suite.id, authKey: secrets.ticketAuthKey.slice(), chainStart: c, chainIndex: c, chainKey: secrets.chainKey.slice(), expiresAt: 2_000_000_000_000 });
      installed.set(id, { sid, counter: c, text: toTextForm(await token(id, sid, c)), used: false });
      deliver(id, r.reply.payload);
    } else if (payload[0] === 0x14) {
      const cur = installed.get(id);
      if (cur?.used && cur.rc) deliver(id, cur.rc);
    } else if (payload[0] === MSG_GKREQ) {
      const sender = DeliverySender.answer(suite, deriveKeyServiceKey(suite, keysOf(id)!, id), id, payload);
      const flags = id === ID ? GROUP_WRITER : GROUP_READER;
      // §14.4: sequence ranges are never handed out twice under one key (a rebooted writer gets a fresh one)
      const seqBase = nextSeq;
      nextSeq += 64;
      deliver(id, sender.seal({ seqBase, seqLimit: seqBase + 64, groups: [{ filter: GROUP, flags, epoch: 1, groupKey, writers: [ID] }] }));
    }
  };

  const open = async (o: StockLinkOptions): Promise<StockLink> => {
    const isBoot = o.username.startsWith('boot@');
    const id = isBoot ? o.username.slice(5) : o.username;
    const pw = utf8Decode(o.password);
    if (o.clientId !== o.username) throw Object.assign(new Error('client id'), { returnCode: 5 });
    if (isBoot) {
      const k = deriveDeviceKeys(suite, keysOf(id)!, id);
      if (pw !== bootPassword(suite, k.authKey, id)) throw Object.assign(new Error('bad boot'), { returnCode: 5 });
    } else {
      const cur = installed.get(id);
      if (!cur || cur.used || !constantTimeEqual(utf8Encode(pw), utf8Encode(cur.text))) {
        res.refusedLogins++;
        throw Object.assign(new Error('bad password'), { returnCode: 5 });
      }
    }
    const present = !isBoot && !o.cleanSession && sessions.has(id);
    links.set(isBoot ? o.username : id, o);
    o.onConnack();
    if (!isBoot) {
      // the connect is seen (broker log): §6.2 on the installed token, RC to the session
      const cur = installed.get(id)!;
      const r = await hs.acceptConnect(id, id, await token(id, cur.sid, cur.counter));
      if (r.kind === 'phase2') {
        r.session.close();
        cur.used = true;
        cur.rc = r.reply.payload;
        if (present) o.onMessage(downTopic(id), r.reply.payload);
      }
    }
    return {
      sessionPresent: present,
      subscribe: async (filter) => {
        if (!isBoot && filter === downTopic(id)) sessions.add(id);
        return [1];
      },
      publish: async (topic, payload) => {
        wire.push(payload.slice());
        const upId = idOfUpTopic(topic);
        if (upId !== undefined) {
          if (upId === id) await keyService(id, payload);
          return;
        }
        // a reading: routed to the reader's link as it is
        links.get(READER)?.onMessage(topic, payload);
      },
      close: async () => {
        links.delete(isBoot ? o.username : id);
        const cur = installed.get(id);
        // the disconnect is seen: the next token becomes the password
        if (!isBoot && cur?.used) {
          const t = (await tickets.getTicket(id, cur.sid))!;
          installed.set(id, { sid: cur.sid, counter: t.chainIndex, text: toTextForm(await token(id, cur.sid, t.chainIndex)), used: false });
        }
      },
    };
  };

  const timer = { set: () => 0, clear: () => {} }; // timeouts are not exercised here
  const make = (id: string, key: Uint8Array, storage: MemoryStorage, onMessage?: (m: { publisher: string; topic: string; plaintext: Uint8Array }) => void) => {
    const k = deriveDeviceKeys(suite, key, id);
    const session = new DeviceSecureSession({ suite, devId: id, deviceKey: key, storage });
    const c = new StockConnector({
      id,
      session,
      keyring: new GroupKeyring({ suite, id, keyServiceKey: deriveKeyServiceKey(suite, key, id) }),
      bootPassword: bootPassword(suite, k.authKey, id),
      open,
      timer,
      onMessage,
      onDropped: (t, e) => res.errors.push(`${id} ${t} ${e.code}`),
    });
    return { c, session };
  };
  const reader = make(READER, keyReader, new MemoryStorage(), (m) => res.read.push(`${m.publisher}|${m.topic}|${utf8Decode(m.plaintext)}`));
  await reader.c.connect();
  const flash = new MemoryStorage();
  let dev = make(ID, keyDevice, flash);
  const wakeOnce = async (n: number) => {
    const r = await dev.c.connect();
    res.connects.push([r.phase1, r.sessionPresent]);
    await dev.c.publish(`sensors/${ID}/t`, utf8Encode(`reading ${n}`), 1);
    await dev.c.close();
  };
  await wakeOnce(0);
  const older = await flash.get('mqsec.state'); // a copy of the flash as it was after the first wake
  for (let wake = 1; wake < 3; wake++) await wakeOnce(wake);
  // §15.7: a power cut (RAM lost, flash kept): the counter resumes at the next block, the installed
  // token does not match, the broker refuses it, the device runs phase 1 and goes on
  dev = make(ID, keyDevice, flash);
  await wakeOnce(3);
  // §5.5 + §15.2: flash wiped: the counter hint over PUBLISH, then phase 1
  dev = make(ID, keyDevice, new MemoryStorage());
  await wakeOnce(4);
  // §15.7: state restored from that older copy (counter behind, old ticket): the token is refused, the KX1 gets a
  // counter hint, then phase 1 above it and phase 2, in one connect()
  const restored = new MemoryStorage();
  await restored.put('mqsec.state', older!);
  dev = make(ID, keyDevice, restored);
  await wakeOnce(5);
  // a recorded token is refused, and so is a plain password
  const used = installed.get(ID)!;
  for (const pw of ['password', toTextForm(await token(ID, used.sid, used.counter - 1))]) {
    await open({ clientId: ID, username: ID, password: utf8Encode(pw), cleanSession: false, stage: 'phase2', onConnack() {}, onMessage() {}, onClose() {} }).catch(() => undefined);
  }
  await reader.c.close();
  const needle = utf8Encode('reading');
  res.plaintextOnWire = wire.some((b) => b.some((_, i) => needle.every((x, j) => b[i + j] === x)));
  return res;
}
