/**
 * The app SDK against stock RabbitMQ 3.10 (MQTT plugin + HTTP auth backend)
 * with the mqsec key service answering its checks (docs/protocol.md §15.9):
 * the shared suite of sdk-app-suite.ts, the broker (Debian package, its own
 * node name, ports, epmd and data dir, management API on loopback for
 * revocation) and key service started once for this file.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe } from 'vitest';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { HttpAuthKeyService } from '../../broker/stock/http-auth-key-service.js';
import { registrySource } from '../../broker/stock/registry-source.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { hasRabbitmq, startRabbitmq } from '../helpers/rabbitmq.js';
import { stockSdkSuite } from './sdk-app-suite.js';

const suite = createNodeCryptoSuite();

if (!hasRabbitmq()) describe.skip('the app SDK on RabbitMQ with the HTTP auth backend (rabbitmq-server not installed)', () => {});
else
  stockSdkSuite('RabbitMQ with the HTTP auth backend', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-sdk-rmq-'));
    const registry = SqliteRegistry.open(dataDir);
    const store = SqliteKeyServiceStore.open(dataDir);
    const ks = new HttpAuthKeyService({
      url: 'mqtt://127.0.0.1:1', // set below, once the broker's port is known
      serviceUser: 'mqsec-keyservice',
      servicePassword: Buffer.from(suite.randomBytes(18)).toString('base64url'),
      suite,
      source: registrySource(registry, store),
      tickets: new RegistryTicketStore(registry),
      keyStore: store,
    });
    await ks.listen();
    // with the management API: revocation closes the app's live connection through it (§15.9)
    const rabbit = await startRabbitmq({ baseUrl: ks.baseUrl }, { management: true });
    (ks as unknown as { o: { url: string; managementUrl?: string } }).o.url = rabbit.url;
    (ks as unknown as { o: { url: string; managementUrl?: string } }).o.managementUrl = rabbit.managementUrl;
    await ks.start();
    return {
      url: rabbit.url,
      port: rabbit.mqttPort,
      dataDir,
      registry,
      suite,
      syncPolicy: () => ks.syncPolicy(),
      revoke: (id) => ks.revoke(id),
      // §15.9: the login check itself takes any counter above the last: nothing to wait for
      tokenReady: async () => {},
      kicksOnRevoke: true,
      stop: async () => {
        await ks.stop();
        await rabbit.stop();
        await registry.close();
        store.close();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  });
