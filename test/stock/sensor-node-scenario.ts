/**
 * The sensor-node app (firmware/app/sensor-node.ts) on a stock broker: the
 * same SensorNode, with the link its device config picks for
 * `broker.flavour: "stock"` (StockSecureLink, docs/protocol.md §15), against
 * the in-memory stand-in for "stock broker + key service"
 * (stock-stand-in.ts). Manual clock, no sockets: the same scenario runs under
 * Node and inside the XS engine (test/xs/entries/stock.entry.ts).
 *
 *  1. cold boot: phase 1 over PUBLISH, then phase 2; readings end to end; deep sleep
 *  2. while it sleeps, an app sends an end-to-end command (queued by the
 *     node's persistent session) and someone with broker access publishes a
 *     plaintext one on the same topic
 *  3. timer wake: phase 2; the queued command arrives before the group keys,
 *     is held, opened and applied (the next sleep is longer); the plaintext
 *     one is dropped
 *  4. timer wake with a PUBACK lost: the node reconnects (phase 2), the
 *     outbox sends the envelope again, the app's replay window drops the
 *     copy: every reading is read exactly once
 */
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { SensorNode } from '../../firmware/app/sensor-node.js';
import { StockConnector } from '../../firmware/app/stock-connector.js';
import { StockSecureLink } from '../../firmware/app/stock-link.js';
import { counterBlockFor } from '../../firmware/app/device-link.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { GroupKeyring, deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { deriveDeviceKeys } from '../../firmware/secure/key-schedule.js';
import { bootPassword } from '../../firmware/secure/stock.js';
import { FakeNetwork, FakeSensor, FakeSleep, ManualTimer, MapStorage, seededRandom } from '../app/fakes.js';
import { StockStandIn } from './stock-stand-in.js';

const DEV = 'stnode01';
const APP = 'stapp01';

export interface WakeSummary {
  phases: (1 | 2)[];
  stats: { boots: number; phase1: number; phase2: number; published: number; commands: number; badCommands: number; failures: number };
  intervalS: number;
  sleepRequests: number[];
  /** Messages the node's link dropped, by code. */
  dropped: string[];
}

export interface StockNodeResult {
  wakes: WakeSummary[];
  /** What the app read, as "publisher|topic|n". */
  read: string[];
  /** Readings the node handed to its link, as "topic|n". */
  sent: string[];
  /** What the app's checks refused (REPLAY: a resent copy of a reading it had). */
  appDropped: string[];
  refusedLogins: number;
  /** A reading value or unit appeared in plaintext on the wire. */
  plaintextOnWire: boolean;
}

export async function stockSensorNodeScenario(suite: CryptoSuite, keyDevice: Uint8Array, keyApp: Uint8Array): Promise<StockNodeResult> {
  const keys = new Map([
    [DEV, keyDevice],
    [APP, keyApp],
  ]);
  const broker = new StockStandIn(suite, keys, [
    { filter: `sensors/${DEV}/#`, writers: [DEV], readers: [APP] },
    { filter: `cmd/${DEV}/#`, writers: [APP], readers: [DEV] },
  ]);
  const timer = new ManualTimer();
  const res: StockNodeResult = { wakes: [], read: [], sent: [], appDropped: [], refusedLogins: 0, plaintextOnWire: false };

  const appKeys = deriveDeviceKeys(suite, keyApp, APP);
  const app = new StockConnector({
    id: APP,
    session: new DeviceSecureSession({ suite, devId: APP, deviceKey: keyApp, storage: new MemoryStorage() }),
    keyring: new GroupKeyring({ suite, id: APP, keyServiceKey: deriveKeyServiceKey(suite, keyApp, APP) }),
    bootPassword: bootPassword(suite, appKeys.authKey, APP),
    open: broker.open,
    timer,
    onMessage: (m) => res.read.push(`${m.publisher}|${m.topic}|${JSON.parse(utf8Decode(m.plaintext)).n}`),
    onDropped: (_t, e) => res.appDropped.push(e.code),
  });
  await app.connect();
  await app.subscribe('sensors/#');

  const flash = new MapStorage();
  const devKeys = deriveDeviceKeys(suite, keyDevice, DEV);
  const boot = bootPassword(suite, devKeys.authKey, DEV);
  const wake = async (cause: 'cold' | 'timer'): Promise<WakeSummary> => {
    // a new power-on: RAM (session object, keyring, outbox) is new, flash is kept
    const phases: (1 | 2)[] = [];
    const dropped: string[] = [];
    const session = new DeviceSecureSession({ suite, devId: DEV, deviceKey: keyDevice, storage: flash, counterBlock: counterBlockFor('stock') });
    const link = new StockSecureLink({
      id: DEV,
      session,
      keyring: new GroupKeyring({ suite, id: DEV, keyServiceKey: deriveKeyServiceKey(suite, keyDevice, DEV) }),
      bootPassword: boot,
      open: broker.open,
      timer,
      onReady: (p) => phases.push(p),
      onDropped: (_t, e) => dropped.push(e.code),
    });
    const sent = res.sent;
    const sleep = new FakeSleep(true, cause);
    const node = new SensorNode({
      devId: DEV,
      link: {
        open: (ev) => link.open(ev),
        publish: (topic, payload, qos) => {
          sent.push(`${topic}|${JSON.parse(utf8Decode(payload)).n}`);
          return link.publish(topic, payload, qos);
        },
        subscribe: (f) => link.subscribe(f),
        close: () => link.close(),
        unacknowledged: () => link.unacknowledged(),
      },
      network: new FakeNetwork(),
      sensor: new FakeSensor(),
      sleep,
      storage: flash,
      timer,
      random: seededRandom(),
      listenMs: 1000,
      stepTimeoutMs: 5000,
      retry: { attempts: 4, baseMs: 500, maxMs: 4000 },
      giveUpSleepMs: 600_000,
    });
    const done = node.start();
    await timer.runUntil(() => node.state === 'sleeping' || node.state === 'stopped', 60_000);
    await done;
    const s = node.stats;
    return {
      phases,
      stats: { boots: s.boots, phase1: s.phase1, phase2: s.phase2, published: s.published, commands: s.commands, badCommands: s.badCommands, failures: s.failures },
      intervalS: node.currentSettings.intervalS,
      sleepRequests: sleep.requests,
      dropped,
    };
  };

  res.wakes.push(await wake('cold'));
  // while the node sleeps: an end-to-end command from the app, and a plaintext one from someone with broker access
  await app.publish(`cmd/${DEV}/interval`, utf8Encode('120'), 1);
  broker.inject(`cmd/${DEV}/sample`, utf8Encode(''));
  res.wakes.push(await wake('timer'));
  broker.dropPubacks = 1;
  res.wakes.push(await wake('timer'));
  await app.close();
  res.refusedLogins = broker.refusedLogins;
  const needles = [utf8Encode('"v":'), utf8Encode('"u":')];
  res.plaintextOnWire = broker.wire.some((b) => needles.some((needle) => b.some((_, i) => needle.every((x, j) => b[i + j] === x))));
  return res;
}
