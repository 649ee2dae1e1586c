/**
 * Aedes `authenticate`: decides who a connection is.
 *
 * - An account name as username: ordinary password login for backend apps
 *   (scrypt, constant time). Such a login may not use a registered device id
 *   as its client id (it would kick the device off).
 * - Anything else goes to the mqsec ServerHandshake (firmware/secure):
 *   phase 2 (resume token) yields a session at once; phase 1 (KX1) yields a
 *   *pending* session that must finish with KX3 (see authorize-publish).
 *   A registered device without an mqsec password is refused (no downgrade).
 *
 * Client-id takeover. Aedes 1.2 registers a client after `authenticate`
 * succeeds and at that point closes any live client with the same id
 * (aedes.js registerClient, [MQTT-3.1.4-2]). A refused CONNECT therefore never
 * disturbs the live device, and a phase-2 login replaces it only after the
 * resume token verified. A phase-1 login is only half-authenticated when
 * `authenticate` returns, so it is registered under a temporary id
 * (`$pending:<devId>:<n>`): the genuine device keeps its session, and the
 * newcomer takes the real id (closing the old session) only once KX3 verified.
 */
import type { AuthenticateError, AuthenticateHandler, Client } from 'aedes';
import { isMqsecError, type MqsecError } from '../../firmware/core/errors.js';
import { parsePassword } from '../../firmware/secure/messages.js';
import type { BrokerContext, ClientState } from '../context.js';
import { audit, dropLiveDevice, forgetStaleGrace, noteGraceKey, releasePendingSlot, remoteOf } from '../context.js';

/** MQTT 3.1.1 CONNACK return codes. */
const RC_IDENTIFIER_REJECTED = 2;
const RC_SERVER_UNAVAILABLE = 3;
const RC_BAD_CREDENTIALS = 4;
const RC_NOT_AUTHORIZED = 5;

/** A refused CONNECT, with the class it is counted under in mqsec_login_refusals_total. */
type Refusal = AuthenticateError & { refusalClass: string };

function refusal(returnCode: number, message: string, refusalClass: string): Refusal {
  const e = new Error(message) as Refusal;
  e.returnCode = returnCode;
  e.refusalClass = refusalClass;
  return e;
}

function returnCodeFor(e: MqsecError): number {
  switch (e.code) {
    case 'RATE_LIMITED':
    case 'STORAGE':
    case 'INTERNAL':
      return RC_SERVER_UNAVAILABLE;
    case 'NOT_AUTHORIZED':
    case 'REVOKED':
    case 'DOWNGRADE':
      return RC_NOT_AUTHORIZED;
    default:
      return RC_BAD_CREDENTIALS;
  }
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
      (err: Refusal) => {
        ctx.metrics.refusals.inc({ class: err.refusalClass ?? 'INTERNAL' });
        callback(err, false);
      },
    );
  };
}

async function authenticate(
  ctx: BrokerContext,
  client: Client,
  username: string | undefined,
  password: Buffer | undefined,
): Promise<ClientState> {
  const remote = remoteOf(client);
  const clientId = client.id;
  if (!ctx.authByAddress.take(remote)) {
    ctx.metrics.drops.inc({ reason: 'auth-rate' });
    throw refusal(RC_SERVER_UNAVAILABLE, 'too many login attempts', 'RATE_LIMITED');
  }

  if (username !== undefined && ctx.registry.getAccount(username)) {
    return authenticateAccount(ctx, clientId, username, password, remote);
  }

  // Rate-limit phase 1 per source address before the handshake does any
  // work. (Per device id it is limited only after the MAC verified, so
  // forged KX1 floods cannot lock a genuine device out.)
  let phase: 1 | 2 | undefined;
  try {
    phase = parsePassword(password).type === 'kx1' ? 1 : 2;
  } catch {
    phase = undefined; // the handshake reports the precise error
  }
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
  const before = clientId ? ctx.registry.getDevice(clientId) : undefined;
  if (before) {
    // Grace keys of a revoked or re-keyed device must not become this session's
    // previous epoch (the poll may not have run yet); a session made now is under
    // `before`'s key (a change in between is caught below or by the poll).
    forgetStaleGrace(ctx, clientId, before);
    if (before.status === 'active') noteGraceKey(ctx, clientId, before);
  }
  let result;
  try {
    result = await ctx.handshake.acceptConnect(clientId, username, password);
  } catch (e) {
    const code = isMqsecError(e) ? e.code : 'INTERNAL';
    ctx.metrics.auth.inc({ kind: phase === 1 ? 'phase1' : phase === 2 ? 'phase2' : 'mqsec', result: 'fail' });
    audit(ctx, 'auth.fail', clientId || username || null, code, remote);
    throw refusal(isMqsecError(e) ? returnCodeFor(e) : RC_SERVER_UNAVAILABLE, code, code);
  }

  if (result.kind === 'not-mqsec') {
    // An unknown account name costs the same scrypt as a known one, so the
    // refusal time does not reveal which names exist.
    if (username !== undefined) {
      if (!ctx.passwordByAddress.take(remote)) {
        ctx.metrics.drops.inc({ reason: 'password-rate' });
        ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
        throw refusal(RC_SERVER_UNAVAILABLE, 'too many password logins', 'RATE_LIMITED');
      }
      await ctx.registry.verifyAccount(username, password ? password.toString('utf8') : '');
    }
    ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
    audit(ctx, 'auth.fail', username ?? clientId ?? null, 'unknown account', remote);
    throw refusal(RC_BAD_CREDENTIALS, 'bad user name or password', 'BAD_PASSWORD');
  }

  const devId = result.kind === 'phase2' ? result.session.devId : clientId;
  const device = ctx.registry.getDevice(devId);
  if (!device || device.status !== 'active' || devId !== clientId || device.keyVersion !== before?.keyVersion) {
    if (result.kind === 'phase2') {
      ctx.registry.deleteTicketRow(devId, result.session.sidHex);
      result.session.close();
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
    return { kind: 'hint', devId, keyVersion: device.keyVersion, reply: result.reply, remote };
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
  return { kind: 'pending', devId, keyVersion: before!.keyVersion, pending: result.pending, reply: result.reply, timer, remote };
}

async function authenticateAccount(
  ctx: BrokerContext,
  clientId: string,
  name: string,
  password: Buffer | undefined,
  remote: string,
): Promise<ClientState> {
  if (!ctx.passwordByAddress.take(remote)) {
    ctx.metrics.drops.inc({ reason: 'password-rate' });
    ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
    throw refusal(RC_SERVER_UNAVAILABLE, 'too many password logins', 'RATE_LIMITED');
  }
  // `$` ids are the broker's own (pending phase-1 sessions use `$pending:...`)
  if (clientId.startsWith('$') || ctx.registry.getDevice(clientId)) {
    ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
    audit(ctx, 'auth.fail', name, `account used reserved or device client id ${clientId.slice(0, 32)}`, remote);
    throw refusal(RC_IDENTIFIER_REJECTED, 'client id belongs to a device or is reserved', 'RESERVED_CLIENT_ID');
  }
  const account = await ctx.registry.verifyAccount(name, password ? password.toString('utf8') : '');
  if (!account) {
    ctx.metrics.auth.inc({ kind: 'account', result: 'fail' });
    audit(ctx, 'auth.fail', name, 'bad password or disabled', remote);
    throw refusal(RC_BAD_CREDENTIALS, 'bad user name or password', 'BAD_PASSWORD');
  }
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
  }
}
