/**
 * Provisioning with the registry split (docs/protocol.md §14.2,
 * principal-keys.ts), shared by both registry implementations: a fresh K is
 * split, K_ks goes to the key service's store (a `MemberKeySink`), K_auth |
 * K_psk is sealed under the master key for the registry row, and K is
 * returned once and never stored.
 */
import { randomBytes } from 'node:crypto';
import { SqliteKeyServiceStore, isSyncSink, type MemberKeySink, type SyncMemberKeySink } from '../keyservice/store.js';
import { DEVICE_KEY_LENGTH } from './checks.js';
import { handshakeKeysOf, splitPrincipalKey } from './principal-keys.js';
import { openDeviceKey, sealDeviceKey } from './secrets.js';
import { RegistryError, type HandshakeKeys } from './store.js';

export type KeyServiceMode = 'embedded' | 'external';

/** meta/settings key: 'external' once a broker of this registry ran with an external key service. */
export const META_KEY_SERVICE = 'keyservice';

export function sealHandshake(master: Buffer, id: string, keyVersion: number, handshake: Uint8Array): Buffer {
  return sealDeviceKey(master, `hs|${id}`, keyVersion, handshake);
}

/** K_auth and K_psk from a sealed row (copies; the caller wipes them). */
export function openHandshake(master: Buffer, id: string, keyVersion: number, sealed: Buffer): HandshakeKeys {
  const hs = openDeviceKey(master, `hs|${id}`, keyVersion, sealed);
  const keys = handshakeKeysOf(hs);
  hs.fill(0);
  return { ...keys, keyVersion };
}

/**
 * A fresh K for `id`: K_ks into `sink` first (if that fails, nothing is
 * registered: the caller writes its registry row only after this resolved),
 * K_auth | K_psk sealed.
 */
export async function provisionKey(master: Buffer, sink: MemberKeySink, id: string, createdAt: number, keyVersion: number): Promise<{ key: Uint8Array; hsSealed: Buffer }> {
  const key = new Uint8Array(randomBytes(DEVICE_KEY_LENGTH));
  const split = splitPrincipalKey(key, id);
  try {
    await sink.putMemberKey(id, `${createdAt}/${keyVersion}`, split.keyService);
    return { key, hsSealed: sealHandshake(master, id, keyVersion, split.handshake) };
  } catch (e) {
    key.fill(0);
    throw e;
  } finally {
    split.handshake.fill(0);
    split.keyService.fill(0);
  }
}

/**
 * Where K_ks goes: the sink given; none (null: a broker with an external key
 * service, provisioning through it refused); or, by default, the embedded key
 * service's store in the node's data directory, opened on first use (refused
 * once a broker of this registry runs with an external key service).
 */
export class MemberKeys {
  private own?: SqliteKeyServiceStore;
  constructor(
    private readonly option: MemberKeySink | null | undefined,
    private readonly dataDir: string,
  ) {}

  sink(mode: KeyServiceMode): MemberKeySink {
    if (this.option) return this.option;
    if (this.option === null) throw new RegistryError('this broker uses an external key service: provision with --keyservice-data <its data directory>');
    if (mode === 'external') {
      throw new RegistryError(`the broker of ${this.dataDir} uses an external key service: provision with --keyservice-data <its data directory>`);
    }
    this.own ??= SqliteKeyServiceStore.open(this.dataDir);
    return this.own;
  }

  /** A sink that writes at once (the SQLite registry's key split at open runs in one synchronous transaction). */
  syncSink(mode: KeyServiceMode): SyncMemberKeySink {
    const s = this.sink(mode);
    if (!isSyncSink(s)) throw new RegistryError('this registry still holds whole principal keys: split them into a key service data directory first (`mqsec keyservice migrate`)');
    return s;
  }

  /**
   * Deletes K_ks where this registry can reach it. An external key service
   * this process cannot reach refuses the principal anyway: the policy it is
   * sent no longer lists it as active under that key.
   */
  async forget(id: string, mode: KeyServiceMode): Promise<void> {
    if (this.option === null) return;
    if (this.option === undefined && mode === 'external') return;
    await this.sink(mode).deleteMemberKey(id);
  }

  /**
   * `forget` once the registry's change is committed: a revocation must not
   * wait for, or fail with, the key service's store. If K_ks cannot be
   * deleted now it stays sealed and unused (the policy no longer lists the
   * principal under that key identity; a rotate overwrites it).
   */
  async forgetAfter(id: string, mode: KeyServiceMode): Promise<void> {
    await this.forget(id, mode).catch(() => {});
  }

  close(): void {
    void this.own?.close();
    this.own = undefined;
  }
}
