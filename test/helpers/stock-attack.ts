/**
 * What the stock-broker attack tests (test/stock/) share: the logins a
 * device made and how the broker answered them, tokens an attacker can make
 * from what it saw on the wire, and what the genuine device would send next.
 */
import type { MqttClient, IClientOptions } from 'mqtt';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { resumeTag } from '../../firmware/secure/key-schedule.js';
import { buildResume, buildResumeBody, fromTextForm, parseResume, toTextForm } from '../../firmware/secure/messages.js';
import type { TicketStore } from '../../firmware/secure/ticket-store.js';
import type { StockDevice } from '../../host-sim/stock-device.js';

export interface Login {
  username: string;
  password: string;
  /** CONNACK return code (0 accepted), -1 while unanswered or closed before CONNACK. */
  code: number;
}

/** Records every login the device makes (user name, password as sent, the broker's answer). */
export function recordLogins(d: StockDevice): Login[] {
  const logins: Login[] = [];
  const holder = d as unknown as { socket(o: IClientOptions): MqttClient };
  const socket = holder.socket.bind(d);
  holder.socket = (o) => {
    const l: Login = { username: String(o.username), password: String(o.password), code: -1 };
    logins.push(l);
    const c = socket(o);
    c.once('connect', () => (l.code = 0));
    c.once('error', (e: Error & { code?: unknown }) => {
      if (l.code === -1 && typeof e.code === 'number') l.code = e.code;
    });
    return c;
  };
  return logins;
}

/** The MQTT packets of one stage of the last connect() (phase1, phase2) that were CONNECTs. */
export function connects(packets: string[]): number {
  return packets.filter((p) => p === 'connect').length;
}

/**
 * A token an attacker makes from a token it saw (tokens are public once
 * used): same ticket, the next counter, a tag under a key it knows (all
 * zero), since it has no K_tok.
 */
export function forgeNext(suite: CryptoSuite, id: string, seen: string, key = new Uint8Array(32)): string {
  const t = parseResume(fromTextForm(seen));
  const body = buildResumeBody(t.sid, t.counter + 1);
  return toTextForm(buildResume(body, resumeTag(suite, key, id, body)));
}

/** The token the genuine device sends next after `seen` (made here from the key service's ticket). */
export async function genuineNext(suite: CryptoSuite, tickets: TicketStore, id: string, seen: string): Promise<string> {
  const t = parseResume(fromTextForm(seen));
  const ticket = await tickets.getTicket(id, t.sid);
  if (!ticket) throw new Error(`no ticket for ${id}`);
  const body = buildResumeBody(t.sid, t.counter + 1);
  const token = toTextForm(buildResume(body, resumeTag(suite, ticket.authKey, id, body)));
  ticket.authKey.fill(0);
  ticket.chainKey.fill(0);
  return token;
}
