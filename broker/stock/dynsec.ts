/**
 * mqsec policy as Mosquitto dynamic-security objects (docs/protocol.md §15.6),
 * as pure functions: the key service publishes their output on
 * `$CONTROL/dynamic-security/v1`. One role per principal (dynamic security
 * 2.0 has no %u/%c substitution in ACLs, so per-principal topics are
 * spelled out), one client for the principal's phase-2 credential and one
 * bootstrap client that may only carry its handshake (§15.2). Everything not
 * granted is denied (default ACL access all false), `$`-topics included.
 */
import { expandRuleFilter, type Principal } from '../policy/policy.js';
import { bootUsername, downTopic, upTopic } from '../../firmware/secure/stock.js';

export interface DynsecAcl {
  acltype: 'publishClientSend' | 'publishClientReceive' | 'subscribePattern' | 'subscribeLiteral' | 'unsubscribePattern';
  topic: string;
  allow: boolean;
  priority?: number;
}

export type DynsecCommand = Record<string, unknown> & { command: string };

export const ROLE_PREFIX = 'mqsec-';
export const BOOT_ROLE_PREFIX = 'mqsec-boot-';
/** The key service's own grants, on a role of its own added to the admin client. */
export const SERVICE_ROLE = 'mqsec-keyservice';

export function principalRole(id: string): string {
  return ROLE_PREFIX + id;
}
export function bootRole(id: string): string {
  return BOOT_ROLE_PREFIX + id;
}

/** Priorities (dynamic security checks higher first, the first match decides). */
const OWN = 100;
const FENCE = 90;

/**
 * The protocol topics of one principal (§15.2): send on its up topic, read
 * its down topic; then a fence: nothing else under `mqsec/`, `$CONTROL/` or
 * `$SYS/`, whatever wildcard a policy rule has (dynamic security lets a
 * `subscribePattern #` cover `$SYS/#` and `$CONTROL/#` subscriptions).
 */
function protocolAcls(id: string): DynsecAcl[] {
  const fence = (topic: string): DynsecAcl[] => [
    { acltype: 'publishClientSend', topic, allow: false, priority: FENCE },
    { acltype: 'subscribePattern', topic, allow: false, priority: FENCE },
    { acltype: 'publishClientReceive', topic, allow: false, priority: FENCE },
  ];
  return [
    { acltype: 'publishClientSend', topic: upTopic(id), allow: true, priority: OWN },
    { acltype: 'subscribePattern', topic: downTopic(id), allow: true, priority: OWN },
    { acltype: 'publishClientReceive', topic: downTopic(id), allow: true, priority: OWN },
    ...fence('mqsec/#'),
    ...fence('$CONTROL/#'),
    ...fence('$SYS/#'),
  ];
}

/** A rule filter as a broker ACL; `$`-topics never (they are the broker's and the protocol's). */
function usable(filter: string | undefined): filter is string {
  return filter !== undefined && !filter.startsWith('$');
}

/** §15.6: the principal's policy as ACLs, plus its protocol topics. */
export function principalAcls(p: Principal): DynsecAcl[] {
  const out = protocolAcls(p.id);
  for (const rule of p.role.rules) {
    const f = expandRuleFilter(rule.filter, p.id);
    if (!usable(f)) continue;
    if (rule.action === 'publish') out.push({ acltype: 'publishClientSend', topic: f, allow: true });
    else {
      out.push({ acltype: 'subscribePattern', topic: f, allow: true });
      out.push({ acltype: 'publishClientReceive', topic: f, allow: true });
      out.push({ acltype: 'unsubscribePattern', topic: f, allow: true });
    }
  }
  return out;
}

/** §15.6: the key service may read every up topic and write every down topic, and read the broker's log (§15.4). */
export function serviceAcls(): DynsecAcl[] {
  return [
    { acltype: 'publishClientSend', topic: 'mqsec/down/+', allow: true },
    { acltype: 'subscribePattern', topic: 'mqsec/up/+', allow: true },
    { acltype: 'publishClientReceive', topic: 'mqsec/up/+', allow: true },
    { acltype: 'subscribePattern', topic: '$SYS/broker/log/#', allow: true },
    { acltype: 'publishClientReceive', topic: '$SYS/broker/log/#', allow: true },
  ];
}

export function defaultAccessCommand(): DynsecCommand {
  return {
    command: 'setDefaultACLAccess',
    acls: [
      { acltype: 'publishClientSend', allow: false },
      { acltype: 'publishClientReceive', allow: false },
      { acltype: 'subscribe', allow: false },
      { acltype: 'unsubscribe', allow: false },
    ],
  };
}

export function createRoleCommands(rolename: string, acls: DynsecAcl[]): DynsecCommand[] {
  return [{ command: 'createRole', rolename }, ...acls.map((a) => ({ command: 'addRoleACL', rolename, ...a }))];
}

/**
 * §15.2: the principal's two clients. The phase-2 client starts with a
 * password nobody knows (`unusable`): the first phase 1 installs the first
 * token. Both are bound to their client id.
 */
export function principalCommands(p: Principal, bootPassword: string, unusable: string): DynsecCommand[] {
  const boot = bootUsername(p.id);
  return [
    { command: 'deleteClient', username: p.id },
    { command: 'deleteClient', username: boot },
    { command: 'deleteRole', rolename: principalRole(p.id) },
    { command: 'deleteRole', rolename: bootRole(p.id) },
    ...createRoleCommands(principalRole(p.id), principalAcls(p)),
    ...createRoleCommands(bootRole(p.id), protocolAcls(p.id)),
    { command: 'createClient', username: p.id, clientid: p.id, password: unusable, roles: [{ rolename: principalRole(p.id) }] },
    { command: 'createClient', username: boot, clientid: boot, password: bootPassword, roles: [{ rolename: bootRole(p.id) }] },
  ];
}

/** §15.3: the next phase-2 token becomes the password (dynamic security kicks a client whose password changes). */
export function setPasswordCommand(id: string, password: string): DynsecCommand {
  return { command: 'setClientPassword', username: id, password };
}

/** §15.5: revocation: both clients disabled (which also disconnects them). */
export function revokeCommands(id: string): DynsecCommand[] {
  return [
    { command: 'disableClient', username: id },
    { command: 'disableClient', username: bootUsername(id) },
  ];
}

/** Commands whose failure is expected and harmless (cleaning up what may not exist). */
export function isCleanup(c: DynsecCommand): boolean {
  return c.command === 'deleteClient' || c.command === 'deleteRole';
}
