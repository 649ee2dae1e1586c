/**
 * Module `firmware/platform/moddable/board-sensor`: each board's manifest
 * fragment maps it to sensor-sht3x.ts or sensor-system.ts (so only the
 * drivers a board has are built). This declaration types the import in main.ts.
 */
import type { Sensor } from '../../app/ports.js';
export declare function createSensor(): Sensor;
