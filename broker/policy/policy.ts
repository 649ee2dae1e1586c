/**
 * The broker's authorization policy as pure functions over plain data.
 * Deny by default: a principal may do only what one of its role's allow rules
 * grants. Rules are topic filters in which `%u` stands for the principal's id.
 *
 * Reserved trees: `$mqsec/#` belongs to the protocol (key exchange) and no
 * rule can grant it; `$SYS/#` may be read by a rule that names it but never
 * published to by a client.
 */
import {
  filterContains,
  filterOverlapsTree,
  isValidTopicFilter,
  isValidTopicName,
  topicInTree,
  topicMatches,
} from './topics.js';

export type Action = 'publish' | 'subscribe';

/**
 * How payloads on a rule's topics are protected (docs/protocol.md §14.1):
 * `hop` = sealed hop by hop, the broker re-seals per subscriber (§8);
 * `e2e` = topic group keys end to end, the broker checks a channel MAC and
 * forwards what it cannot read (§14).
 */
export type ProtectionMode = 'hop' | 'e2e';

export interface Rule {
  action: Action;
  /** Topic filter; `%u` is replaced by the principal id as a whole level or part of one. */
  filter: string;
  /** Absent = `hop`. */
  mode?: ProtectionMode;
}

export interface Role {
  name: string;
  /** May this role's plain-MQTT clients receive decrypted device payloads? */
  plaintext: boolean;
  rules: Rule[];
}

export interface Principal {
  /** Device id or account name. */
  id: string;
  kind: 'device' | 'account';
  role: Role;
}

export const PROTOCOL_ROOT = '$mqsec';
export const SYS_ROOT = '$SYS';

/** Ids may be used inside topics (`%u`), so they must not carry topic syntax. */
const ID_PATTERN = /^[A-Za-z0-9_.-]{1,23}$/;
export function isValidPrincipalId(id: string): boolean {
  return typeof id === 'string' && ID_PATTERN.test(id);
}
const ROLE_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;
export function isValidRoleName(name: string): boolean {
  return typeof name === 'string' && ROLE_PATTERN.test(name);
}

/** Rule filter with `%u` substituted, or undefined when the result is not a valid filter. */
export function expandRuleFilter(filter: string, principalId: string): string | undefined {
  if (filter.includes('%u') && !isValidPrincipalId(principalId)) return undefined;
  const expanded = filter.split('%u').join(principalId);
  return isValidTopicFilter(expanded) ? expanded : undefined;
}

/** Is a rule filter acceptable for storing (valid after substitution, not touching `$mqsec`)? */
export function validateRuleFilter(filter: string): string | undefined {
  const probe = expandRuleFilter(filter, 'probe');
  if (probe === undefined) return 'not a valid MQTT topic filter';
  if (filterOverlapsTree(probe, PROTOCOL_ROOT)) return `${PROTOCOL_ROOT}/# is reserved to the protocol`;
  return undefined;
}

/** The principal's grant filters for one action, `%u` expanded (invalid expansions left out). */
export function grantFilters(principal: Principal, action: Action): string[] {
  const out: string[] = [];
  for (const rule of principal.role.rules) {
    if (rule.action !== action) continue;
    const f = expandRuleFilter(rule.filter, principal.id);
    if (f !== undefined) out.push(f);
  }
  return out;
}

/**
 * Per-message decisions are memoised: the broker asks canPublish for every
 * PUBLISH and canReceive for every delivery, and expanding `%u` and splitting
 * topics each time was a measurable share of its CPU. A principal's expanded
 * grants and its recent decisions are kept per Role object; the broker builds
 * new Role objects whenever the registry changes (reloadRoles), so a changed
 * or revoked grant never meets a stale entry. Role objects are therefore
 * treated as immutable values: a changed role is a new object (an entry also
 * remembers the rules array and its length it was built from, as a guard
 * against a caller replacing or extending `rules` in place). The cache is bounded: only topics of at most
 * MAX_CACHED_TOPIC_LENGTH characters are remembered, and everything is
 * dropped once MAX_CACHE_ENTRIES principals and decisions are held, so memory
 * stays flat under floods of distinct ids or topics.
 */
interface CompiledGrants {
  rules: readonly Rule[];
  ruleCount: number;
  publish: string[];
  subscribe: string[];
  /** topic -> canPublish decision */
  published: Map<string, boolean>;
  /** topic -> canReceive decision */
  received: Map<string, boolean>;
}

const MAX_CACHED_TOPIC_LENGTH = 128;
const MAX_CACHE_ENTRIES = 50_000;
let cacheEntries = 0;
let compiledByRole = new WeakMap<Role, Map<string, CompiledGrants>>();

/** Counts one more cached entry; true when the cache was just emptied to make room. */
function countCacheEntry(): boolean {
  if (++cacheEntries <= MAX_CACHE_ENTRIES) return false;
  compiledByRole = new WeakMap();
  cacheEntries = 1;
  return true;
}

function compiledGrants(principal: Principal): CompiledGrants {
  const role = principal.role;
  let byId = compiledByRole.get(role);
  if (!byId) {
    byId = new Map();
    compiledByRole.set(role, byId);
  }
  let c = byId.get(principal.id);
  if (!c || c.rules !== role.rules || c.ruleCount !== role.rules.length) {
    if (countCacheEntry()) {
      byId = new Map();
      compiledByRole.set(role, byId);
    }
    c = {
      rules: role.rules,
      ruleCount: role.rules.length,
      publish: grantFilters(principal, 'publish'),
      subscribe: grantFilters(principal, 'subscribe'),
      published: new Map(),
      received: new Map(),
    };
    byId.set(principal.id, c);
  }
  return c;
}

function remember(decisions: Map<string, boolean>, topic: string, allowed: boolean): boolean {
  if (typeof topic !== 'string' || topic.length > MAX_CACHED_TOPIC_LENGTH) return allowed;
  countCacheEntry();
  decisions.set(topic, allowed);
  return allowed;
}

export function isReservedTopic(topic: string): boolean {
  return topicInTree(topic, PROTOCOL_ROOT);
}

/** May the principal PUBLISH to this topic name? */
export function canPublish(principal: Principal, topic: string): boolean {
  const c = compiledGrants(principal);
  const known = c.published.get(topic);
  if (known !== undefined) return known;
  return remember(c.published, topic, decidePublish(c.publish, topic));
}

function decidePublish(grants: string[], topic: string): boolean {
  if (!isValidTopicName(topic)) return false;
  if (topic.startsWith('$')) return false; // $mqsec is the protocol's, $SYS the broker's, other $ reserved by MQTT
  return grants.some((f) => topicMatches(f, topic));
}

/**
 * May the principal SUBSCRIBE to this filter? Only if one subscribe rule
 * contains the whole filter (every topic it can match). Containment in a
 * single rule is sufficient, not necessary, for containment in the union of
 * all rules; the check errs on the side of denying.
 */
export function canSubscribe(principal: Principal, filter: string): boolean {
  if (!isValidTopicFilter(filter)) return false;
  if (filterOverlapsTree(filter, PROTOCOL_ROOT)) return false;
  return compiledGrants(principal).subscribe.some((f) => filterContains(f, filter));
}

/**
 * May a message on `topic` be delivered to the principal? Re-checked at
 * forward time (also for retained messages), so a grant that was removed or a
 * principal that was revoked stops receiving at once.
 */
export function canReceive(principal: Principal, topic: string): boolean {
  const c = compiledGrants(principal);
  const known = c.received.get(topic);
  if (known !== undefined) return known;
  return remember(c.received, topic, decideReceive(c.subscribe, topic));
}

function decideReceive(grants: string[], topic: string): boolean {
  if (!isValidTopicName(topic)) return false;
  if (isReservedTopic(topic)) return false;
  return grants.some((f) => topicMatches(f, topic));
}

/** Roles every registry starts with (docs: operations). */
export const BUILTIN_ROLES: readonly Role[] = [
  {
    name: 'sensor',
    plaintext: false,
    rules: [
      { action: 'publish', filter: 'sensors/%u/#' },
      { action: 'subscribe', filter: 'cmd/%u/#' },
    ],
  },
  {
    name: 'app',
    plaintext: true,
    rules: [
      { action: 'subscribe', filter: 'sensors/#' },
      { action: 'publish', filter: 'cmd/#' },
    ],
  },
  {
    name: 'admin',
    plaintext: true,
    rules: [
      { action: 'publish', filter: '#' },
      { action: 'subscribe', filter: '#' },
      { action: 'subscribe', filter: '$SYS/#' },
    ],
  },
];
