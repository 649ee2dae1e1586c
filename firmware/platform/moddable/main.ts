/**
 * Device entry (manifest.json `creation.main`): wires the Moddable platform
 * services, the provisioning data, the secure session and the sensor-node
 * state machine, then starts it. Everything with logic lives in SDK-free
 * modules tested under Node and XS; this file only connects them.
 *
 * Board settings come from the board's manifest fragment (`config.mqsec`,
 * boards/<board>/manifest.json); identity, key, broker and Wi-Fi from the
 * generated `mqsec/device-config` module (tools/device-config.ts).
 *
 * Lines starting with "mqsec " on the console are a stable, machine-read
 * progress report (the desktop run and the hardware-in-the-loop check read
 * them); they never contain key material.
 */
import config from 'mc/config';
import deviceConfig from 'mqsec/device-config';
import StockClient from 'mqtt';
import { sleepNative } from './board-sleep.js';
import { createSensor } from './board-sensor.js';
import { cryptoSelfTest } from '../../crypto/self-test.js';
import { createNativeSuite } from './native-suite.js';
import { DeviceSecureSession } from '../../secure/device.js';
import { GroupKeyring, deriveKeyServiceKey } from '../../secure/group.js';
import { SensorNode } from '../../app/sensor-node.js';
import { counterBlockFor, createDeviceLink } from '../../app/device-link.js';
import { parseDeviceConfig, deviceKeyBytes } from '../../app/device-config.js';
import { asMqsecError } from '../../core/errors.js';
import Instrumentation from 'instrumentation';
import { createModdablePlatform, traceLog } from './services.js';
import { NativeSleep, WifiNetwork } from './device-ports.js';
import { StockMqttAdapter } from './stock-mqtt.js';
import type { ConnectableMqttClient } from '../../app/secure-link.js';

interface BoardConfig {
  board?: string;
  intervalS?: number;
  sleepMode?: 'deep' | 'wait';
  /** 'firmware' (default): mqsec's MQTT client, QoS 1. 'stock': the SDK's `mqtt` module, QoS 0. */
  client?: 'firmware' | 'stock';
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  listenMs?: number;
  /**
   * End-to-end topic keys (docs/protocol.md §14), default on: after every
   * session the node asks the key service for its group keys and learns from
   * the answer which of its topics are end to end. Off only for a broker
   * without a key service (then every topic is hop by hop).
   */
  groupKeys?: boolean;
}

/** XS heap figures, in instrumented builds only (mcconfig -i or -d); release builds report nothing. */
function traceHeap(): void {
  // Names differ between hosts ("XS Slot Heap Used" in the typings, "Slot used" on the desktop build).
  const read = (...names: string[]) => {
    for (const n of names) {
      const v = Instrumentation.get(Instrumentation.map(n as 'XS Slot Heap Used'));
      if (v !== undefined) return v;
    }
    return undefined;
  };
  const slots = read('XS Slot Heap Used', 'Slot used');
  const chunks = read('XS Chunk Heap Used', 'Chunk used');
  if (slots !== undefined && chunks !== undefined) trace(`mqsec heap slots=${slots} chunks=${chunks}\n`);
}

function start(): void {
  const board: BoardConfig = (config.mqsec ?? {}) as BoardConfig;
  const log = traceLog(board.logLevel ?? 'info');
  const platform = createModdablePlatform(log);
  const device = parseDeviceConfig(deviceConfig);
  const suite = createNativeSuite(platform.random);
  const sleep = new NativeSleep(sleepNative);
  if (sleep.wakeCause() === 'cold') {
    // Power-on known-answer test of the native primitives; costs one X25519, so not on every wake.
    const started = platform.clock.now();
    cryptoSelfTest(suite);
    trace(`mqsec selftest ok ${platform.clock.now() - started} ms\n`);
  }
  const session = new DeviceSecureSession({
    suite,
    devId: device.id,
    deviceKey: deviceKeyBytes(device),
    storage: platform.storage,
    clock: platform.clock,
    log,
    counterBlock: counterBlockFor(device.broker.flavour),
  });
  const stockBroker = device.broker.flavour === 'stock';
  let keyring: GroupKeyring | undefined;
  // a stock broker carries device topics end to end only (docs/protocol.md §15.1): group keys always on there
  if (board.groupKeys !== false || stockBroker) {
    const k = deviceKeyBytes(device);
    keyring = new GroupKeyring({ suite, id: device.id, keyServiceKey: deriveKeyServiceKey(suite, k, device.id) });
    k.fill(0);
  }
  let connectingSince: number | undefined;
  const endpoint = { host: device.broker.host, port: device.broker.port };
  const useStock = board.client === 'stock' && !stockBroker;

  // the broker flavour of the device config picks the link; the sensor node is the same
  const deviceKey = deviceKeyBytes(device);
  const link = createDeviceLink({
    id: device.id,
    flavour: device.broker.flavour,
    endpoint,
    suite,
    session,
    keyring,
    deviceKey,
    services: platform,
    log,
    onReady: (phase) => {
      // device-observed: from entering `connecting` (TCP connect included) to a usable session
      trace(`mqsec phase ${phase} ok ${connectingSince === undefined ? '?' : platform.clock.now() - connectingSince} ms\n`);
    },
    createClient: useStock ? (hooks): ConnectableMqttClient => new StockMqttAdapter({ Client: StockClient, host: endpoint.host, port: endpoint.port, hooks, log }) : undefined,
  });
  deviceKey.fill(0);

  const node = new SensorNode({
    devId: device.id,
    link,
    network: new WifiNetwork(device.wifi),
    sensor: createSensor(),
    sleep,
    storage: platform.storage,
    timer: platform.timer,
    random: platform.random,
    log,
    defaults: { intervalS: board.intervalS ?? 60, sleepMode: board.sleepMode ?? 'deep' },
    listenMs: board.listenMs ?? 1500,
    onState: (state, detail) => {
      if (state === 'connecting') connectingSince = platform.clock.now();
      trace(`mqsec state ${state}${detail ? ' ' + detail : ''}\n`);
      if (state === 'boot' || state === 'waiting' || state === 'sleeping') traceHeap();
    },
  });
  trace(`mqsec boot ${device.id} board=${board.board ?? 'unknown'} client=${useStock ? 'stock' : 'firmware'} broker=${stockBroker ? 'stock' : 'mqsec'}\n`);
  node.start().then(() => trace(`mqsec stopped ${node.state}\n`));
}

try {
  start();
} catch (e) {
  // A bad provisioning file is the usual cause: say so on the console and do nothing else.
  const err = asMqsecError(e);
  trace(`mqsec fatal ${err.code}: ${err.message}\n`);
}
