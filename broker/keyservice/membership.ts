/**
 * Topic groups and their members from the policy (docs/protocol.md §14.1), as
 * pure functions over plain data, so the key service can run inside the
 * broker or beside any broker that enforces the same policy.
 *
 * - Group filters: every rule whose mode is `e2e`, with `%u` expanded for each
 *   principal holding the role (`sensors/%u/#` gives one group per device), or
 *   the filter itself when it has no `%u`. Groups must not overlap (§14.1): a
 *   filter overlapping one already taken (in sorted order) is left out and
 *   reported, so every topic has at most one group.
 * - Writers of G: principals with a publish grant overlapping G.
 * - Readers of G: principals with a subscribe grant containing all of G (a
 *   principal allowed to read only part of G gets no key for G).
 *
 * Members are mqsec principals (devices and app principals, which hold a
 * 32-byte key); password accounts are never members: they use `hop` topics.
 */
import { expandRuleFilter, grantFilters, type Principal, type Role } from '../policy/policy.js';
import { filterContains, filtersOverlap, topicMatches } from '../policy/topics.js';

export interface GroupMembers {
  filter: string;
  /** Sorted; the index is the writer slot (§14.4). */
  writers: string[];
  readers: string[];
}

export interface Membership {
  groups: Map<string, GroupMembers>;
  /** e2e filters left out because they overlap an earlier group. */
  overlapping: string[];
}

export function e2eGroupFilters(principals: readonly Principal[], roles: readonly Role[]): { filters: string[]; overlapping: string[] } {
  const wanted = new Set<string>();
  for (const role of roles) {
    for (const rule of role.rules) {
      if (rule.mode !== 'e2e') continue;
      if (!rule.filter.includes('%u')) {
        const f = expandRuleFilter(rule.filter, 'x');
        if (f !== undefined) wanted.add(f);
        continue;
      }
      for (const p of principals) {
        if (p.role.name !== role.name) continue;
        const f = expandRuleFilter(rule.filter, p.id);
        if (f !== undefined) wanted.add(f);
      }
    }
  }
  const filters: string[] = [];
  const overlapping: string[] = [];
  for (const f of [...wanted].sort()) {
    if (filters.some((g) => filtersOverlap(g, f))) overlapping.push(f);
    else filters.push(f);
  }
  return { filters, overlapping };
}

export function computeMembership(principals: readonly Principal[], roles: readonly Role[]): Membership {
  const { filters, overlapping } = e2eGroupFilters(principals, roles);
  const grants = principals.map((p) => ({ id: p.id, publish: grantFilters(p, 'publish'), subscribe: grantFilters(p, 'subscribe') }));
  const groups = new Map<string, GroupMembers>();
  for (const filter of filters) {
    const writers = grants.filter((g) => g.publish.some((f) => filtersOverlap(f, filter))).map((g) => g.id).sort();
    const readers = grants.filter((g) => g.subscribe.some((f) => filterContains(f, filter))).map((g) => g.id).sort();
    groups.set(filter, { filter, writers, readers });
  }
  return { groups, overlapping };
}

/** The group a topic belongs to, if any (at most one: groups do not overlap). */
export function groupOfTopic(filters: Iterable<string>, topic: string): string | undefined {
  for (const f of filters) if (topicMatches(f, topic)) return f;
  return undefined;
}

/** Same members (as a set of readers and an ordered writer table)? */
export function sameMembers(a: GroupMembers, b: GroupMembers): boolean {
  return a.writers.join('\n') === b.writers.join('\n') && a.readers.join('\n') === b.readers.join('\n');
}

const TOPIC_CACHE_MAX = 10_000;

/**
 * What a broker needs of the groups to route (§14.5, §14.7): the group of a
 * topic and who reads it. Computed from the policy by the broker itself,
 * so it needs no key and no answer from the key service.
 */
export class GroupDirectory {
  private readonly filters: string[];
  private readonly readers = new Map<string, Set<string>>();
  private topics = new Map<string, string | null>();

  constructor(m: Membership = { groups: new Map(), overlapping: [] }) {
    this.filters = [...m.groups.keys()];
    for (const [f, g] of m.groups) this.readers.set(f, new Set(g.readers));
  }

  /** The group of a topic (at most one, §14.1); memoised, since the broker asks for every PUBLISH. */
  groupOf(topic: string): string | undefined {
    const known = this.topics.get(topic);
    if (known !== undefined) return known ?? undefined;
    const g = groupOfTopic(this.filters, topic);
    if (this.topics.size >= TOPIC_CACHE_MAX) this.topics = new Map();
    this.topics.set(topic, g ?? null);
    return g;
  }

  isReader(id: string, filter: string): boolean {
    return this.readers.get(filter)?.has(id) ?? false;
  }
}
