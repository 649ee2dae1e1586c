/**
 * XS side of bench/xs/device-work.ts: one DeviceWork on the noble suite with
 * host randomness and in-memory storage, exposed to the Node driver.
 */
import { exposeToHost, hostRandom } from '../../test/xs/guest.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { DeviceWork } from './device-work.js';

declare const performance: { now(): number };

let work: DeviceWork | undefined;
const get = (): DeviceWork => {
  if (!work) throw new Error('init first');
  return work;
};

exposeToHost({
  init(devId: string, deviceKey: Uint8Array) {
    work = new DeviceWork({
      suite: createNobleSuite(hostRandom),
      storage: new MemoryStorage(),
      clock: { now: () => performance.now() },
      devId,
      deviceKey,
    });
    return true;
  },
  forgetTicket: () => get().forgetTicket(),
  connect: () => get().connect(),
  kx2: (topic: string, payload: Uint8Array) => get().kx2(topic, payload),
  confirm: (topic: string, payload: Uint8Array) => get().confirm(topic, payload),
  sealMany: (topic: string, plaintext: Uint8Array, count: number) => get().sealMany(topic, plaintext, count),
  openMany: (topic: string, envelopes: Uint8Array[]) => get().openMany(topic, envelopes),
  connectionLost: () => get().connectionLost(),
});
