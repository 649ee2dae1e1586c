/**
 * A broker that holds only K_auth and K_psk (docs/protocol.md §14.2, the
 * registry split) runs phases 1 and 2 with a device that holds K; the
 * handshake wipes the keys it was handed; K_auth/K_psk of another K fail as
 * a wrong key does (BAD_MAC). Firmware modules only: run under Node
 * (handshake.test.ts) and inside XS (test/xs/secure.entry.ts).
 */
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { MqsecError } from '../../firmware/core/errors.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { deriveDeviceKeys } from '../../firmware/secure/key-schedule.js';
import { ServerHandshake } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';

export async function splitKeysScenario(suite: CryptoSuite): Promise<string[]> {
  const out: string[] = [];
  const devId = 'split01';
  const key = new Uint8Array(32).fill(0x42);
  const other = new Uint8Array(32).fill(0x43);
  let handed: Uint8Array[] = [];
  let useOther = false;
  const server = new ServerHandshake({
    suite,
    clock: { now: () => 1_700_000_000_000 },
    ticketStore: new MemoryTicketStore(),
    lookupDevice: () => {
      const keys = deriveDeviceKeys(suite, useOther ? other : key, devId);
      handed = [keys.authKey, keys.pskKey];
      return { keys, status: 'active' };
    },
  });
  const dev = new DeviceSecureSession({ suite, devId, deviceKey: key, storage: new MemoryStorage() });
  const c = await dev.connectCredentials();
  const r = await server.acceptConnect(c.clientId, c.username, c.password);
  if (r.kind !== 'phase1') throw new Error('expected phase 1');
  out.push(handed.every((k) => k.every((b) => b === 0)) ? 'keys wiped' : 'keys kept');
  await dev.onConnack(0);
  const h = await dev.handleIncoming(r.reply.topic, r.reply.payload);
  if (h.kind !== 'handshake') throw new Error('KX2 refused');
  const s1 = await server.completePhase1(r.pending, h.reply.payload);
  out.push('phase 1');
  s1.close();
  dev.onConnectionLost();
  const c2 = await dev.connectCredentials();
  const r2 = await server.acceptConnect(c2.clientId, c2.username, c2.password);
  out.push(r2.kind === 'phase2' ? 'phase 2' : `not phase 2: ${r2.kind}`);
  // K_auth/K_psk of another K: a fresh phase 1 fails on the MAC, before any X25519
  useOther = true;
  const fresh = new DeviceSecureSession({ suite, devId, deviceKey: key, storage: new MemoryStorage() });
  const c3 = await fresh.connectCredentials();
  try {
    await server.acceptConnect(c3.clientId, c3.username, c3.password);
    out.push('accepted');
  } catch (e) {
    out.push(e instanceof MqsecError ? e.code : String(e));
  }
  return out;
}
