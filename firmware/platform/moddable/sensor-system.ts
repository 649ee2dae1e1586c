/** Module `firmware/platform/moddable/board-sensor` on boards without a sensor and on the desktop build: uptime and RSSI. */
import type { Sensor } from '../../app/ports.js';
import { SystemSensor } from './device-ports.js';

export function createSensor(): Sensor {
  return new SystemSensor();
}
