/**
 * The registry's devices and roles as the principals a stock-broker key
 * service serves (§15.6): K_auth | K_psk from the registry, K_ks from the key
 * service's store under the key identity the registry lists as current
 * (§14.2). On a stock broker the key service is the only trusted party, so
 * it reads both. It reads the local SQLite registry synchronously (the
 * stock flavours answer broker callbacks in one turn).
 */
import type { DeviceKeys } from '../../firmware/secure/key-schedule.js';
import { keyIdentity } from '../context.js';
import type { KeyServiceStore } from '../keyservice/store.js';
import type { Principal, Role } from '../policy/policy.js';
import type { SqliteRegistry } from '../registry/registry.js';
import type { PrincipalSource } from './stock-core.js';

export function registrySource(registry: SqliteRegistry, store: Pick<KeyServiceStore, 'memberKey'>): PrincipalSource {
  return {
    principals(): Principal[] {
      const roles = new Map(registry.rolesNow().map((r) => [r.name, r]));
      const out: Principal[] = [];
      for (const d of registry.devicesNow()) {
        const role = roles.get(d.role);
        if (d.status === 'active' && role) out.push({ id: d.id, kind: 'device', role });
      }
      return out;
    },
    roles: (): Role[] => registry.rolesNow(),
    handshakeKeys(id: string): DeviceKeys | undefined {
      const k = registry.handshakeKeysNow(id);
      return k ? { authKey: k.authKey, pskKey: k.pskKey } : undefined;
    },
    async memberKey(id: string): Promise<Uint8Array | undefined> {
      const d = registry.deviceNow(id);
      if (!d || d.status !== 'active') return undefined;
      const k = await store.memberKey(id);
      if (!k) return undefined;
      if (k.identity !== keyIdentity(registry.deviceNow(id) ?? d)) {
        k.key.fill(0);
        return undefined;
      }
      return k.key;
    },
    status: (id: string) => registry.deviceNow(id)?.status,
  };
}
