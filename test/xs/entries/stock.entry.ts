import { exposeToHost, hostRandom } from '../guest.js';
import { createNobleSuite } from '../../../firmware/crypto/noble.js';
import { bootPassword, bootUsername, downTopic, idOfUpTopic, isUpMessage, protocolTopicOfDown, upTopic } from '../../../firmware/secure/stock.js';
import { parseDeviceConfig } from '../../../firmware/app/device-config.js';
import { connectorScenario } from '../../stock/connector-scenario.js';
import { stockSensorNodeScenario } from '../../stock/sensor-node-scenario.js';

const suite = createNobleSuite(hostRandom);

function codeOf(f: () => unknown): unknown {
  try {
    return { ok: f() };
  } catch (e: any) {
    return { code: e.code };
  }
}

exposeToHost({
  bootPassword: (key: Uint8Array, id: string) => codeOf(() => bootPassword(suite, key, id)),
  names: (id: string) => codeOf(() => ({ up: upTopic(id), down: downTopic(id), boot: bootUsername(id) })),
  idOfUpTopic: (t: string) => idOfUpTopic(t) ?? null,
  route: (b: Uint8Array) => protocolTopicOfDown(b) ?? null,
  isUp: (b: Uint8Array) => isUpMessage(b),
  config: (c: unknown) => codeOf(() => parseDeviceConfig(c)),
  connectorScenario: (k1: Uint8Array, k2: Uint8Array) => connectorScenario(suite, k1, k2),
  stockSensorNode: (k1: Uint8Array, k2: Uint8Array) => stockSensorNodeScenario(suite, k1, k2),
});
