/**
 * `mqsec sim --flavour stock`: a fleet of simulated nodes on a stock broker
 * (docs/protocol.md §15) with the key service beside it. The nodes are
 * provisioned into the key service's data directory (which it follows each
 * second), wake, connect (phase 1 over PUBLISH the first time, phase 2 after),
 * publish readings sealed end to end under group keys (QoS 1), and sleep; an
 * app principal of the same run, on the app SDK (`connectApp` with
 * `flavour: 'stock'`), subscribes and counts each reading exactly once. At
 * the end the run's principals are removed again.
 */
import { MemoryStorage } from '../firmware/core/memory-storage.js';
import { utf8Decode, utf8Encode } from '../firmware/core/utf8.js';
import type { CryptoSuite } from '../firmware/crypto/suite.js';
import { DeviceSecureSession } from '../firmware/secure/device.js';
import { SqliteRegistry } from '../broker/registry/registry.js';
import { connectApp, type MqsecApp } from '../sdk/app.js';
import { StockDevice } from './stock-device.js';

export interface StockFleetOptions {
  /** mqtt://HOST:PORT of the stock broker. */
  url: string;
  /** The key service's data directory (registry + its store). */
  dataDir: string;
  devices: number;
  durationS: number;
  /** Seconds between a node's wakes. Default 2. */
  periodS?: number;
  /** Readings per wake. Default 2. */
  readings?: number;
  suite: CryptoSuite;
  /** Wait this long at the end for readings still on their way. Default 3 s. */
  quiesceS?: number;
  onProgress?(s: StockFleetResult): void;
}

export interface StockFleetResult {
  devices: number;
  wakes: number;
  /** Wakes that needed a phase 1 first (the first of each node; again after a refused token, §15.3). */
  phase1: number;
  /** Connects that failed and were retried at the next wake. */
  refused: number;
  sent: number;
  verified: number;
  duplicates: number;
  lost: number;
}

const ROLE = 'simstock';
const APP_ROLE = 'simstockapp';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runStockFleet(o: StockFleetOptions): Promise<StockFleetResult> {
  const registry = SqliteRegistry.open(o.dataDir);
  const prefix = `sk${Date.now().toString(36).slice(-4)}`;
  const ids = Array.from({ length: o.devices }, (_, i) => `${prefix}-${String(i).padStart(4, '0')}`);
  const appId = `${prefix}-app`;
  const keys = new Map<string, Uint8Array>();
  const r: StockFleetResult = { devices: o.devices, wakes: 0, phase1: 0, refused: 0, sent: 0, verified: 0, duplicates: 0, lost: 0 };
  const sent = new Set<string>();
  const seen = new Set<string>();
  const nodes: StockDevice[] = [];
  let app: MqsecApp | undefined;
  try {
    if (!(await registry.getRole(ROLE))) {
      await registry.addRole(ROLE);
      await registry.addRule(ROLE, 'publish', 'sim/%u/#', 'e2e');
    }
    if (!(await registry.getRole(APP_ROLE))) {
      await registry.addRole(APP_ROLE);
      await registry.addRule(APP_ROLE, 'subscribe', 'sim/#');
    }
    for (const id of ids) keys.set(id, (await registry.addDevice(id, ROLE)).key);
    keys.set(appId, (await registry.addDevice(appId, APP_ROLE)).key);
    const make = (id: string) =>
      new StockDevice({
        url: o.url,
        id,
        key: keys.get(id)!,
        suite: o.suite,
        session: new DeviceSecureSession({ suite: o.suite, devId: id, deviceKey: keys.get(id)!, storage: new MemoryStorage() }),
        timeoutMs: 10_000,
      });
    // the key service follows the registry each second: retry until it knows the new principals
    app = await retry(30, () => connectApp({ url: o.url, id: appId, key: keys.get(appId)!, flavour: 'stock', suite: o.suite, keyTimeoutMs: 10_000 }));
    app.on('message', (topic, payload, info) => {
      const k = `${info.publisher}|${topic}|${utf8Decode(payload)}`;
      if (seen.has(k)) r.duplicates++;
      else if (sent.has(k)) {
        seen.add(k);
        r.verified++;
      }
    });
    await app.subscribe('sim/#');
    const end = Date.now() + o.durationS * 1000;
    const period = (o.periodS ?? 2) * 1000;
    await Promise.all(
      ids.map(async (id, i) => {
        const node = make(id);
        nodes.push(node);
        await sleep((i * period) / ids.length); // spread the wakes
        let n = 0;
        let first = true;
        while (Date.now() < end) {
          const woke = Date.now();
          try {
            const c = first ? await retry(30, () => node.connect()) : await node.connect();
            first = false;
            r.wakes++;
            if (c.phase1) r.phase1++;
            for (let k = 0; k < (o.readings ?? 2); k++) {
              const topic = `sim/${id}/t`;
              const text = `${n++}`;
              sent.add(`${id}|${topic}|${text}`);
              r.sent++;
              await node.publish(topic, utf8Encode(text), 1);
            }
            await node.end();
          } catch {
            r.refused++;
            await node.end().catch(() => undefined);
          }
          o.onProgress?.({ ...r, lost: r.sent - r.verified });
          await sleep(Math.max(0, period - (Date.now() - woke)));
        }
      }),
    );
    const quiet = Date.now() + (o.quiesceS ?? 3) * 1000;
    while (r.verified < r.sent && Date.now() < quiet) await sleep(50);
    r.lost = r.sent - r.verified;
    return r;
  } finally {
    await app?.end().catch(() => undefined);
    for (const id of [...ids, appId]) if (await registry.getDevice(id)) await registry.removeDevice(id);
    await registry.close();
  }
}

async function retry<T>(tries: number, f: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await f();
    } catch (e) {
      if (i + 1 >= tries) throw e;
      await sleep(250);
    }
  }
}
