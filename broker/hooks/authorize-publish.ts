/**
 * Aedes `authorizePublish`: every PUBLISH from a client (and its will).
 *
 * - A pending phase-1 client may publish exactly one thing: KX3 on the
 *   protocol topic. When it verifies, the client becomes the device's live
 *   session (taking over the device id, see authenticate.ts); anything else
 *   closes the connection.
 * - A device's payload is an mqsec envelope: it is opened here (AEAD, topic
 *   binding, replay window). The plaintext travels inside the broker and is
 *   re-sealed per subscriber in authorize-forward.ts.
 * - Refused messages (policy, bad envelope, replay) are dropped and audited
 *   but still acknowledged, as Mosquitto does for ACL denials: an MQTT 3.1.1
 *   client has no way to learn of a refusal, and a QoS 1 message that is
 *   never acknowledged would be retried forever. A drop is done by moving the
 *   packet to a reserved sink topic that authorize-forward never delivers.
 * - A retained message beyond the retained limits (docs/operations.md,
 *   Limits) is not stored but still routed, as a plain message, to the
 *   current subscribers: see `admitRetained`.
 */
import type { AuthorizePublishHandler, Client } from 'aedes';
import { setAfterRouted } from '../cluster/ack-after-route.js';
import type { IPublishPacket as PublishPacket } from 'mqtt-packet';
import { isMqsecError } from '../../firmware/core/errors.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { GK_TOPIC } from '../../firmware/secure/group.js';
import { parseEnvelope } from '../../firmware/secure/messages.js';
import { KEYSERVICE_ROLE, KS_OUT_TOPIC, MAX_GK_MESSAGE } from '../keyservice/link.js';
import { canPublish, type Principal } from '../policy/policy.js';
import type { BrokerContext, ClientState } from '../context.js';
import { aedesClients, audit, keyIdentity, principalOf, releasePendingSlot, sameDeviceKey, setLiveDevice } from '../context.js';

export const DROP_TOPIC = '$mqsec/dropped';

function willOf(client: Client): unknown {
  return (client as unknown as { will?: unknown }).will;
}

function payloadBytes(packet: PublishPacket): Uint8Array {
  const p = packet.payload;
  return typeof p === 'string' ? new TextEncoder().encode(p) : new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
}

/**
 * Retained-message limits: a retained PUBLISH that would take its publisher
 * (account or device) or the broker past a count or bytes limit is not stored;
 * the topic keeps the message it had retained before, if any. The message
 * itself is still routed to the current subscribers, without retain: it is a
 * valid message, only its storage is refused. MQTT 3.1.1 has no negative
 * PUBACK, so the publisher is told nothing (its QoS 1 PUBACK comes as usual);
 * the refusal is audited (`publish.retained-refused`, sharing the audit budget)
 * and counted (`mqsec_drops_total{reason="retained-limit"}`). An empty payload
 * (a clear, MQTT 3.1.1 §3.3.1.3) is never refused and frees the budget.
 */
function admitRetained(ctx: BrokerContext, packet: PublishPacket, owner: string, subject: string, remote: string): void {
  if (!packet.retain) return;
  const size = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.byteLength;
  const refusal = ctx.retained.check(owner, packet.topic, size);
  if (refusal) {
    packet.retain = false;
    ctx.metrics.drops.inc({ reason: 'retained-limit' });
    audit(ctx, 'publish.retained-refused', subject, `${refusal}: ${packet.topic.slice(0, 128)}`, remote);
    return;
  }
  ctx.retained.store(owner, packet.topic, size);
}

function drop(ctx: BrokerContext, packet: PublishPacket, reason: string, subject: string, remote: string): void {
  ctx.metrics.drops.inc({ reason });
  audit(ctx, 'publish.drop', subject, `${reason}: ${packet.topic.slice(0, 128)}`, remote);
  packet.topic = DROP_TOPIC;
  packet.retain = false;
  packet.payload = Buffer.alloc(0);
}

export function createAuthorizePublish(ctx: BrokerContext): AuthorizePublishHandler {
  const authorizePublish: AuthorizePublishHandler = (client, packet, callback) => {
    if (!client) return callback(new Error('no stored wills are published')); // obsolete LWT of a dead broker
    const state = ctx.states.get(client);
    if (!state) return callback(new Error('not authenticated'));

    if (state.kind === 'hint') return callback(new Error('counter hint: no session')); // §5.5: closed after the hint
    if (state.kind === 'pending') {
      if (state.completing) {
        // same read batch as KX3: wait for it, then decide with the new state
        const again = () => authorizePublish(client, packet, callback);
        state.completing.then(again, again);
        return;
      }
      if (packet.topic !== KX_TOPIC || packet === willOf(client)) {
        audit(ctx, 'auth.fail', state.devId, 'publish before phase 1 completed', state.remote);
        return callback(new Error('phase 1 not complete'));
      }
      state.completing = completePhase1(ctx, client, state, payloadBytes(packet));
      state.completing.then(
        () => {
          packet.topic = DROP_TOPIC; // KX3 is consumed here, never routed
          packet.payload = Buffer.alloc(0);
          callback(null);
        },
        (e: Error) => callback(e),
      );
      return;
    }

    const principal = principalOf(ctx, state)!;
    const isWill = packet === willOf(client);
    if (state.kind === 'device') {
      if (isWill) return callback(new Error('a device will cannot be sealed')); // not published
      if (packet.topic === GK_TOPIC) {
        answerKeyRequest(ctx, state, payloadBytes(packet));
        packet.topic = DROP_TOPIC; // consumed here, never routed
        packet.retain = false;
        packet.payload = Buffer.alloc(0);
        return callback(null);
      }
      if (packet.topic === KX_TOPIC) {
        drop(ctx, packet, 'protocol-topic', state.devId, state.remote);
        return callback(null);
      }
      if (!canPublish(principal, packet.topic)) {
        drop(ctx, packet, 'not-authorized', state.devId, state.remote);
        return callback(null);
      }
      if (ctx.groups.groupOf(packet.topic) !== undefined) {
        // §14.5 end-to-end topic: check the channel MAC, forward the group envelope untouched (no AEAD here)
        let genv: Uint8Array;
        try {
          genv = state.session.unwrapChannel(packet.topic, payloadBytes(packet));
        } catch (e) {
          const code = isMqsecError(e) ? e.code.toLowerCase() : 'channel-failed';
          ctx.metrics.drops.inc({ reason: `channel-${code}` });
          audit(ctx, 'publish.drop', state.devId, `channel ${code}: ${packet.topic.slice(0, 128)}`, state.remote);
          return callback(new Error(`channel MAC refused (${code}): connection closed`));
        }
        packet.payload = Buffer.from(genv.buffer, genv.byteOffset, genv.byteLength);
        admitRetained(ctx, packet, `device:${state.devId}`, state.devId, state.remote);
        ctx.metrics.messages.inc();
        return callback(null);
      }
      let plaintext: Uint8Array;
      const envelope = payloadBytes(packet);
      try {
        plaintext = state.session.open(packet.topic, envelope);
      } catch (e) {
        if (isMqsecError(e, 'UNKNOWN_SESSION') && (packet.qos ?? 0) > 0) {
          // An envelope of an epoch this broker no longer holds keys for: a QoS 1 message
          // resent as is after a broker restart (grace keys live in memory). Acknowledging
          // and dropping it would lose it; closing without PUBACK makes the device reconnect,
          // after which that epoch is too old to resend as is and the device re-seals it
          // under the new keys (docs/protocol.md, QoS 1 across a key change). QoS 0 is
          // never resent, so closing would not help it: it is dropped like other failures.
          ctx.metrics.drops.inc({ reason: 'stale-epoch' });
          audit(ctx, 'publish.stale-epoch', state.devId, packet.topic.slice(0, 128), state.remote);
          return callback(new Error('envelope of an unknown epoch: reconnect and re-seal'));
        }
        drop(ctx, packet, isMqsecError(e) ? e.code.toLowerCase() : 'open-failed', state.devId, state.remote);
        return callback(null);
      }
      // The replay window moved: a node this device moves to must know (cluster/shared-grace.ts),
      // but only once the message is routed (cluster/ack-after-route.ts runs this then). Written
      // before, a node killed in between leaves a shared window that makes the next node refuse
      // the device's unchanged resend as a copy, with a PUBACK: acknowledged and routed nowhere.
      if (ctx.cluster) {
        const grace = ctx.cluster.grace;
        const devId = state.devId;
        const keyId = keyIdentity({ createdAt: state.keyCreatedAt, keyVersion: state.keyVersion });
        const session = state.session;
        // an envelope of the current receive state is left out of the shared window until routed
        const { epoch, seq } = parseEnvelope(envelope);
        const rx = session.rx.epoch === epoch ? session.rx : undefined;
        if (rx) grace.opened(rx, seq);
        setAfterRouted(packet, () => {
          if (rx) grace.routed(rx, seq);
          grace.note(devId, keyId, session);
        });
      }
      packet.payload = Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength);
      admitRetained(ctx, packet, `device:${state.devId}`, state.devId, state.remote);
      ctx.metrics.messages.inc();
      return callback(null);
    }

    // plain account
    if (state.roleName === KEYSERVICE_ROLE) return keyServiceFrame(ctx, client, state, packet, isWill, callback);
    if (isWill) {
      // A will is published when the connection ends, typically just after a registry change
      // disabled or removed the account and closed its session: that account may publish nothing.
      ctx.registry.getAccount(state.name).then(
        (account) => {
          if (account?.status === 'active') return authorizeAccountPublish(ctx, state, principal, packet, true, callback);
          audit(ctx, 'publish.drop', state.name, `will of a disabled or removed account: ${packet.topic.slice(0, 128)}`, state.remote);
          callback(new Error('account no longer active'));
        },
        () => callback(new Error('registry unavailable: will not published')),
      );
      return;
    }
    authorizeAccountPublish(ctx, state, principal, packet, false, callback);
  };
  return authorizePublish;
}

function authorizeAccountPublish(
  ctx: BrokerContext,
  state: Extract<ClientState, { kind: 'account' }>,
  principal: Principal,
  packet: PublishPacket,
  isWill: boolean,
  callback: (error?: Error | null) => void,
): void {
  if (ctx.groups.groupOf(packet.topic) !== undefined) {
    // an account holds no group key: whatever it sent, no reader could open it (§14.1)
    if (isWill) return callback(new Error('will on an end-to-end topic'));
    drop(ctx, packet, 'e2e-topic', state.name, state.remote);
    return callback(null);
  }
  if (!canPublish(principal, packet.topic)) {
    if (isWill) return callback(new Error('will not authorized'));
    drop(ctx, packet, 'not-authorized', state.name, state.remote);
    return callback(null);
  }
  admitRetained(ctx, packet, `account:${state.name}`, state.name, state.remote);
  ctx.metrics.messages.inc();
  callback(null);
}

async function completePhase1(
  ctx: BrokerContext,
  client: Client,
  state: Extract<ClientState, { kind: 'pending' }>,
  kx3: Uint8Array,
): Promise<void> {
  let session;
  try {
    session = await ctx.handshake.completePhase1(state.pending, kx3);
  } catch (e) {
    const code = isMqsecError(e) ? e.code : 'INTERNAL';
    ctx.metrics.auth.inc({ kind: 'phase1', result: 'fail' });
    audit(ctx, 'auth.fail', state.devId, `KX3 ${code}`, state.remote);
    ctx.states.delete(client);
    releasePending(ctx, state);
    throw new Error(`phase 1 failed: ${code}`);
  }
  releasePending(ctx, state);
  // Revoked or re-keyed while KX3 was in flight: the ticket just stored was
  // made under the old key and must not outlive it. (A change committed after
  // this check deletes the ticket itself.)
  let device;
  try {
    device = await ctx.registry.getDevice(state.devId);
  } catch (e) {
    // cannot tell whether the device is still allowed: no session (the ticket stays: it is the device's)
    session.close();
    ctx.states.delete(client);
    ctx.metrics.auth.inc({ kind: 'phase1', result: 'fail' });
    audit(ctx, 'auth.fail', state.devId, 'registry unavailable after KX3', state.remote);
    throw new Error(`phase 1 failed: ${(e as Error).message}`);
  }
  if (!device || !sameDeviceKey(device, state)) {
    session.close();
    await ctx.registry.deleteTicketRow(state.devId, session.sidHex).catch(() => {}); // best effort: revoke/rotate also delete it
    ctx.states.delete(client);
    ctx.metrics.auth.inc({ kind: 'phase1', result: 'fail' });
    audit(ctx, 'auth.fail', state.devId, 'revoked or rotated during phase 1', state.remote);
    throw new Error('phase 1 failed: device changed');
  }
  ctx.metrics.auth.inc({ kind: 'phase1', result: 'ok' }); // ticket stored: phase 1 is done even if the client left
  if (client.closed) {
    session.close();
    ctx.states.delete(client);
    return;
  }
  ctx.states.set(client, {
    kind: 'device',
    devId: state.devId,
    roleName: device.role,
    keyVersion: state.keyVersion,
    keyCreatedAt: state.keyCreatedAt,
    session,
    phase: 1,
    remote: state.remote,
  });
  await takeOverDeviceId(ctx, client, state.devId);
  ctx.log.debug({ devId: state.devId, remote: state.remote }, 'phase 1 ok');
}

function releasePending(ctx: BrokerContext, state: Extract<ClientState, { kind: 'pending' }>): void {
  releasePendingSlot(ctx, state);
}

/**
 * The fully authenticated newcomer takes the device id: the previous
 * session (if any) is closed first, then the client is re-keyed in Aedes'
 * client table under the real id. Mirrors Aedes' own registerClient
 * takeover, which we bypassed by registering under a temporary id.
 */
function takeOverDeviceId(ctx: BrokerContext, client: Client, devId: string): Promise<void> {
  const clients = aedesClients(ctx);
  const tempId = client.id;
  return new Promise((resolve) => {
    const finish = () => {
      if (client.closed) return resolve(); // left during the takeover: Aedes already unregistered it
      if (clients[tempId] === client) delete clients[tempId];
      client.id = devId;
      clients[devId] = client;
      setLiveDevice(ctx, devId, client);
      resolve();
    };
    const old = clients[devId];
    if (old && old !== client) old.close(finish);
    else finish();
  });
}

/**
 * §14.6: a member's GKREQ goes to the key service with the principal id of
 * the connection (the link, §14.12); the answer comes back through the
 * link's MemberPort, to this principal's current connection only.
 */
function answerKeyRequest(ctx: BrokerContext, state: Extract<ClientState, { kind: 'device' }>, request: Uint8Array): void {
  if (request.length > MAX_GK_MESSAGE) {
    ctx.metrics.drops.inc({ reason: 'gkreq-malformed' });
    audit(ctx, 'groupkey.refused', state.devId, 'MALFORMED', state.remote);
    return;
  }
  ctx.keyLink.request(state.devId, request.slice());
}

/**
 * The external key service's account (role `keyservice`): it publishes link
 * frames on `$mqsec/ks/out` and nothing else; a bad frame closes it. Without
 * `--keyservice external` such an account is refused anything.
 */
function keyServiceFrame(
  ctx: BrokerContext,
  client: Client,
  state: Extract<ClientState, { kind: 'account' }>,
  packet: PublishPacket,
  isWill: boolean,
  callback: (err?: Error | null) => void,
): void {
  const ext = ctx.externalKeyService;
  if (isWill || packet.topic !== KS_OUT_TOPIC || !ext) {
    audit(ctx, 'publish.drop', state.name, `key service account: ${packet.topic.slice(0, 128)}${ext ? '' : ' (no external key service configured)'}`, state.remote);
    return callback(new Error('key service account: link frames only'));
  }
  try {
    ext.onFrame(client, payloadBytes(packet));
  } catch (e) {
    audit(ctx, 'keyservice.refused', state.name, isMqsecError(e) ? e.code : String((e as Error).message ?? e), state.remote);
    return callback(new Error('bad key service link frame'));
  }
  packet.topic = DROP_TOPIC; // consumed here, never routed
  packet.retain = false;
  packet.payload = Buffer.alloc(0);
  callback(null);
}
