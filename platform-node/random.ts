/**
 * The platform's Random service on Node: OpenSSL's CSPRNG through node:crypto.
 * One definition for the broker's crypto suite and the host simulator's devices.
 */
import { randomFillSync } from 'node:crypto';
import type { Random } from '../firmware/core/platform.js';

export const nodeRandom: Random = {
  fill: (bytes) => {
    randomFillSync(bytes);
  },
};
