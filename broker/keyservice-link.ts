/**
 * The broker's side of the key service link (broker/keyservice/link.ts,
 * docs/protocol.md §14.12).
 *
 * - `memberPort`: a GKDEL for principal `id` goes to the connection that
 *   holds `id`'s live session now, on `$mqsec/gk`, and nowhere else.
 * - `ExternalKeyService`: the KeyServicePort of a key service running as its
 *   own process. It is the client logged in as an account of the reserved
 *   role `keyservice` that has said HELLO on `$mqsec/ks/out`; frames for it
 *   are published to that one client on `$mqsec/ks/in`. While no key service
 *   is linked, the latest GKREQ of each member waits (one per member) and is
 *   handed over when one links. A key service with a new instance id (a
 *   restarted process) holds none of the delivery answers of the previous
 *   one, so it could not push a re-key to the members those answered: their
 *   connections are closed, and they reconnect and ask again (§14.3).
 */
import type { Client } from 'aedes';
import { toHex } from '../firmware/core/bytes.js';
import { isMqsecError } from '../firmware/core/errors.js';
import { GK_TOPIC } from '../firmware/secure/group.js';
import type { BrokerContext } from './context.js';
import { audit } from './context.js';
import { KS_IN_TOPIC, MAX_POLICY_BYTES, decodeFrame, encodeFrame, type KeyServicePort, type LinkFrame, type MemberPort, type PolicySnapshot } from './keyservice/link.js';

export function createMemberPort(ctx: Pick<BrokerContext, 'liveDevices' | 'metrics'>): MemberPort {
  return {
    deliver(id, gkdel) {
      const client = ctx.liveDevices.get(id);
      client?.publish({ cmd: 'publish', topic: GK_TOPIC, payload: Buffer.from(gkdel), qos: 0, retain: false, dup: false }, () => {});
    },
  };
}

/** Most GKREQs kept while no key service is linked (one per member; the oldest dropped beyond). */
const MAX_WAITING = 100_000;

export class ExternalKeyService implements KeyServicePort {
  private client?: Client;
  private instance?: string;
  private policySnapshot?: PolicySnapshot;
  private readonly waiting = new Map<string, Uint8Array>();
  /** Members whose GKREQ went to which key service instance (their delivery answer lives there). */
  private readonly askedOf = new Map<string, string>();

  constructor(private readonly ctx: BrokerContext, private readonly members: MemberPort) {}

  get linked(): boolean {
    return this.client !== undefined;
  }

  request(id: string, gkreq: Uint8Array): void {
    if (!this.client || !this.instance) {
      this.waiting.delete(id);
      if (this.waiting.size >= MAX_WAITING) this.waiting.delete(this.waiting.keys().next().value!);
      this.waiting.set(id, gkreq);
      return;
    }
    this.askedOf.set(id, this.instance);
    this.send({ type: 'request', id, payload: gkreq });
  }

  left(id: string): void {
    this.waiting.delete(id);
    this.askedOf.delete(id);
    if (this.client) this.send({ type: 'left', id });
  }

  policy(p: PolicySnapshot): void {
    this.policySnapshot = p;
    if (this.client) this.send({ type: 'policy', policy: p });
  }

  rotate(filter: string, id?: number): void {
    if (this.client) this.send({ type: 'rotate', filter, id });
  }

  /** A frame the key service's account published on `$mqsec/ks/out`. Throws on a bad frame (the caller closes the client). */
  onFrame(client: Client, payload: Uint8Array): void {
    const f = decodeFrame(payload);
    if (f.type === 'hello') return this.hello(client, toHex(f.instance));
    if (client !== this.client) throw new Error('frame before HELLO');
    if (f.type !== 'deliver') throw new Error(`unexpected link frame ${f.type}`);
    this.members.deliver(f.id, f.payload);
  }

  /** The key service's client went away. */
  onClose(client: Client): void {
    if (client !== this.client) return;
    this.client = undefined;
    this.ctx.log.warn('key service unlinked: key requests wait until it is back');
    this.ctx.metrics.keyServiceLinked.set(0);
  }

  private hello(client: Client, instance: string): void {
    // the policy frame grows with the fleet: the link is not held to a subscriber's outgoing bound
    (client.conn as unknown as { raiseOutgoingBound?(n: number): void }).raiseOutgoingBound?.(MAX_POLICY_BYTES + 1024 * 1024);
    const previous = this.client;
    this.client = client;
    if (previous && previous !== client) previous.close();
    const restarted = this.instance !== undefined && this.instance !== instance;
    this.instance = instance;
    this.ctx.log.info({ instance, restarted }, 'key service linked');
    this.ctx.metrics.keyServiceLinked.set(1);
    if (this.policySnapshot) this.send({ type: 'policy', policy: this.policySnapshot });
    // members answered by an earlier instance: that answer (and its push channel) is gone
    for (const [id, asked] of [...this.askedOf]) {
      if (asked === instance) continue;
      this.askedOf.delete(id);
      const member = this.ctx.liveDevices.get(id);
      if (member) {
        audit(this.ctx, 'session.rekey', id, 'key service restarted: reconnect for new group keys', null);
        member.close();
      }
    }
    for (const [id, gkreq] of [...this.waiting]) {
      this.waiting.delete(id);
      if (this.ctx.liveDevices.has(id)) this.request(id, gkreq);
    }
  }

  private send(f: LinkFrame): void {
    const client = this.client;
    if (!client) return;
    const payload = encodeFrame(f);
    client.publish({ cmd: 'publish', topic: KS_IN_TOPIC, payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), qos: 0, retain: false, dup: false }, (err?: Error) => {
      if (err) this.ctx.log.debug({ err }, 'key service link write failed');
    });
  }
}

export function isLinkError(e: unknown): string {
  return isMqsecError(e) ? e.code : e instanceof Error ? e.message : String(e);
}
