/**
 * The console's view of devices: one row per registered device with the
 * state an operator filters by, and the detail of one device. Built from the
 * registry (one grouped read for the whole fleet) and the broker's live
 * session table; never includes key material.
 *
 * States: `revoked` (registry status), `online` (holds an authenticated
 * session now), `asleep` (active, has been seen: a stored ticket, a phase-2
 * counter or a session since the broker started), `never-seen` (active,
 * none of these: provisioned but never completed phase 1, or re-keyed since).
 */
import type { BrokerContext } from '../context.js';
import type { Role } from '../policy/policy.js';
import type { AuditEntry, DeviceActivity as Activity, DeviceRecord } from '../registry/registry.js';
import type { ConsoleFeed } from './feed.js';

export type DeviceState = 'online' | 'asleep' | 'revoked' | 'never-seen';
export const DEVICE_STATES: readonly DeviceState[] = ['online', 'asleep', 'revoked', 'never-seen'];

export interface DeviceRow {
  id: string;
  role: string;
  state: DeviceState;
  keyVersion: number;
  /** Unix ms of the last session start or end, or the last ticket written; null if never seen. */
  lastSeen: number | null;
  /** Highest phase-2 counter accepted (-1: none yet). */
  counter: number;
  /**
   * How the device's payloads travel: every device session is sealed between
   * device and broker (protocol §7); `plaintextReaders` says whether the
   * role's plain-MQTT backends may receive them decrypted.
   */
  protection: 'sealed';
  /** Resumable sessions: stored phase-2 tickets. */
  sessions: number;
  createdAt: number;
}

export interface DeviceDetail extends DeviceRow {
  status: DeviceRecord['status'];
  updatedAt: number;
  /** The live session, if online. */
  session: { phase: 1 | 2; remote: string; since: number | null; keyVersion: number } | null;
  /** Age of the newest stored ticket (ms since it was issued or advanced), null without one. */
  ticketAgeMs: number | null;
  /** When the newest ticket stops being accepted (Unix ms). */
  ticketExpiresAt: number | null;
  /** The group-key epoch of the device's topics; null: this broker has no group keys (not applicable). */
  groupKeyEpoch: number | null;
  audit: AuditEntry[];
}

function stateOf(d: DeviceRecord, online: boolean, lastSeen: number | null, a: Activity | undefined): DeviceState {
  if (d.status !== 'active') return 'revoked';
  if (online) return 'online';
  if (lastSeen !== null || (a && (a.tickets > 0 || a.counter >= 0))) return 'asleep';
  return 'never-seen';
}

function rowOf(ctx: BrokerContext, feed: ConsoleFeed, d: DeviceRecord, a: Activity | undefined): DeviceRow {
  const online = d.status === 'active' && ctx.liveDevices.has(d.id);
  const seen = Math.max(feed.lastSeenOf(d.id) ?? -1, a?.lastTicketAt ?? -1, online ? Date.now() : -1);
  const lastSeen = seen >= 0 ? seen : null;
  return {
    id: d.id,
    role: d.role,
    state: stateOf(d, online, lastSeen, a),
    keyVersion: d.keyVersion,
    lastSeen,
    counter: a?.counter ?? -1,
    protection: 'sealed',
    sessions: a?.tickets ?? 0,
    createdAt: d.createdAt,
  };
}

export interface DeviceQuery {
  /** Substring of the id or role (case-insensitive). */
  search?: string;
  state?: DeviceState;
}

export async function listDeviceRows(ctx: BrokerContext, feed: ConsoleFeed, q: DeviceQuery = {}): Promise<DeviceRow[]> {
  const [activity, devices] = await Promise.all([ctx.registry.deviceActivity(), ctx.registry.listDevices()]);
  const needle = q.search?.toLowerCase();
  const out: DeviceRow[] = [];
  for (const d of devices) {
    if (needle && !d.id.toLowerCase().includes(needle) && !d.role.toLowerCase().includes(needle)) continue;
    const row = rowOf(ctx, feed, d, activity.get(d.id));
    if (q.state && row.state !== q.state) continue;
    out.push(row);
  }
  return out;
}

export async function deviceRow(ctx: BrokerContext, feed: ConsoleFeed, id: string): Promise<DeviceRow | undefined> {
  const d = await ctx.registry.getDevice(id);
  return d && rowOf(ctx, feed, d, (await ctx.registry.deviceActivity()).get(id));
}

export async function deviceDetail(ctx: BrokerContext, feed: ConsoleFeed, id: string): Promise<DeviceDetail | undefined> {
  const d = await ctx.registry.getDevice(id);
  if (!d) return undefined;
  const a = (await ctx.registry.deviceActivity()).get(id);
  const row = rowOf(ctx, feed, d, a);
  const client = ctx.liveDevices.get(id);
  const state = client ? ctx.states.get(client) : undefined;
  const session =
    row.state === 'online' && state?.kind === 'device'
      ? { phase: state.phase, remote: state.remote, since: feed.sessionSinceOf(id) ?? null, keyVersion: state.keyVersion }
      : null;
  return {
    ...row,
    status: d.status,
    updatedAt: d.updatedAt,
    session,
    ticketAgeMs: a?.lastTicketAt != null ? Date.now() - a.lastTicketAt : null,
    ticketExpiresAt: a?.ticketExpiresAt ?? null,
    groupKeyEpoch: null,
    audit: await ctx.registry.listAudit({ subject: id, limit: 200 }),
  };
}

/** Roles with their rules, for the read-only rules page. */
export async function rolesView(ctx: BrokerContext): Promise<Role[]> {
  return ctx.registry.listRoles();
}
