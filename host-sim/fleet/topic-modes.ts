/**
 * Which protection mode each device topic uses (docs/protocol.md §14.1), for
 * the live view and the summary: the device role's rules as the policy says
 * them (`hop` or `e2e`) and, for end-to-end ones, the key service's groups
 * behind them (how many, and their epochs). Pure: the fleet hands in what the
 * broker holds.
 */
import type { Role } from '../../broker/policy/policy.js';

export interface TopicModeRow {
  action: 'publish' | 'subscribe';
  /** The rule's filter with `%u` shown as `<node>`. */
  filter: string;
  mode: 'hop' | 'e2e';
  /** For e2e: the groups of this rule the key service holds, with their lowest and highest epoch. */
  groups?: number;
  epochs?: [number, number];
}

/** A rule filter (`%u` = the principal id, a whole level or part of one) as a matcher of concrete group filters. */
function ruleMatcher(filter: string): RegExp {
  const parts = filter.split('%u').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${parts.join('[^/#+]+')}$`);
}

/** `groups`: the key service's groups, when known (an embedded one); without them e2e rows carry no group count. */
export function deviceTopicModes(roles: Role[], groups?: { filter: string; epoch: number }[], roleName = 'sensor'): TopicModeRow[] {
  const role = roles.find((r) => r.name === roleName);
  if (!role) return [];
  return role.rules.map((rule) => {
    const row: TopicModeRow = { action: rule.action, filter: rule.filter.split('%u').join('<node>'), mode: rule.mode === 'e2e' ? 'e2e' : 'hop' };
    if (row.mode === 'e2e' && groups) {
      const m = ruleMatcher(rule.filter);
      const epochs = groups.filter((g) => m.test(g.filter)).map((g) => g.epoch);
      row.groups = epochs.length;
      if (epochs.length) row.epochs = [Math.min(...epochs), Math.max(...epochs)];
    }
    return row;
  });
}

/** One line per rule for the view: what the broker can see of it. */
export function formatTopicModes(rows: TopicModeRow[]): string[] {
  return rows.map((r) => {
    const what =
      r.mode === 'e2e'
        ? `e2e  sealed under group keys by the sender, opened only by the receivers; the broker checks a channel MAC and cannot read it` +
          (r.groups !== undefined ? ` (${r.groups} group${r.groups === 1 ? '' : 's'}${r.epochs ? `, epoch ${r.epochs[0] === r.epochs[1] ? r.epochs[0] : `${r.epochs[0]}-${r.epochs[1]}`}` : ''})` : '')
        : `hop  sealed per hop: the broker opens it and re-seals it for each subscriber (password accounts of a plaintext role read it)`;
    return `${r.action === 'publish' ? 'publish  ' : 'subscribe'} ${r.filter.padEnd(16)} ${what}`;
  });
}
