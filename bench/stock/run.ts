/**
 * Stock-broker benchmark (docs/protocol.md §15; results in bench/RESULTS.md):
 *
 *   npx tsx bench/stock/run.ts [--seconds 10] [--devices 8] [--fleets 100,1000,10000] [--only mosquitto,rabbitmq,dynsec]
 *
 * 1. Handshake rates through Debian's Mosquitto 2.0 + dynamic security, and
 *    through RabbitMQ 3.10 + its HTTP auth backend, each with the key service
 *    (all on this machine): phase 2 (reconnect with the installed
 *    token, RC verified, group keys fetched) and phase 1 (+ the first phase 2)
 *    per second, and Mosquitto CPU per handshake (from /proc).
 * 2. What one credential change costs the broker as the fleet grows: dynamic
 *    security rewrites its whole JSON file on every change, and every phase-2
 *    reconnect is one change (§15.3). For each fleet size a broker is started
 *    on a generated JSON of that many principals (two clients and two roles
 *    each, the key service's real ACLs), and `setClientPassword` is timed
 *    (request to response, sequential) with the broker CPU it took; then
 *    the same number of changes as one `$CONTROL` message (several commands),
 *    to see whether the plugin saves the JSON once per message or once per
 *    command (Mosquitto 2.0 source: once per command; 2.1: once per message).
 * Prints one table per part; figures depend on the CPU (run with nothing
 * else busy); only the ratios within one run mean much.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pbkdf2Sync, randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { RegistryTicketStore } from '../../broker/registry/ticket-store.js';
import { MosquittoKeyService } from '../../broker/stock/mosquitto-key-service.js';
import { registrySource } from '../../broker/stock/registry-source.js';
import { bootRole, principalAcls, principalRole } from '../../broker/stock/dynsec.js';
import { bootUsername, downTopic, upTopic } from '../../firmware/secure/stock.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { StockDevice } from '../../host-sim/stock-device.js';
import { startDynsecMosquitto, type RunningDynsecMosquitto } from '../../test/helpers/mosquitto-dynsec.js';
import { startRabbitmq } from '../../test/helpers/rabbitmq.js';
import { HttpAuthKeyService } from '../../broker/stock/http-auth-key-service.js';
import { BUILTIN_ROLES } from '../../broker/policy/policy.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const SECONDS = Number(opt('seconds', '10'));
const DEVICES = Number(opt('devices', '8'));
const FLEETS = opt('fleets', '100,1000,10000').split(',').map(Number);
const ONLY = opt('only', 'mosquitto,rabbitmq,dynsec').split(',');
const suite = createNodeCryptoSuite();
const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

async function cpuMs(pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / TICK;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timeout');
    await sleep(2);
  }
}

interface Deployment {
  name: string;
  url: string;
  brokerPid(): number | Promise<number>;
  /** Mosquitto: the token of the next connection is installed (§15.3); HTTP hook: always. */
  ready(id: string): boolean;
  counters: object;
  stop(): Promise<void>;
}

async function withRegistry(): Promise<{ registry: SqliteRegistry; keys: Map<string, Uint8Array>; dir: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mqsec-stock-bench-'));
  const registry = SqliteRegistry.open(dir);
  await registry.addRole('stocksensor');
  await registry.addRule('stocksensor', 'publish', 'sensors/%u/#', 'e2e');
  const keys = new Map<string, Uint8Array>();
  for (let i = 0; i < DEVICES; i++) {
    const id = `bench${String(i).padStart(3, '0')}`;
    keys.set(id, (await registry.addDevice(id, 'stocksensor')).key);
  }
  return { registry, keys, dir };
}

async function mosquittoDeployment(registry: SqliteRegistry): Promise<Deployment> {
  const ksStore = SqliteKeyServiceStore.open(registry.dataDir);
  const broker = await startDynsecMosquitto();
  const ks = new MosquittoKeyService({
    url: broker.url,
    adminUser: broker.adminUser,
    adminPassword: broker.adminPassword,
    suite,
    source: registrySource(registry, ksStore),
    tickets: new RegistryTicketStore(registry),
    keyStore: ksStore,
  });
  await ks.start();
  return {
    name: `Mosquitto ${mosquittoVersion()} + dynamic security`,
    url: broker.url,
    brokerPid: () => broker.pid,
    ready: (id) => ks.credentialReady(id),
    counters: ks.counters,
    async stop() {
      await ks.stop();
      await broker.stop();
      ksStore.close();
    },
  };
}

async function rabbitDeployment(registry: SqliteRegistry): Promise<Deployment> {
  const ksStore = SqliteKeyServiceStore.open(registry.dataDir);
  const ks = new HttpAuthKeyService({
    url: 'mqtt://127.0.0.1:1',
    serviceUser: 'mqsec-keyservice',
    servicePassword: randomBytes(18).toString('base64url'),
    suite,
    source: registrySource(registry, ksStore),
    tickets: new RegistryTicketStore(registry),
    keyStore: ksStore,
  });
  await ks.listen();
  const rabbit = await startRabbitmq({ baseUrl: ks.baseUrl });
  (ks as unknown as { o: { url: string } }).o.url = rabbit.url;
  await ks.start();
  return {
    name: 'RabbitMQ 3.10 + HTTP auth backend',
    url: rabbit.url,
    brokerPid: () => rabbit.beamPid(),
    ready: () => true,
    get counters() {
      return { ...ks.counters, checks: ks.checks };
    },
    async stop() {
      await ks.stop();
      await rabbit.stop();
      ksStore.close();
    },
  };
}

async function rates(kind: 'mosquitto' | 'rabbitmq'): Promise<void> {
  const { registry, keys, dir } = await withRegistry();
  const dep = kind === 'mosquitto' ? await mosquittoDeployment(registry) : await rabbitDeployment(registry);
  const devs = [...keys].map(([id, key]) => {
    const session = new DeviceSecureSession({ suite, devId: id, deviceKey: key, storage: new MemoryStorage() });
    return { id, session, dev: new StockDevice({ url: dep.url, id, key, suite, session, timeoutMs: 20_000 }) };
  });
  for (const d of devs) {
    await d.dev.connect();
    await d.dev.end();
  }
  const run = async (phase1: boolean) => {
    let done = 0;
    let phase1Seen = 0;
    const pid = await dep.brokerPid();
    const cpu0 = await cpuMs(pid);
    const t0 = Date.now();
    const end = t0 + SECONDS * 1000;
    await Promise.all(
      devs.map(async (d) => {
        while (Date.now() < end) {
          await until(() => dep.ready(d.id));
          if (phase1) await d.session.forgetTicket();
          const r = await d.dev.connect();
          if (r.phase1) phase1Seen++;
          await d.dev.end();
          done++;
        }
      }),
    );
    const secs = (Date.now() - t0) / 1000;
    const cpu = (await cpuMs(pid)) - cpu0;
    return { perSecond: done / secs, brokerCpuMs: cpu / done, phase1Seen, done };
  };
  const p2 = await run(false);
  const p1 = await run(true);
  console.log(`\n## Handshakes through ${dep.name} + key service (${DEVICES} devices, ${SECONDS} s each, one machine)`);
  console.log('| handshake | per second | broker CPU per handshake | connects (phase 1 seen) |');
  console.log('|---|---|---|---|');
  console.log(`| phase 2 (token, RC, group keys) | ${p2.perSecond.toFixed(1)} | ${p2.brokerCpuMs.toFixed(2)} ms | ${p2.done} (${p2.phase1Seen}) |`);
  console.log(`| phase 1 + first phase 2 + group keys | ${p1.perSecond.toFixed(1)} | ${p1.brokerCpuMs.toFixed(2)} ms | ${p1.done} (${p1.phase1Seen}) |`);
  console.log(`key service: ${JSON.stringify(dep.counters)}`);
  await dep.stop();
  await registry.close();
  await rm(dir, { recursive: true, force: true });
}

function mosquittoVersion(): string {
  try {
    execFileSync('/usr/sbin/mosquitto', ['-h'], { stdio: 'pipe' });
  } catch (e) {
    return /mosquitto version (\S+)/.exec(String((e as { stdout?: Buffer }).stdout))?.[1] ?? '?';
  }
  return '?';
}

/** A dynamic-security client as the plugin stores it (salted PBKDF2-SHA512). */
function dynsecClient(username: string, rolename: string): Record<string, unknown> {
  const salt = randomBytes(12);
  const hash = pbkdf2Sync(randomBytes(16).toString('hex'), salt, 101, 64, 'sha512');
  return { username, clientid: username, password: hash.toString('base64'), salt: salt.toString('base64'), iterations: 101, roles: [{ rolename }] };
}

async function rewriteCost(fleet: number): Promise<{ fleet: number; jsonBytes: number; msPerChange: number; cpuMsPerChange: number; loadMs: number; batchedMsPerChange: number; batchedCpuMsPerChange: number }> {
  let broker: RunningDynsecMosquitto | undefined = await startDynsecMosquitto();
  const { configFile, adminUser, adminPassword } = broker;
  const json = JSON.parse(await readFile(configFile, 'utf8')) as { clients: unknown[]; roles: unknown[] };
  const role = BUILTIN_ROLES.find((r) => r.name === 'sensor')!;
  for (let i = 0; i < fleet; i++) {
    const id = `dev${String(i).padStart(6, '0')}`;
    json.clients.push(dynsecClient(id, principalRole(id)), dynsecClient(bootUsername(id), bootRole(id)));
    json.roles.push({ rolename: principalRole(id), acls: principalAcls({ id, kind: 'device', role }) });
    json.roles.push({
      rolename: bootRole(id),
      acls: [
        { acltype: 'publishClientSend', topic: upTopic(id), allow: true },
        { acltype: 'subscribePattern', topic: downTopic(id), allow: true },
        { acltype: 'publishClientReceive', topic: downTopic(id), allow: true },
      ],
    });
  }
  // restart on the generated file (the running broker would overwrite it on its next change)
  await broker.kill();
  await writeFile(configFile, JSON.stringify(json));
  const jsonBytes = (await stat(configFile)).size;
  const t0 = Date.now();
  await broker.start();
  const loadMs = Date.now() - t0;
  const c = await mqtt.connectAsync(broker.url, { protocolVersion: 4, username: adminUser, password: adminPassword, reconnectPeriod: 0 });
  await c.subscribeAsync('$CONTROL/dynamic-security/v1/response');
  let pending: (() => void) | undefined;
  c.on('message', () => pending?.());
  const N = fleet >= 10_000 ? 10 : 30;
  const cpu0 = await cpuMs(broker.pid);
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const id = `dev${String(i % fleet).padStart(6, '0')}`;
    const answered = new Promise<void>((resolve) => (pending = resolve));
    c.publish('$CONTROL/dynamic-security/v1', JSON.stringify({ commands: [{ command: 'setClientPassword', username: id, password: `~${randomBytes(22).toString('base64url')}` }] }));
    await answered;
  }
  const ms = Number(process.hrtime.bigint() - t1) / 1e6 / N;
  const cpu = ((await cpuMs(broker.pid)) - cpu0) / N;
  // the same N changes in one message: one response for all of them
  const commands = Array.from({ length: N }, (_, i) => ({ command: 'setClientPassword', username: `dev${String((i + N) % fleet).padStart(6, '0')}`, password: `~${randomBytes(22).toString('base64url')}` }));
  const cpu1 = await cpuMs(broker.pid);
  const t2 = process.hrtime.bigint();
  const answered = new Promise<void>((resolve) => (pending = resolve));
  c.publish('$CONTROL/dynamic-security/v1', JSON.stringify({ commands }));
  await answered;
  const batchedMs = Number(process.hrtime.bigint() - t2) / 1e6 / N;
  const batchedCpu = ((await cpuMs(broker.pid)) - cpu1) / N;
  await c.endAsync(true);
  await broker.stop();
  broker = undefined;
  return { fleet, jsonBytes, msPerChange: ms, cpuMsPerChange: cpu, loadMs, batchedMsPerChange: batchedMs, batchedCpuMsPerChange: batchedCpu };
}

async function main(): Promise<void> {
  if (ONLY.includes('mosquitto')) await rates('mosquitto');
  if (ONLY.includes('rabbitmq')) await rates('rabbitmq');
  if (!ONLY.includes('dynsec')) return;
  console.log('\n## Dynamic security: one credential change (= one phase-2 reconnect, §15.3) against fleet size');
  console.log('| principals | JSON | broker load at start | ms per change (request → response) | Mosquitto CPU per change | changes/s at most (1 / the larger of the two) | fleet at one reconnect per minute | per 10 minutes | batched: ms per change | batched: CPU per change | batched / one per message (CPU) |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const f of FLEETS) {
    const r = await rewriteCost(f);
    const maxRate = 1000 / Math.max(r.cpuMsPerChange, r.msPerChange);
    console.log(
      `| ${f} | ${(r.jsonBytes / 1e6).toFixed(2)} MB | ${r.loadMs} ms | ${r.msPerChange.toFixed(2)} | ${r.cpuMsPerChange.toFixed(2)} ms | ${maxRate.toFixed(0)} | ${Math.floor(maxRate * 60)} | ${Math.floor(maxRate * 600)} | ${r.batchedMsPerChange.toFixed(2)} | ${r.batchedCpuMsPerChange.toFixed(2)} ms | ${(r.batchedCpuMsPerChange / r.cpuMsPerChange).toFixed(2)} |`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
