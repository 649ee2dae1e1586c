/**
 * What both registry implementations check before they write, and how both
 * turn role and rule rows into roles: one place, so SQLite and PostgreSQL
 * refuse the same input with the same words.
 */
import {
  isValidPrincipalId,
  isValidRoleName,
  validateRuleFilter,
  type Action,
  type ProtectionMode,
  type Role,
} from '../policy/policy.js';
import { RegistryError } from './store.js';

export const DEVICE_KEY_LENGTH = 32;

export function checkRoleName(name: string): void {
  if (!isValidRoleName(name)) throw new RegistryError(`invalid role name "${name}" (a-z, 0-9, _ and -, max 32)`);
}

export function checkRuleArgs(action: string, filter: string, mode: string): void {
  if (action !== 'publish' && action !== 'subscribe') throw new RegistryError(`action must be publish or subscribe`);
  if (mode !== 'hop' && mode !== 'e2e') throw new RegistryError(`mode must be hop or e2e`);
  const bad = validateRuleFilter(filter);
  if (bad) throw new RegistryError(`invalid filter "${filter}": ${bad}`);
}

export function checkDeviceId(id: string): void {
  if (!isValidPrincipalId(id)) throw new RegistryError(`invalid device id "${id}" (A-Z a-z 0-9 _ . -, 1 to 23 chars)`);
}

export function checkAccountArgs(name: string, password: string): void {
  if (!isValidPrincipalId(name)) throw new RegistryError(`invalid account name "${name}" (A-Z a-z 0-9 _ . -, 1 to 23 chars)`);
  if (password.length < 8) throw new RegistryError('password must be at least 8 characters');
}

export interface RoleRow {
  name: string;
  plaintext: boolean;
}

export interface RuleRow {
  role: string;
  action: Action;
  filter: string;
  mode: ProtectionMode;
}

/** Roles with their rules in insertion order; a hop rule carries no mode (the default). */
export function rolesFrom(roles: RoleRow[], rules: RuleRow[]): Role[] {
  return roles.map((r) => ({
    name: r.name,
    plaintext: r.plaintext,
    rules: rules
      .filter((x) => x.role === r.name)
      .map((x) => (x.mode === 'e2e' ? { action: x.action, filter: x.filter, mode: x.mode } : { action: x.action, filter: x.filter })),
  }));
}
