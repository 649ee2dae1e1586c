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
import { join } from 'node:path';
import { DYNSEC_STATE_FILE, DynsecStateStore } from '../../broker/stock/dynsec-state.js';
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
  /** http-auth: base URL of RabbitMQ's management API (revocation closes live connections through it). */
  management?: string;
}

/** How often the registry's revision is read: a revocation reaches the broker within this (plus one request). */
export const REGISTRY_POLL_MS = 250;

export async function runStockKeyService(o: StockRunOptions, io: CliIo, stop: Promise<void>): Promise<void> {
  if (!/^mqtt:\/\/[^/]+:\d+\/?$/.test(o.broker)) throw new CliError('--broker must be mqtt://HOST:PORT');
  if (!o.password) throw new CliError('the broker login password is empty');
  if (o.management !== undefined) {
    if (o.flavour !== 'http-auth') throw new CliError('--management is for --flavour http-auth (RabbitMQ)');
    if (!/^https?:\/\/[^/]+\/?$/.test(o.management)) throw new CliError('--management must be http://HOST:PORT or https://HOST:PORT');
  }
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
  let state: DynsecStateStore | undefined;
  try {
    if (o.flavour === 'mosquitto-dynsec') {
      // what it mirrored and which token each device will send next, kept across its restarts (§15.3)
      state = DynsecStateStore.open(join(o.data, DYNSEC_STATE_FILE));
      service = new MosquittoKeyService({ ...common, adminUser: o.username, adminPassword: o.password, state });
      await service.start();
      io.out(`mqsec key service (Mosquitto dynamic security) linked to ${o.broker} (data ${o.data})`);
    } else {
      const http = new HttpAuthKeyService({ ...common, serviceUser: o.username, servicePassword: o.password, httpHost: o.httpHost, httpPort: o.httpPort, managementUrl: o.management });
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
    // registry changes (device add / revoke / rotate, rules) reach the broker within REGISTRY_POLL_MS
    // (one sync at a time: a change seen while one runs is picked up by the next tick)
    let revision = await registry.revision();
    let syncing = false;
    const timer = setInterval(() => {
      if (syncing) return;
      syncing = true;
      void registry
        .revision()
        .then(async (now) => {
          if (now === revision) return;
          revision = now;
          await service.syncPolicy();
        })
        .catch((e: unknown) => log.warn({ message: (e as Error).message }, 'policy sync failed'))
        .finally(() => (syncing = false));
    }, REGISTRY_POLL_MS);
    try {
      await stop;
    } finally {
      clearInterval(timer);
    }
  } finally {
    await service!?.stop().catch(() => undefined);
    state?.close();
    await registry.close();
    store.close();
    log.flush();
  }
  io.out('mqsec key service stopped');
}
