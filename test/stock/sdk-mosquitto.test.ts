/**
 * The app SDK against stock Mosquitto 2.0 with dynamic security and the
 * mqsec key service beside it (docs/protocol.md §15): the shared suite of
 * sdk-app-suite.ts, the broker (Debian package) and key service started once
 * for this file.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe } from 'vitest';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { MosquittoKeyService } from '../../broker/stock/mosquitto-key-service.js';
import { registrySource } from '../../broker/stock/registry-source.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { hasMosquittoDynsec, startDynsecMosquitto } from '../helpers/mosquitto-dynsec.js';
import { stockSdkSuite, until } from './sdk-app-suite.js';

const suite = createNodeCryptoSuite();

if (!hasMosquittoDynsec()) describe.skip('the app SDK on Mosquitto with dynamic security (mosquitto not installed)', () => {});
else
  stockSdkSuite('Mosquitto with dynamic security', async () => {
    const broker = await startDynsecMosquitto();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-sdk-dynsec-'));
    const registry = SqliteRegistry.open(dataDir);
    // provisioning writes each K_ks into the key service's store of this data dir (§14.2)
    const store = SqliteKeyServiceStore.open(dataDir);
    const ks = new MosquittoKeyService({
      url: broker.url,
      adminUser: broker.adminUser,
      adminPassword: broker.adminPassword,
      suite,
      source: registrySource(registry, store),
      tickets: new RegistryTicketStore(registry),
      keyStore: store,
    });
    await ks.start();
    return {
      url: broker.url,
      port: broker.port,
      dataDir,
      registry,
      suite,
      syncPolicy: () => ks.syncPolicy(),
      revoke: (id) => ks.revoke(id),
      // §15.3: the next token is installed when the broker log shows the connection ended
      tokenReady: (id) => until(() => ks.credentialReady(id), 10_000, `token of ${id} installed`),
      kicksOnRevoke: true,
      stop: async () => {
        await ks.stop();
        await broker.stop();
        await registry.close();
        store.close();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  });
