/**
 * The one place where the broker flavour of a device config (`broker.flavour`,
 * docs/protocol.md §15.1) makes a difference: it picks the SecureLink the
 * sensor node (sensor-node.ts) runs on. The node itself, its readings,
 * outbox, sleep and commands are the same for both.
 *
 *  - `mqsec` (default): SecureMqttLink, the secure glue inside the broker's
 *    CONNECT hook (§5–§8), group keys when a keyring is given (§14).
 *  - `stock`: StockSecureLink, phase 1 over PUBLISH and phase 2 with a
 *    one-connection token on a persistent session (§15.2, §15.3), every
 *    device topic end to end through the key service (§14), so a keyring is
 *    required.
 */
import { fail } from '../core/errors.js';
import type { Endpoint, Log } from '../core/platform.js';
import type { CryptoSuite } from '../crypto/suite.js';
import type { MqttClientServices } from '../mqtt/client.js';
import type { DeviceSecureSession } from '../secure/device.js';
import type { GroupKeyring } from '../secure/group.js';
import { deriveDeviceKeys } from '../secure/key-schedule.js';
import { bootPassword } from '../secure/stock.js';
import { createFirmwareMqttClient } from './firmware-mqtt.js';
import type { SecureLink } from './ports.js';
import { SecureMqttClient } from './secure-mqtt.js';
import { SecureMqttLink, type ConnectableMqttClient, type GlueHooks } from './secure-link.js';
import { StockSecureLink } from './stock-link.js';
import { firmwareStockOpener } from './stock-transport.js';

export interface DeviceLinkOptions {
  id: string;
  /** `broker.flavour` of the device config. */
  flavour?: 'mqsec' | 'stock';
  endpoint: Endpoint;
  suite: CryptoSuite;
  session: DeviceSecureSession;
  /** The member's group keys (§14); required on a stock broker. */
  keyring?: GroupKeyring;
  /** K of the device, for the bootstrap password of a stock broker (§15.2); not kept. */
  deviceKey: Uint8Array;
  services: MqttClientServices;
  log?: Log;
  keepaliveSec?: number;
  connectTimeoutMs?: number;
  /** A connection is usable (keys in place). */
  onReady?(phase: 1 | 2): void;
  /** mqsec flavour only: another MQTT client under the glue (the Moddable SDK's `mqtt` module). */
  createClient?: (hooks: GlueHooks) => ConnectableMqttClient;
}

/**
 * §15.7: the counter block (DeviceSecureSession `counterBlock`) for a flavour.
 * Dynamic security holds exactly one token, for the counter right after the
 * last connection's, so a stock device persists every counter it takes (one
 * flash write per connection, which a deep-sleep wake costs on the mqsec
 * broker too: it resumes at the stored block end) and wakes at exactly that
 * counter: phase 2. With blocks, a wake would skip to the block end, be
 * refused, and run phase 1.
 */
export function counterBlockFor(flavour: 'mqsec' | 'stock' | undefined): number | undefined {
  return flavour === 'stock' ? 1 : undefined;
}

export function createDeviceLink(o: DeviceLinkOptions): SecureLink {
  const log = o.log ?? o.services.log;
  const mqtt = { endpoint: o.endpoint, keepaliveSec: o.keepaliveSec, connectTimeoutMs: o.connectTimeoutMs };
  if (o.flavour === 'stock') {
    if (!o.keyring) fail('MALFORMED', 'a stock broker carries device topics end to end only: group keys must be on (§15.1)');
    if (o.createClient) fail('MALFORMED', 'a stock broker is reached through the firmware MQTT client');
    const keys = deriveDeviceKeys(o.suite, o.deviceKey, o.id);
    const boot = bootPassword(o.suite, keys.authKey, o.id);
    keys.authKey.fill(0);
    keys.pskKey.fill(0);
    return new StockSecureLink({
      id: o.id,
      session: o.session,
      keyring: o.keyring,
      bootPassword: boot,
      open: firmwareStockOpener(o.services, mqtt),
      timer: o.services.timer,
      log,
      timeoutMs: o.connectTimeoutMs,
      onReady: o.onReady,
    });
  }
  const onReady = o.onReady;
  return new SecureMqttLink({
    log,
    createGlue: (cb) =>
      new SecureMqttClient({
        session: o.session,
        keyring: o.keyring,
        log,
        onMessage: cb.onMessage,
        onError: cb.onError,
        onReady: (phase: 1 | 2) => {
          onReady?.(phase);
          cb.onReady(phase);
        },
      }),
    createClient: o.createClient ?? ((hooks) => createFirmwareMqttClient(o.services, mqtt, hooks)),
  });
}
