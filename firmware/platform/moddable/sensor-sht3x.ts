/** Module `firmware/platform/moddable/board-sensor` on boards with an SHT3x on I2C (pins from the board's config fragment). */
import config from 'mc/config';
import SHT3x from 'embedded:sensor/Humidity-Temperature/SHT3x';
import type { Sensor } from '../../app/ports.js';
import { Sht3xSensor } from './device-ports.js';

export function createSensor(): Sensor {
  const i2c = (config.mqsec?.sensor ?? {}) as { data?: number; clock?: number; hz?: number; address?: number };
  const sensor: Record<string, unknown> = { ...device.I2C.default, io: device.io.I2C };
  if (i2c.data !== undefined) sensor.data = i2c.data;
  if (i2c.clock !== undefined) sensor.clock = i2c.clock;
  sensor.hz = i2c.hz ?? 100_000;
  sensor.address = i2c.address ?? 0x44;
  return new Sht3xSensor(new SHT3x({ sensor }));
}
