/**
 * Writes test/vectors/protocol-v1.json: fixed inputs -> exact bytes.
 * Run: npx tsx test/vectors/generate.ts   (only when the protocol changes on purpose)
 */
import { writeFileSync } from 'node:fs';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { computeVectors, type VectorInputs } from './compute.js';

const inputs: VectorInputs[] = [
  {
    devId: 'sensor01',
    deviceKey: '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
    deviceEphemeralPrivate: '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a',
    serverEphemeralPrivate: '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb',
    kx1Counter: 0,
    resumeCounter: 1,
    brokerNonce: '5dab087e624a',
    hintCounter: 1,
    topic: 'sensors/sensor01/temp',
    plaintext: '21.5',
  },
  {
    devId: 'ß-device-é',
    deviceKey: 'ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100',
    deviceEphemeralPrivate: 'a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4',
    serverEphemeralPrivate: '4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d',
    kx1Counter: 300,
    resumeCounter: 400,
    brokerNonce: '4b66e9d4d1b4',
    hintCounter: 4095,
    topic: 'a/b',
    plaintext: '',
  },
];

const fixed = (priv: Uint8Array) => createNobleSuite({ fill: (b) => b.set(priv.subarray(0, b.length)) });
const out = {
  description: 'mqsec protocol v1 test vectors (docs/protocol.md §12). Hex unless noted; *Text fields are the text form (§3).',
  suite: 1,
  vectors: inputs.map((i) => ({ inputs: i, outputs: computeVectors(fixed, i) })),
};
writeFileSync(new URL('./protocol-v1.json', import.meta.url), JSON.stringify(out, null, 2) + '\n');
console.log('wrote protocol-v1.json');
