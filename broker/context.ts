/**
 * Shared state of one broker instance, handed to every hook. Per-client
 * security state lives in a WeakMap keyed by the Aedes client object, so it
 * dies with the client and never leaks into Aedes internals.
 */
import type { ClusterState } from './cluster/redis-state.js';
import type { SharedGrace } from './cluster/shared-grace.js';
import type { Aedes, Client } from 'aedes';
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { PendingPhase1, ServerHandshake, ServerSession } from '../firmware/secure/index.js';
import type { Principal, Role } from './policy/policy.js';
import type { Registry } from './registry/store.js';
import type { BrokerMetrics } from './metrics.js';
import type { RetainedBudget } from './limits/retained-budget.js';
import type { RateLimiter } from './limits/rate-limit.js';
import type { BrokerLimits } from './limits/config.js';
import type { KeyService } from './keyservice/key-service.js';
import type { KeyServicePort, PolicySnapshot } from './keyservice/link.js';
import { GroupDirectory, computeMembership } from './keyservice/membership.js';
import type { ExternalKeyService } from './keyservice-link.js';

export type ClientState =
  | {
      kind: 'pending';
      devId: string;
      pending: PendingPhase1;
      reply: { topic: string; payload: Uint8Array };
      keyVersion: number;
      /** With keyVersion, the identity of the device's key (see `sameDeviceKey`). */
      keyCreatedAt: number;
      timer: NodeJS.Timeout;
      /** Set while KX3 is being verified: later packets of the same read batch wait on it. */
      completing?: Promise<void>;
      /** Set once the pending slot and timer were given back (exactly once). */
      released?: boolean;
      remote: string;
    }
  | {
      kind: 'device';
      devId: string;
      roleName: string;
      keyVersion: number;
      keyCreatedAt: number;
      session: ServerSession;
      phase: 1 | 2;
      remote: string;
      /** Phase 2: the resume confirmation (docs/protocol.md §6.4), sent once right after CONNACK. */
      confirm?: { topic: string; payload: Uint8Array };
      /** The confirmation is on the wire (written ahead of a replayed session queue, or at clientReady). */
      confirmSent?: boolean;
    }
  /**
   * A KX1 with a valid MAC and a used counter (docs/protocol.md §5.5): the
   * connection gets the counter hint and is closed. Registered under a
   * temporary id, like a pending phase 1, so it never displaces the device.
   */
  | { kind: 'hint'; devId: string; keyVersion: number; keyCreatedAt: number; reply: { topic: string; payload: Uint8Array }; remote: string }
  | { kind: 'account'; name: string; roleName: string; remote: string };

export interface BrokerContext {
  aedes: Aedes;
  registry: Registry;
  handshake: ServerHandshake;
  /** Groups of end-to-end topics and their readers (docs/protocol.md §14.1), from the policy: what routing needs. */
  groups: GroupDirectory;
  /** The key service link (§14.12): the embedded agent, or the external key service's client. */
  keyLink: KeyServicePort;
  /** The embedded key service (absent when an external one is used): status displays and tests. */
  keyService?: KeyService;
  /** Set when the broker relies on an external key service (`--keyservice external`). */
  externalKeyService?: ExternalKeyService;
  log: Logger;
  metrics: BrokerMetrics;
  limits: BrokerLimits;
  /** Retained messages stored, per account or device and in total, against the retained limits. */
  retained: RetainedBudget;
  states: WeakMap<Client, ClientState>;
  /** devId -> the client holding the authenticated session for it (changed only through setLiveDevice / dropLiveDevice). */
  liveDevices: Map<string, Client>;
  /** 'device-online' (devId) and 'device-offline' (devId) as sessions start and end (the operator console follows them). */
  events: EventEmitter;
  /**
   * devId -> identity of the key (created-at and key version) under which the
   * handshake's remembered last session (the §8.5 grace keys) was made. A
   * revoked, re-keyed or removed (and maybe re-added) device's grace keys are
   * forgotten (`forgetStaleGrace`), so nothing sealed under them opens later.
   */
  graceKeys: Map<string, string>;
  pendingCount: { value: number };
  /** Account (password) logins: where plain TCP is acceptable, and the client-id rule (hooks/authenticate.ts). */
  accounts: AccountPolicy;
  /** Clients that sent an empty client id (MQTT 3.1.1 §3.1.3.1): an account gets `name/<random>`. */
  emptyClientIds: WeakSet<Client>;
  /**
   * May a principal keep a persistent session? Only with a store that keeps the routed message
   * apart from the copy each delivery was made with (Aedes' in-memory store records only the
   * message id of a delivery). The Redis store of `--cluster` writes the delivered copy back
   * over the shared message, a sealed copy included, so principal sessions stay clean there.
   */
  persistentPrincipals: boolean;
  roles: Map<string, Role>;
  phase1ByAddress: RateLimiter;
  phase1ByDevice: RateLimiter;
  authByAddress: RateLimiter;
  passwordByAddress: RateLimiter;
  /** Audit rows written in the current second (flood protection for the audit table). */
  auditBudget: { second: number; used: number; suppressed: number };
  /** Set when the broker runs as one node of several (broker/cluster). */
  cluster?: { state: ClusterState; grace: SharedGrace };
}

export interface AccountPolicy {
  /** Accept password logins over plain TCP from any address (the operator's explicit opt-in). */
  allowPlain: boolean;
  /** Addresses whose password logins over plain TCP are accepted (loopback by default). */
  isLocal(address: string): boolean;
  /** Mosquitto's use_username_as_clientid: an account's client id is its name, whatever it asked for. */
  useUsernameAsClientId: boolean;
}

const NO_RULES: Role = { name: '(none)', plaintext: false, rules: [] };

/** The principal behind an authenticated client, with its role as currently configured. */
export function principalOf(ctx: BrokerContext, state: ClientState | undefined): Principal | undefined {
  if (!state || state.kind === 'pending' || state.kind === 'hint') return undefined;
  const id = state.kind === 'device' ? state.devId : state.name;
  return { id, kind: state.kind, role: ctx.roles.get(state.roleName) ?? NO_RULES };
}

export function remoteOf(client: Client): string {
  const conn = client.conn as unknown as { remoteAddress?: string };
  return conn?.remoteAddress ?? 'unknown';
}

/** What an operator reads in the info log for each audited event kind (the rest log under their kind). */
const EVENT_MESSAGES: Record<string, string> = {
  'auth.fail': 'login refused',
  'subscribe.deny': 'subscription denied',
  'publish.drop': 'publish dropped',
  'publish.stale-epoch': 'publish from a stale epoch dropped',
  'session.revoked': 'session closed by a registry change',
  'publish.retained-refused': 'retained message not stored (retained limit)',
};

/**
 * Audit an event, and log it at info, without letting a flood of failures fill
 * the database or the log: both share the per-second budget, and what it
 * suppressed is counted in one warning per second. Subjects and details are
 * ids, codes and topics (never passwords, keys or payloads), cut to a bounded length.
 */
export function audit(ctx: BrokerContext, kind: string, subject: string | null, detail: string | null, source: string | null): void {
  const sec = Math.floor(Date.now() / 1000);
  const b = ctx.auditBudget;
  if (b.second !== sec) {
    if (b.suppressed > 0) {
      ctx.log.warn({ suppressed: b.suppressed }, 'security events suppressed by the per-second budget (audit rows and log lines)');
    }
    b.second = sec;
    b.used = 0;
    b.suppressed = 0;
  }
  if (b.used >= ctx.limits.auditPerSecond) {
    b.suppressed++;
    return;
  }
  b.used++;
  ctx.log.info({ event: kind, subject: subject?.slice(0, 64) ?? null, detail: detail?.slice(0, 160) ?? null, remote: source }, EVENT_MESSAGES[kind] ?? kind);
  // not awaited: a security event never waits on (or fails with) the audit write
  ctx.registry.audit(kind, subject, detail, source).catch((e: unknown) => ctx.log.error({ err: e }, 'audit write failed'));
}

export async function reloadRoles(ctx: BrokerContext): Promise<void> {
  const [roles, devices] = await Promise.all([ctx.registry.listRoles(), ctx.registry.listDevices()]);
  ctx.roles = new Map(roles.map((r) => [r.name, r]));
  // §14.3: groups and members follow the policy; the key service re-keys changed groups and pushes now
  const principals: Principal[] = [];
  const snapshot: PolicySnapshot = { principals: [], roles: [...ctx.roles.values()] };
  for (const d of devices) {
    const role = ctx.roles.get(d.role);
    if (d.status !== 'active' || !role) continue;
    principals.push({ id: d.id, kind: 'device', role });
    snapshot.principals.push({ id: d.id, role: d.role, key: keyIdentity(d) });
  }
  ctx.groups = new GroupDirectory(computeMembership(principals, snapshot.roles));
  ctx.keyLink.policy(snapshot);
}

/** A device session is authenticated and registered: it is the device's live session now. */
export function setLiveDevice(ctx: BrokerContext, devId: string, client: Client): void {
  ctx.liveDevices.set(devId, client);
  ctx.metrics.sessions.set(ctx.liveDevices.size);
  ctx.events.emit('device-online', devId);
}

/** The device's session on `client` ended (a newer session of the same device is left alone). */
export function dropLiveDevice(ctx: BrokerContext, devId: string, client: Client): void {
  if (ctx.liveDevices.get(devId) !== client) return;
  ctx.liveDevices.delete(devId);
  ctx.keyLink.left(devId); // its key delivery answer dies with the connection (§14.6)
  ctx.metrics.sessions.set(ctx.liveDevices.size);
  ctx.events.emit('device-offline', devId);
}

/** Aedes' live client table (not in its type declarations). */
export function aedesClients(ctx: BrokerContext): Record<string, Client> {
  return (ctx.aedes as unknown as { clients: Record<string, Client> }).clients;
}

/** Gives back a pending phase-1 slot and its timer; idempotent (close and KX3 may race). */
export function releasePendingSlot(ctx: BrokerContext, state: Extract<ClientState, { kind: 'pending' }>): void {
  if (state.released) return;
  state.released = true;
  clearTimeout(state.timer);
  ctx.pendingCount.value--;
  ctx.metrics.pending.set(ctx.pendingCount.value);
}

/** A device as far as its keys go: the same string means the same key. */
export interface DeviceKeyState {
  status: string;
  keyVersion: number;
  createdAt: number;
}

export const keyIdentity = (d: Pick<DeviceKeyState, 'createdAt' | 'keyVersion'>) => `${d.createdAt}/${d.keyVersion}`;

/**
 * Is `device` (as the registry has it now) still active under the key a
 * session was made with? The key version alone is not enough: a device removed
 * and added again starts over at key version 1, so its creation time is part
 * of the key's identity.
 */
export function sameDeviceKey(
  device: Pick<DeviceKeyState, 'status' | 'createdAt' | 'keyVersion'> | undefined,
  session: { keyVersion: number; keyCreatedAt: number },
): boolean {
  return device !== undefined && device.status === 'active' && device.keyVersion === session.keyVersion && device.createdAt === session.keyCreatedAt;
}

/** Records that the device's latest session (its future grace keys) is made under this device's key. */
export function noteGraceKey(ctx: BrokerContext, devId: string, device: DeviceKeyState): void {
  ctx.graceKeys.set(devId, keyIdentity(device));
}

/**
 * Forgets the §8.5 grace keys of a device that is no longer active under the
 * key they were made with (revoked, removed, rotated, removed and added
 * again). `current` is the device as the registry has it now (undefined: unknown).
 */
export function forgetStaleGrace(ctx: BrokerContext, devId: string, current: DeviceKeyState | undefined): void {
  const k = ctx.graceKeys.get(devId);
  if (k === undefined) return;
  if (current && current.status === 'active' && keyIdentity(current) === k) return;
  ctx.handshake.forgetGrace(devId);
  ctx.graceKeys.delete(devId);
}
