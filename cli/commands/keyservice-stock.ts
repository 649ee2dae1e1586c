/**
 * `mqsec keyservice --flavour mosquitto-dynsec|http-auth`: the key service
 * beside a stock broker (docs/protocol.md §15). It reads the mqsec data
 * directory the devices were provisioned into (`mqsec device add --data D`:
 * the registry's K_auth | K_psk and the key service's K_ks), mirrors the
 * policy into the broker (dynamic security) or answers its HTTP checks, and
 * follows registry changes (devices added, revoked, rules changed) within a
 * second.
 */
import { pino } from 'pino';
import type { Log } from '../../firmware/core/platform.js';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { HttpAuthKeyService } from '../../broker/stock/http-auth-key-service.js';
import { MosquittoKeyService } from '../../broker/stock/mosquitto-key-service.js';
import { registrySource } from '../../broker/stock/registry-source.js';
import { createSodiumSuite } from '../../platform-node/sodium-suite.js';
import { CliError, type CliIo } from '../command.js';

export const STOCK_FLAVOURS = ['mosquitto-dynsec', 'http-auth'] as const;
export type StockFlavourName = (typeof STOCK_FLAVOURS)[number];

export interface StockRunOptions {
  flavour: StockFlavourName;
  broker: string;
  data: string;
  username: string;
  password: string;
  httpHost: string;
  httpPort: number;
  logLevel: string;
}

export async function runStockKeyService(o: StockRunOptions, io: CliIo, stop: Promise<void>): Promise<void> {
  if (!/^mqtt:\/\/[^/]+:\d+\/?$/.test(o.broker)) throw new CliError('--broker must be mqtt://HOST:PORT');
  if (!o.password) throw new CliError('the broker login password is empty');
  const log = pino({ level: o.logLevel, base: { svc: 'mqsec-keyservice', flavour: o.flavour } }, pino.destination(2));
  // firmware Log (message, fields) onto pino (fields, message)
  const flog: Log = {
    debug: (m, f) => log.debug(f ?? {}, m),
    info: (m, f) => log.info(f ?? {}, m),
    warn: (m, f) => log.warn(f ?? {}, m),
    error: (m, f) => log.error(f ?? {}, m),
  };
  const registry = SqliteRegistry.open(o.data);
  const store = SqliteKeyServiceStore.open(o.data);
  const common = { url: o.broker, suite: createSodiumSuite(), source: registrySource(registry, store), tickets: new RegistryTicketStore(registry), keyStore: store, log: flog };
  let service: MosquittoKeyService | HttpAuthKeyService;
  try {
    if (o.flavour === 'mosquitto-dynsec') {
      service = new MosquittoKeyService({ ...common, adminUser: o.username, adminPassword: o.password });
      await service.start();
      io.out(`mqsec key service (Mosquitto dynamic security) linked to ${o.broker} (data ${o.data})`);
    } else {
      const http = new HttpAuthKeyService({ ...common, serviceUser: o.username, servicePassword: o.password, httpHost: o.httpHost, httpPort: o.httpPort });
      service = http;
      await http.listen();
      io.out(`mqsec key service answering HTTP auth checks at ${http.baseUrl}/{user,vhost,resource,topic}`);
      // the broker may come up after us: keep trying to join it as an MQTT client
      for (;;) {
        try {
          await http.start();
          break;
        } catch (e) {
          log.warn({ message: (e as Error).message }, 'broker not reachable yet');
          const again = await Promise.race([stop.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 2000))]);
          if (!again) throw new CliError(`could not reach ${o.broker}`);
        }
      }
      io.out(`mqsec key service linked to ${o.broker} (data ${o.data})`);
    }
    // registry changes (device add / revoke / rotate, rules) reach the broker within a second
    let revision = await registry.revision();
    const timer = setInterval(() => {
      void registry.revision().then((now) => {
        if (now === revision) return;
        revision = now;
        service.syncPolicy().catch((e: unknown) => log.warn({ message: (e as Error).message }, 'policy sync failed'));
      });
    }, 1000);
    try {
      await stop;
    } finally {
      clearInterval(timer);
    }
  } finally {
    await service!?.stop().catch(() => undefined);
    await registry.close();
    store.close();
    log.flush();
  }
  io.out('mqsec key service stopped');
}
