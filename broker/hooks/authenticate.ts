/**
 * Aedes `authenticate`: decides who a connection is.
 *
 * The credentials alone choose the path, never whether a name exists, so the
 * answer and the work done do not tell which device ids or account names are
 * registered (docs/protocol.md §10):
 *
 * - A password that is an mqsec message (KX1 or RESUME, §3) goes to the mqsec
 *   ServerHandshake (firmware/secure): phase 2 (resume token) yields a
 *   session at once; phase 1 (KX1) yields a *pending* session that must finish
 *   with KX3 (see authorize-publish). Unknown and revoked ids are looked up
 *   with a decoy key (server.ts), so they fail exactly like a wrong key: one
 *   HMAC, BAD_MAC, CONNACK 4.
 * - Any other password with a user name is an account login: one scrypt
 *   always (a dummy one for unknown names, device ids included: a registered
 *   device with a plain password is the §3 DOWNGRADE, refused with the same 4),
 *   and only once the password verified is the client id judged (CONNACK 2 if
 *   the account does not own it, see accountClientId). Over plain TCP such a
 *   login is accepted only from a local address (loopback unless configured)
 *   or when the operator allowed plain accounts; otherwise it is refused with
 *   5 before any password work: the TLS listener is the way in.
 * - No user name and no mqsec password: refused (4).
 *
 * Client-id takeover. Aedes 1.2 registers a client after `authenticate`
 * succeeds and at that point closes any live client with the same id
 * (aedes.js registerClient, [MQTT-3.1.4-2]). A refused CONNECT therefore never
 * disturbs the live client. Accounts may only use client ids they own, so one
 * account cannot evict (or, with a clean session, wipe the persistent session
 * of) another account's client. A phase-1 login is only half-authenticated
 * when `authenticate` returns, so it is registered under a temporary id
 * (`$pending:<devId>:<n>`): the genuine device keeps its session, and the
 * newcomer takes the real id (closing the old session) only once KX3 verified.
 */
import type { AuthenticateError, AuthenticateHandler, Client } from 'aedes';
import { randomBytes } from 'node:crypto';
import { isMqsecError } from '../../firmware/core/errors.js';
import { parsePassword } from '../../firmware/secure/messages.js';
import { connackCodeFor } from '../../firmware/secure/server.js';
import type { BrokerContext, ClientState } from '../context.js';
import { RegistryUnavailableError } from '../registry/store.js';
import { audit, dropLiveDevice, forgetStaleGrace, keyIdentity, noteGraceKey, releasePendingSlot, remoteOf, sameDeviceKey } from '../context.js';

/** MQTT 3.1.1 CONNACK return codes. */
const RC_IDENTIFIER_REJECTED = 2;
const RC_SERVER_UNAVAILABLE = 3;
const RC_BAD_CREDENTIALS = 4;
const RC_NOT_AUTHORIZED = 5;

/** A refused CONNECT, with the class it is counted under in mqsec_login_refusals_total (operator-facing, never on the wire). */
type Refusal = AuthenticateError & { refusalClass: string };

function refusal(returnCode: number, message: string, refusalClass: string): Refusal {
  const e = new Error(message) as Refusal;
  e.returnCode = returnCode;
  e.refusalClass = refusalClass;
  return e;
}

/**
 * A refusal as thrown; the registry unreachable (its backend down) becomes
 * CONNACK 3, server unavailable, so the client retries later.
 */
function asRefusal(e: unknown): Refusal {
  if (e instanceof RegistryUnavailableError) return refusal(RC_SERVER_UNAVAILABLE, 'server unavailable', 'UNAVAILABLE');
  return e as Refusal;
}

let pendingSerial = 0;

export function createAuthenticate(ctx: BrokerContext): AuthenticateHandler {
  return (client, username, password, callback) => {
    authenticate(ctx, client, username, password).then(
      (state) => {
        ctx.states.set(client, state);
        const conn = client.conn as unknown as { destroyed?: boolean; once(e: 'close', f: () => void): void };
        // the socket may have gone while we were verifying: release at once
        if (conn.destroyed || client.closed) forgetClient(ctx, client);
        else conn.once('close', () => forgetClient(ctx, client));
        callback(null, true);
      },
      (e: unknown) => {
        const err = asRefusal(e);
        if (err.refusalClass === 'UNAVAILABLE') ctx.log.warn({ err: e }, 'login refused: registry unavailable');
        ctx.metrics.refusals.inc({ class: err.refusalClass ?? 'INTERNAL' });
        callback(err, false);
      },
    );
  };
}

/** §3 on the credentials alone: is the password an mqsec message, and of which phase? */
function mqsecPhase(password: Buffer | undefined): 1 | 2 | undefined {
  try {
    return parsePassword(password).type === 'kx1' ? 1 : 2;
  } catch {
    return undefined;
  }
}

async function authenticate(
  ctx: BrokerContext,
  client: Client,
  username: string | undefined,
  password: Buffer | undefined,
): Promise<ClientState> {
  const remote = remoteOf(client);
  if (!ctx.authByAddress.take(remote)) {
    ctx.metrics.drops.inc({ reason: 'auth-rate' });
    throw refusal(RC_SERVER_UNAVAILABLE, 'too many login attempts', 'RATE_LIMITED');
  }
  // A cluster node without its shared state could neither route nor queue for this client
  // (nor hand its grace state on): refuse as "server unavailable", the client retries later.
  if (ctx.cluster && !ctx.cluster.state.available()) {
    ctx.metrics.drops.inc({ reason: 'cluster-unavailable' });
    throw refusal(RC_SERVER_UNAVAILABLE, 'cluster store unavailable', 'CLUSTER_UNAVAILABLE');
  }
  const phase = mqsecPhase(password);
  if (phase !== undefined) return authenticateDevice(ctx, client, username, password, phase, remote);
  if (username !== undefined) return authenticateAccount(ctx, client, username, password, remote);
  const clientId = client.id;
  ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
  const downgrade = (await ctx.registry.getDevice(clientId)) !== undefined;
  audit(ctx, 'auth.fail', clientId || null, downgrade ? 'DOWNGRADE (no mqsec password)' : 'no credentials', remote);
  throw refusal(RC_BAD_CREDENTIALS, 'bad user name or password', downgrade ? 'DOWNGRADE' : 'BAD_PASSWORD');
}

async function authenticateDevice(
  ctx: BrokerContext,
  client: Client,
  username: string | undefined,
  password: Buffer | undefined,
  phase: 1 | 2,
  remote: string,
): Promise<ClientState> {
  const clientId = client.id;
  // Rate-limit phase 1 per source address before the handshake does any
  // work. (Per device id it is limited only after the MAC verified, so
  // forged KX1 floods cannot lock a genuine device out.)
  if (phase === 1) {
    if (!ctx.phase1ByAddress.take(remote)) {
      ctx.metrics.drops.inc({ reason: 'phase1-rate' });
      ctx.metrics.auth.inc({ kind: 'phase1', result: 'fail' });
      throw refusal(RC_SERVER_UNAVAILABLE, 'phase-1 rate limit', 'RATE_LIMITED');
    }
    if (ctx.pendingCount.value >= ctx.limits.maxPending) {
      ctx.metrics.drops.inc({ reason: 'pending-cap' });
      ctx.metrics.auth.inc({ kind: 'phase1', result: 'fail' });
      throw refusal(RC_SERVER_UNAVAILABLE, 'too many pending sessions', 'PENDING_CAP');
    }
  }

  // Read before the handshake: if the device is revoked or re-keyed while the
  // handshake runs, the ticket it writes must not survive (checked below).
  const before = clientId ? await ctx.registry.getDevice(clientId) : undefined;
  if (before) {
    // Grace keys of a revoked or re-keyed device must not become this session's
    // previous epoch (the poll may not have run yet); a session made now is under
    // `before`'s key (a change in between is caught below or by the poll).
    forgetStaleGrace(ctx, clientId, before);
    if (before.status === 'active') {
      // Cluster: the device's last session may have been on another node (moved, or that
      // node died): take over its §8.5 grace state from the shared store. A device live on
      // this node has its latest state here already.
      if (ctx.cluster && !ctx.liveDevices.has(clientId)) await ctx.cluster.grace.adopt(ctx.handshake, clientId, keyIdentity(before));
      noteGraceKey(ctx, clientId, before);
    }
  }
  let result;
  try {
    result = await ctx.handshake.acceptConnect(clientId, username, password);
  } catch (e) {
    const code = isMqsecError(e) ? e.code : 'INTERNAL';
    ctx.metrics.auth.inc({ kind: `phase${phase}`, result: 'fail' });
    // the audit may say what the CONNACK must not: unknown or revoked id
    const cls = !before ? 'UNKNOWN_ID' : before.status !== 'active' ? 'REVOKED' : code;
    audit(ctx, 'auth.fail', clientId || username || null, cls === code ? code : `${code} (${cls})`, remote);
    throw refusal(connackCodeFor(e), code, cls);
  }
  if (result.kind === 'not-mqsec') {
    // only for a client id no device can have (empty or too long)
    ctx.metrics.auth.inc({ kind: `phase${phase}`, result: 'fail' });
    audit(ctx, 'auth.fail', username ?? null, 'mqsec password with an impossible client id', remote);
    throw refusal(RC_BAD_CREDENTIALS, 'bad user name or password', 'UNKNOWN_ID');
  }

  const devId = result.kind === 'phase2' ? result.session.devId : clientId;
  const device = await ctx.registry.getDevice(devId);
  if (!device || devId !== clientId || !before || !sameDeviceKey(device, { keyVersion: before.keyVersion, keyCreatedAt: before.createdAt })) {
    if (result.kind === 'phase2') {
      result.session.close();
      await ctx.registry.deleteTicketRow(devId, result.session.sidHex);
    } else if (result.kind === 'phase1') result.pending.discard();
    ctx.metrics.auth.inc({ kind: `phase${result.kind === 'phase2' ? 2 : 1}`, result: 'fail' });
    audit(ctx, 'auth.fail', devId, 'device inactive or client id mismatch', remote);
    throw refusal(RC_NOT_AUTHORIZED, 'not authorized', 'NOT_AUTHORIZED');
  }

  if (result.kind === 'phase2') {
    ctx.metrics.auth.inc({ kind: 'phase2', result: 'ok' });
    ctx.log.debug({ devId, remote }, 'phase 2 ok');
    return {
      kind: 'device',
      devId,
      roleName: device.role,
      keyVersion: device.keyVersion,
      keyCreatedAt: device.createdAt,
      session: result.session,
      phase: 2,
      remote,
      confirm: result.reply,
    };
  }

  if (result.kind === 'counter-hint') {
    // §5.5: a MAC-valid KX1 with a used counter (a device that lost its state, or a replay).
    // It gets the hint and a close, never a session, and must not displace the live device.
    ctx.metrics.auth.inc({ kind: 'phase1', result: 'fail' });
    ctx.metrics.drops.inc({ reason: 'counter-hint' });
    audit(ctx, 'auth.counter-hint', devId, 'KX1 counter already used: counter hint sent', remote);
    client.id = `$pending:${devId}:${++pendingSerial}`;
    return { kind: 'hint', devId, keyVersion: device.keyVersion, keyCreatedAt: device.createdAt, reply: result.reply, remote };
  }

  if (!ctx.phase1ByDevice.take(devId)) {
    result.pending.discard();
    ctx.metrics.drops.inc({ reason: 'phase1-rate' });
    ctx.metrics.auth.inc({ kind: 'phase1', result: 'fail' });
    audit(ctx, 'auth.fail', devId, 'RATE_LIMITED', remote);
    throw refusal(RC_SERVER_UNAVAILABLE, 'phase-1 rate limit', 'RATE_LIMITED');
  }
  // Half-authenticated: registered under a temporary id so it cannot
  // displace the live device (see the module comment).
  client.id = `$pending:${devId}:${++pendingSerial}`;
  ctx.pendingCount.value++;
  ctx.metrics.pending.set(ctx.pendingCount.value);
  const timer = setTimeout(() => {
    ctx.metrics.auth.inc({ kind: 'phase1', result: 'fail' });
    audit(ctx, 'auth.fail', devId, 'phase-1 timeout', remote);
    client.close();
  }, ctx.limits.phase1TimeoutMs);
  timer.unref();
  return { kind: 'pending', devId, keyVersion: before!.keyVersion, keyCreatedAt: before!.createdAt, pending: result.pending, reply: result.reply, timer, remote };
}

/** Is a password login acceptable on this connection (TLS, a local address, or plain accounts allowed)? */
function passwordTransportOk(ctx: BrokerContext, client: Client): boolean {
  const conn = client.conn as unknown as { encrypted?: boolean };
  return conn.encrypted === true || ctx.accounts.allowPlain || ctx.accounts.isLocal(remoteOf(client));
}

/**
 * The client id an account connects under, or undefined when the account does
 * not own the requested one. Rule (docs/operations.md): the account's name, or
 * `name/` followed by anything; ids starting with `$` are the broker's. With
 * `useUsernameAsClientId` (as Mosquitto's option of that name) the requested id
 * is ignored and the name is used. An empty client id (MQTT 3.1.1 §3.1.3.1)
 * gets `name/<random>`.
 */
function accountClientId(ctx: BrokerContext, client: Client, name: string): string | undefined {
  if (ctx.accounts.useUsernameAsClientId) return name;
  if (ctx.emptyClientIds.has(client)) return `${name}/${randomBytes(6).toString('hex')}`;
  const id = client.id;
  return id === name || id.startsWith(`${name}/`) ? id : undefined;
}

async function authenticateAccount(
  ctx: BrokerContext,
  client: Client,
  name: string,
  password: Buffer | undefined,
  remote: string,
): Promise<ClientState> {
  if (!passwordTransportOk(ctx, client)) {
    ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
    audit(ctx, 'auth.fail', name.slice(0, 64), 'password login over plain TCP from a non-local address (use TLS)', remote);
    throw refusal(RC_NOT_AUTHORIZED, 'password logins need TLS', 'PLAIN_TCP');
  }
  if (!ctx.passwordByAddress.take(remote)) {
    ctx.metrics.drops.inc({ reason: 'password-rate' });
    ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
    throw refusal(RC_SERVER_UNAVAILABLE, 'too many password logins', 'RATE_LIMITED');
  }
  // One scrypt whatever the name: unknown names (device ids included) cost the same dummy hash.
  ctx.metrics.passwordChecks.inc();
  const account = await ctx.registry.verifyAccount(name, password ? password.toString('utf8') : '');
  if (!account) {
    ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
    const downgrade = (await ctx.registry.getDevice(name)) !== undefined || (await ctx.registry.getDevice(client.id)) !== undefined;
    audit(ctx, 'auth.fail', name.slice(0, 64), downgrade ? 'DOWNGRADE (plain password for a device id)' : 'bad password or disabled', remote);
    throw refusal(RC_BAD_CREDENTIALS, 'bad user name or password', downgrade ? 'DOWNGRADE' : 'BAD_PASSWORD');
  }
  // Only now, with the password verified, is the client id judged: a refusal here tells
  // nothing to someone who does not know the password.
  const id = accountClientId(ctx, client, name);
  if (id === undefined || id.startsWith('$') || (await ctx.registry.getDevice(id))) {
    ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
    audit(ctx, 'auth.fail', name, `client id not owned by the account: ${client.id.slice(0, 64)}`, remote);
    throw refusal(RC_IDENTIFIER_REJECTED, 'client id not owned by this account', 'CLIENT_ID_NOT_OWNED');
  }
  client.id = id;
  ctx.metrics.auth.inc({ kind: 'account', result: 'ok' });
  return { kind: 'account', name, roleName: account.role, remote };
}

/** Connection gone: release pending slots and the device's live-session entry. */
export function forgetClient(ctx: BrokerContext, client: Client): void {
  const state = ctx.states.get(client);
  if (!state) return;
  ctx.states.delete(client);
  if (state.kind === 'pending') {
    state.pending.discard(); // wipes the phase-1 secrets unless KX3 already took them
    releasePendingSlot(ctx, state);
  } else if (state.kind === 'device') {
    state.session.close();
    dropLiveDevice(ctx, state.devId, client);
  } else if (state.kind === 'account') {
    ctx.externalKeyService?.onClose(client);
  }
}
