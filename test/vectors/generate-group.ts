/**
 * Writes test/vectors/group-v1.json: fixed inputs -> exact bytes (docs/protocol.md §14.9).
 * Run: npx tsx test/vectors/generate-group.ts   (only when §14 changes on purpose)
 */
import { writeFileSync } from 'node:fs';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import { computeGroupVectors, type GroupVectorInputs } from './group-compute.js';

const inputs: GroupVectorInputs[] = [
  {
    memberId: 'sensor01',
    principalKey: '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
    groupFilter: 'sensors/sensor01/#',
    groupKey: '606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f',
    epoch: 1,
    writers: ['sensor01'],
    slot: 0,
    seq: 0,
    topic: 'sensors/sensor01/reading',
    plaintext: '{"t":21.5,"h":40.25,"p":1013.2,"n":42,"ts":1733100000,"v":3.310}',
    trafficSecret: '202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f',
    cseq: 0,
    memberNonce: '00112233445566778899aabbccddeeff',
    serviceNonce: 'ffeeddccbbaa99887766554433221100',
    seqBase: 0,
    seqLimit: 4096,
    dseq: 0,
  },
  {
    memberId: 'ops-app',
    principalKey: 'ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100',
    groupFilter: 'cmd/sensor01/#',
    groupKey: '8081828384858687888990919293949596979899a0a1a2a3a4a5a6a7a8a9aaab',
    epoch: 70000,
    writers: ['admin-app', 'ops-app'],
    slot: 1,
    seq: 20000,
    topic: 'cmd/sensor01/interval',
    plaintext: '',
    trafficSecret: '404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f',
    cseq: 300,
    memberNonce: '0f0e0d0c0b0a09080706050403020100',
    serviceNonce: '000102030405060708090a0b0c0d0e0f',
    seqBase: 16384,
    seqLimit: 20480,
    dseq: 5,
  },
];

const suite = createNobleSuite({ fill: () => { throw new Error('no randomness in vectors'); } });
const out = {
  description: 'mqsec end-to-end group keys test vectors (docs/protocol.md §14.9). Hex unless noted.',
  suite: 1,
  vectors: inputs.map((i) => ({ inputs: i, outputs: computeGroupVectors(suite, i) })),
};
writeFileSync(new URL('./group-v1.json', import.meta.url), JSON.stringify(out, null, 2) + '\n');
console.log('wrote group-v1.json');
