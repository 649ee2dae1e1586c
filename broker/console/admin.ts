/**
 * The first admin login. A console nobody can log in to is useless, so when
 * the console starts and the registry has no active admin account, one is
 * created with a random password that is printed once (by the caller) and
 * stored only as its scrypt hash. Later admins are added with
 * `mqsec user add NAME --role admin --password-stdin`.
 */
import { randomBytes } from 'node:crypto';
import type { Registry } from '../registry/registry.js';
import { ADMIN_ROLE } from './sessions.js';

export async function ensureAdminAccount(registry: Registry, name = 'admin'): Promise<{ name: string; password: string } | undefined> {
  if ((await registry.listAccounts()).some((a) => a.role === ADMIN_ROLE && a.status === 'active')) return undefined;
  let account = name;
  for (let i = 2; (await registry.getAccount(account)) || (await registry.getDevice(account)); i++) account = `${name}${i}`;
  const password = randomBytes(15).toString('base64url');
  await registry.addAccount(account, ADMIN_ROLE, password);
  return { name: account, password };
}
