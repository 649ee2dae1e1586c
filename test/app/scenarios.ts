/**
 * Sensor-node scenarios with fake platform services and a manual clock.
 * Each returns a plain JSON-able summary, so the Node test can assert on it
 * and also check that the XS engine produces the identical summary.
 */
import { SensorNode, type NodeState, type SensorNodeOptions } from '../../firmware/app/sensor-node.js';
import { FakeNetwork, FakeSecureLink, FakeSensor, FakeSleep, LoopbackBroker, ManualTimer, MapStorage, seededRandom } from './fakes.js';
import { SecureMqttLink } from '../../firmware/app/secure-link.js';
import { SecureMqttClient } from '../../firmware/app/secure-mqtt.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';

const DEV = 'dev-0001';

interface Rig {
  timer: ManualTimer;
  storage: MapStorage;
  /** The fake link, unless `extra.link` put a real one in its place. */
  link: FakeSecureLink;
  network: FakeNetwork;
  sensor: FakeSensor;
  sleep: FakeSleep;
  states: string[];
  node: SensorNode;
}

function rig(storage: MapStorage, deepSleep: boolean, extra: Partial<SensorNodeOptions> = {}, wake: 'cold' | 'timer' = 'cold'): Rig {
  const timer = new ManualTimer();
  const link = new FakeSecureLink(storage);
  const network = new FakeNetwork();
  const sensor = new FakeSensor();
  const sleep = new FakeSleep(deepSleep, wake);
  const states: string[] = [];
  const node = new SensorNode({
    devId: DEV,
    link,
    network,
    sensor,
    sleep,
    storage,
    timer,
    random: seededRandom(),
    listenMs: 1000,
    stepTimeoutMs: 5000,
    retry: { attempts: 4, baseMs: 500, maxMs: 4000 },
    giveUpSleepMs: 600_000,
    onState: (s: NodeState, d?: string) => states.push(d ? `${s}:${d}` : s),
    ...extra,
  });
  return { timer, storage, link, network, sensor, sleep, states, node };
}

function seqOf(text: string): number {
  return JSON.parse(text).n;
}

/** First boot: phase 1, readings published, deep sleep; wake: phase 2, sequence keeps increasing. */
export async function bootSleepWake() {
  const storage = new MapStorage();
  const a = rig(storage, true);
  const done = a.node.start();
  await a.timer.runUntil(() => a.node.state === 'sleeping', 10_000);
  await done;
  const firstBoot = {
    phases: a.link.phases,
    published: a.link.published,
    subscriptions: a.link.subscriptions,
    sleepRequests: a.sleep.requests,
    states: a.states,
    closes: a.link.closes,
    radioOffs: a.network.radioOffs,
    writes: storage.writes,
  };
  // The chip resets after deep sleep: a new node on the same flash.
  const b = rig(storage, true, {}, 'timer');
  const done2 = b.node.start();
  await b.timer.runUntil(() => b.node.state === 'sleeping', 10_000);
  await done2;
  const c = rig(storage, true, {}, 'timer');
  const done3 = c.node.start();
  await c.timer.runUntil(() => c.node.state === 'sleeping', 10_000);
  await done3;
  const seqs = [...a.link.published, ...b.link.published, ...c.link.published].map((p) => seqOf(p.text));
  return {
    firstBoot,
    wake: { phases: b.link.phases, states: b.states, published: b.link.published.length, sleepRequests: b.sleep.requests },
    third: { phases: c.link.phases },
    seqs,
    totalWrites: storage.writes,
  };
}

/** Commands during the listening window change and persist settings; bad commands are refused harmlessly. */
export async function commands() {
  const storage = new MapStorage();
  const a = rig(storage, true);
  const done = a.node.start();
  await a.timer.runUntil(() => a.node.state === 'listening', 10_000, 10);
  a.link.command(`cmd/${DEV}/interval`, '120');
  a.link.command(`cmd/${DEV}/interval`, '3'); // below the minimum
  a.link.command(`cmd/${DEV}/interval`, '12x');
  a.link.command(`cmd/${DEV}/reboot-into-bootloader`, '');
  a.link.command(`cmd/other-device/interval`, '10');
  a.link.command(`cmd/${DEV}/sleep`, 'x'.repeat(200));
  a.link.command(`cmd/${DEV}/sample`, '');
  await a.timer.runUntil(() => a.node.state === 'sleeping', 10_000);
  await done;
  const after = { settings: a.node.currentSettings, stats: a.node.stats, sleepRequests: a.sleep.requests, published: a.link.published.length };
  // The setting survives the reboot.
  const b = rig(storage, true, {}, 'timer');
  const done2 = b.node.start();
  await b.timer.runUntil(() => b.node.state === 'sleeping', 10_000);
  await done2;
  return { after, rebootSettings: b.node.currentSettings, rebootSleep: b.sleep.requests };
}

/** No deep sleep: stay connected, publish each interval, reconnect (phase 2) when the link drops, "sample" on demand. */
export async function waitMode() {
  const storage = new MapStorage();
  const a = rig(storage, false, { defaults: { intervalS: 30 } });
  const done = a.node.start();
  await a.timer.runUntil(() => a.node.state === 'waiting', 10_000, 10);
  const afterFirst = a.link.published.length;
  await a.timer.advance(30_000);
  await a.timer.runUntil(() => a.node.state === 'waiting', 10_000, 10);
  const afterInterval = a.link.published.length;
  a.link.drop();
  await a.timer.runUntil(() => a.link.opens === 2 && a.node.state === 'waiting', 10_000, 10);
  const afterDrop = { published: a.link.published.length, phases: a.link.phases, opens: a.link.opens };
  a.link.command(`cmd/${DEV}/sample`, '');
  await a.timer.runUntil(() => a.node.state === 'waiting' && a.link.published.length > afterDrop.published, 10_000, 10);
  const afterSample = a.link.published.length;
  a.link.command(`cmd/${DEV}/interval`, '10');
  await a.timer.advance(10_000);
  await a.timer.runUntil(() => a.node.state === 'waiting', 10_000, 10);
  const afterShorter = a.link.published.length;
  await a.node.stop();
  await done;
  return { afterFirst, afterInterval, afterDrop, afterSample, afterShorter, final: a.node.state, closes: a.link.closes, sleeps: a.sleep.requests.length };
}

/** Wi-Fi never comes up: bounded, growing, jittered backoff, then a long deep sleep (no busy loop, no hang). */
export async function wifiGivesUp() {
  const storage = new MapStorage();
  const a = rig(storage, true);
  a.network.failuresLeft = 1_000;
  const done = a.node.start();
  const slept = await a.timer.runUntil(() => a.node.state === 'sleeping', 120_000);
  await done;
  const backoffs = a.states.filter((s) => s.startsWith('backoff')).map((s) => Number(/retry in (\d+) ms/.exec(s)?.[1]));
  return { slept, attempts: a.network.connects, backoffs, sleepRequests: a.sleep.requests, stats: a.node.stats, opens: a.link.opens };
}

/** The broker refuses twice, then accepts; a connect that never answers times out instead of hanging. */
export async function connectRetries() {
  const storage = new MapStorage();
  const a = rig(storage, true);
  a.link.refuseNext = ['CONNECTION_REFUSED', 'BAD_MAC'];
  const done = a.node.start();
  await a.timer.runUntil(() => a.node.state === 'sleeping', 60_000);
  await done;
  const refused = { opens: a.link.opens, phases: a.link.phases, failures: a.node.stats.failures, published: a.link.published.length };

  const b = rig(new MapStorage(), true);
  b.link.hangOpen = true;
  const done2 = b.node.start();
  const slept = await b.timer.runUntil(() => b.node.state === 'sleeping', 300_000);
  await done2;
  return { refused, hanging: { slept, opens: b.link.opens, lastError: b.node.stats.lastError, sleepRequests: b.sleep.requests, armedTimers: b.timer.armed } };
}

/** Flash write failures do not stop the node from reporting. */
export async function storageFailure() {
  const storage = new MapStorage();
  const a = rig(storage, false);
  const done = a.node.start();
  await a.timer.runUntil(() => a.node.state === 'waiting', 10_000, 10);
  storage.failPuts = true;
  a.link.command(`cmd/${DEV}/interval`, '15');
  await a.timer.advance(15_000);
  await a.timer.runUntil(() => a.node.state === 'waiting', 10_000, 10);
  const settings = a.node.currentSettings;
  const published = a.link.published.length;
  await a.node.stop();
  await done;
  return { settings, published, state: a.node.state };
}

/** A sensor fault skips one round of readings but keeps the secure session (no reconnect churn). */
export async function sensorFailure() {
  const storage = new MapStorage();
  const a = rig(storage, false, { defaults: { intervalS: 10 } });
  a.sensor.failuresLeft = 1;
  const done = a.node.start();
  await a.timer.runUntil(() => a.node.state === 'waiting', 10_000, 10);
  const first = { published: a.link.published.length, opens: a.link.opens, sensorErrors: a.node.stats.sensorErrors };
  await a.timer.advance(10_000);
  await a.timer.runUntil(() => a.node.state === 'waiting', 10_000, 10);
  const second = { published: a.link.published.length, opens: a.link.opens, failures: a.node.stats.failures };
  await a.node.stop();
  await done;
  return { first, second };
}

export const scenarios = { bootSleepWake, commands, waitMode, wifiGivesUp, connectRetries, storageFailure, sensorFailure, wipedFlashRecovers };

/**
 * The real secure link and session against a loopback broker (docs/protocol.md
 * §5.5): two boots on one flash (phase 1, then phase 2 after the wake), then
 * the flash is wiped and the node boots from nothing. Its KX1 counter was used
 * long ago: the broker answers with a counter hint, the node jumps past it and
 * is back through phase 1 after one refused attempt, with no operator.
 */
export async function wipedFlashRecovers() {
  const key = new Uint8Array(32).fill(0x5a);
  const broker = new LoopbackBroker(key, seededRandom(0x0b0b0b0b));
  const deviceRandom = seededRandom(0x0d0d0d0d);
  const boot = async (storage: MapStorage, wake: 'cold' | 'timer') => {
    const session = new DeviceSecureSession({ suite: createNobleSuite(deviceRandom), devId: DEV, deviceKey: key, storage });
    const link = new SecureMqttLink({ createGlue: (cb) => new SecureMqttClient({ session, ...cb }), createClient: (hooks) => broker.client(hooks) });
    const r = rig(storage, true, { link }, wake);
    const done = r.node.start();
    await r.timer.runUntil(() => r.node.state === 'sleeping', 60_000);
    await done;
    return { stats: { ...r.node.stats }, counter: await broker.store.getCounter(DEV), readings: broker.readings.length };
  };
  const flash = new MapStorage();
  const first = await boot(flash, 'cold');
  const wake = await boot(flash, 'timer');
  const fresh = new MapStorage(); // wiped flash, or a new board with the same key
  const wiped = await boot(fresh, 'cold');
  const after = await boot(fresh, 'timer'); // and the recovered state survives the next sleep
  return { first, wake, wiped, after, broker: { ...broker.counts } };
}
