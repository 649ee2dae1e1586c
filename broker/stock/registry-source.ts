/** The registry's devices and roles as the principals a stock-broker key service serves (§15.6). */
import type { Principal, Role } from '../policy/policy.js';
import type { Registry } from '../registry/registry.js';
import type { PrincipalSource } from './stock-core.js';

export function registrySource(registry: Registry): PrincipalSource {
  return {
    principals(): Principal[] {
      const roles = new Map(registry.listRoles().map((r) => [r.name, r]));
      const out: Principal[] = [];
      for (const d of registry.listDevices()) {
        const role = roles.get(d.role);
        if (d.status === 'active' && role) out.push({ id: d.id, kind: 'device', role });
      }
      return out;
    },
    roles: (): Role[] => registry.listRoles(),
    principalKey(id: string): Uint8Array | undefined {
      const d = registry.getDevice(id);
      if (!d || d.status !== 'active') return undefined;
      return registry.deviceKey(id)?.key;
    },
    status: (id: string) => registry.getDevice(id)?.status,
  };
}
