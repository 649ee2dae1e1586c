/**
 * An in-memory stand-in for "stock broker + key service" (docs/protocol.md
 * §15) built from firmware modules only (ServerHandshake, MemoryTicketStore,
 * DeliverySender), so scenarios using it run under Node and inside the XS
 * engine alike. It behaves like dynamic security (§15.3): a password check
 * against the one installed token, RC after the connect, the next token
 * installed when the connection ends; persistent sessions keep their
 * subscriptions and queue QoS 1 messages while their client is away, and
 * hand them over right behind CONNACK (after RC), as a broker does.
 * Subscriptions are not checked against a policy here (the real brokers'
 * tests do that).
 */
import { constantTimeEqual } from '../../firmware/core/bytes.js';
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import type { StockLink, StockLinkOptions } from '../../firmware/app/stock-connector.js';
import { DeliverySender, GROUP_READER, GROUP_WRITER, MSG_GKREQ, deriveKeyServiceKey, type GroupGrant } from '../../firmware/secure/group.js';
import { deriveDeviceKeys, resumeTag } from '../../firmware/secure/key-schedule.js';
import { buildResume, buildResumeBody, toTextForm } from '../../firmware/secure/messages.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { bootPassword, bootUsername, downTopic, idOfUpTopic } from '../../firmware/secure/stock.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';

export interface StandInGroup {
  filter: string;
  writers: string[];
  readers: string[];
}

/** MQTT topic filter match (+, #). */
function matches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

interface Installed {
  sid: Uint8Array;
  counter: number;
  text: string;
  used: boolean;
  rc?: Uint8Array;
}

export class StockStandIn {
  readonly tickets = new MemoryTicketStore();
  private readonly hs: ServerHandshake;
  private readonly groupKeys = new Map<string, Uint8Array>();
  private nextSeq = 0;
  /** Installed token per principal (§15.3). */
  readonly installed = new Map<string, Installed>();
  /** Persistent sessions: subscriptions and QoS 1 messages queued while away. */
  private readonly sessions = new Map<string, { filters: Set<string>; queue: { topic: string; payload: Uint8Array }[] }>();
  private readonly links = new Map<string, StockLinkOptions>();
  /** Every payload published, as it travelled. */
  readonly wire: Uint8Array[] = [];
  refusedLogins = 0;
  /** PUBACKs to lose on purpose (a Wi-Fi drop after the broker took the message): the connection dies instead. */
  dropPubacks = 0;

  constructor(
    private readonly suite: CryptoSuite,
    private readonly keys: Map<string, Uint8Array>,
    private readonly groups: StandInGroup[],
  ) {
    this.hs = new ServerHandshake({
      suite,
      clock: { now: () => 1_700_000_000_000 },
      ticketStore: this.tickets,
      lookupDevice: (id) => {
        const k = keys.get(id);
        return k ? { keys: deriveDeviceKeys(suite, k, id), status: 'active' } : undefined;
      },
    });
    for (const g of groups) this.groupKeys.set(g.filter, suite.randomBytes(32));
  }

  /** RESUME (§6.1) for a ticket and counter: the phase-2 password the key service installs. */
  async token(id: string, sid: Uint8Array, counter: number): Promise<Uint8Array> {
    const t = (await this.tickets.getTicket(id, sid))!;
    const body = buildResumeBody(sid, counter);
    return buildResume(body, resumeTag(this.suite, t.authKey, id, body));
  }

  /** A PUBLISH on `id`'s down topic, to whichever of its connections (phase-2 or bootstrap) is open. */
  private deliverDown(id: string, payload: Uint8Array): void {
    (this.links.get(id) ?? this.links.get(bootUsername(id)))?.onMessage(downTopic(id), payload);
  }

  private async keyService(id: string, payload: Uint8Array): Promise<void> {
    const suite = this.suite;
    if (payload[0] === 0x11) {
      const r = await this.hs.acceptConnect(id, id, payload);
      if (r.kind === 'counter-hint') return this.deliverDown(id, r.reply.payload);
      if (r.kind !== 'phase1') return;
      const { secrets } = r.pending.take();
      const c = r.pending.counter + 1;
      const sid = secrets.sid.slice();
      await this.tickets.putTicket({ devId: id, sid, suite: suite.id, authKey: secrets.ticketAuthKey.slice(), chainStart: c, chainIndex: c, chainKey: secrets.chainKey.slice(), expiresAt: 2_000_000_000_000 });
      this.installed.set(id, { sid, counter: c, text: toTextForm(await this.token(id, sid, c)), used: false });
      this.deliverDown(id, r.reply.payload);
    } else if (payload[0] === 0x14) {
      const cur = this.installed.get(id);
      if (cur?.used && cur.rc) this.deliverDown(id, cur.rc);
    } else if (payload[0] === MSG_GKREQ) {
      const sender = DeliverySender.answer(suite, deriveKeyServiceKey(suite, this.keys.get(id)!, id), id, payload);
      const grants: GroupGrant[] = [];
      for (const g of this.groups) {
        const flags = (g.writers.includes(id) ? GROUP_WRITER : 0) | (g.readers.includes(id) ? GROUP_READER : 0);
        if (flags) grants.push({ filter: g.filter, flags, epoch: 1, groupKey: this.groupKeys.get(g.filter)!, writers: g.writers });
      }
      // §14.4: sequence ranges are never handed out twice under one key (a rebooted writer gets a fresh one)
      const seqBase = this.nextSeq;
      this.nextSeq += 64;
      this.deliverDown(id, sender.seal({ seqBase, seqLimit: seqBase + 64, groups: grants }));
    }
  }

  /** Routes an application message to every session subscribed to it: live ones now, the others' queues. */
  private route(topic: string, payload: Uint8Array): void {
    for (const [id, s] of this.sessions) {
      if (![...s.filters].some((f) => matches(f, topic))) continue;
      const live = this.links.get(id);
      if (live) live.onMessage(topic, payload.slice());
      else s.queue.push({ topic, payload: payload.slice() });
    }
  }

  /** Publishes as a party outside the devices (an app's raw client, an attacker with broker access). */
  inject(topic: string, payload: Uint8Array): void {
    this.wire.push(payload.slice());
    this.route(topic, payload);
  }

  readonly open = async (o: StockLinkOptions): Promise<StockLink> => {
    const isBoot = o.username.startsWith('boot@');
    const id = isBoot ? o.username.slice(5) : o.username;
    const pw = utf8Decode(o.password);
    if (o.clientId !== o.username) throw Object.assign(new Error('client id'), { returnCode: 5 });
    if (isBoot) {
      const k = deriveDeviceKeys(this.suite, this.keys.get(id)!, id);
      if (pw !== bootPassword(this.suite, k.authKey, id)) throw Object.assign(new Error('bad boot'), { returnCode: 5 });
    } else {
      const cur = this.installed.get(id);
      if (!cur || cur.used || !constantTimeEqual(utf8Encode(pw), utf8Encode(cur.text))) {
        this.refusedLogins++;
        throw Object.assign(new Error('bad password'), { returnCode: 5 });
      }
    }
    const key = isBoot ? o.username : id;
    if (!isBoot && o.cleanSession) this.sessions.delete(id);
    const session = isBoot ? undefined : this.sessions.get(id);
    const present = !!session;
    this.links.set(key, o);
    o.onConnack();
    if (!isBoot) {
      // the connect is seen (broker log): §6.2 on the installed token, RC to the session
      const cur = this.installed.get(id)!;
      const r = await this.hs.acceptConnect(id, id, await this.token(id, cur.sid, cur.counter));
      if (r.kind === 'phase2') {
        r.session.close();
        cur.used = true;
        cur.rc = r.reply.payload;
        if (present) o.onMessage(downTopic(id), r.reply.payload);
      }
      // what the session queued while the client was away follows
      if (session) for (const m of session.queue.splice(0)) o.onMessage(m.topic, m.payload);
    }
    let open = true;
    const closed = async () => {
      if (!open) return;
      open = false;
      if (this.links.get(key) === o) this.links.delete(key);
      const cur = this.installed.get(id);
      // the disconnect is seen: the next token becomes the password
      if (!isBoot && cur?.used) {
        const t = (await this.tickets.getTicket(id, cur.sid))!;
        this.installed.set(id, { sid: cur.sid, counter: t.chainIndex, text: toTextForm(await this.token(id, cur.sid, t.chainIndex)), used: false });
      }
    };
    return {
      sessionPresent: present,
      subscribe: async (filter) => {
        if (!open) throw new Error('closed');
        if (!isBoot) {
          const s = this.sessions.get(id) ?? { filters: new Set<string>(), queue: [] };
          s.filters.add(filter);
          this.sessions.set(id, s);
        }
        return [1];
      },
      publish: async (topic, payload, qos) => {
        if (!open) throw Object.assign(new Error('closed'), { code: 'CONNECTION_CLOSED' });
        this.wire.push(payload.slice());
        const upId = idOfUpTopic(topic);
        if (upId !== undefined) {
          if (upId === id) await this.keyService(id, payload);
          return;
        }
        this.route(topic, payload);
        if (qos === 1 && this.dropPubacks > 0) {
          // the broker has the message; its PUBACK is lost with the connection
          this.dropPubacks--;
          await closed();
          o.onClose();
          throw Object.assign(new Error('connection lost before PUBACK'), { code: 'CONNECTION_CLOSED' });
        }
      },
      close: closed,
    };
  };
}
