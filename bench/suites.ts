/**
 * CPU per call of each crypto suite the broker could use, side by side in
 * one process and interleaved (3 rounds, medians):
 *
 *   npx tsx bench/suites.ts [--json]
 *
 * The broker takes the fastest behind the CryptoSuite interface
 * (broker/server.ts); noble is the portable reference.
 */
import { randomBytes } from 'node:crypto';
import { createNobleSuite } from '../firmware/crypto/noble.js';
import type { CryptoSuite } from '../firmware/crypto/suite.js';
import { createNodeCryptoSuite } from '../platform-node/crypto-suite.js';
import { createSodiumSuite } from '../platform-node/sodium-suite.js';
import { median } from './net.js';
import { interleavedOrder } from './stats.js';

type Op = (s: CryptoSuite) => () => void;

const key = new Uint8Array(randomBytes(32));
const nonce = new Uint8Array(randomBytes(12));
const aad = new Uint8Array(randomBytes(24));
const pt = new Uint8Array(randomBytes(64));

export const OPS: Record<string, { op: Op; n: number }> = {
  seal_64B: { op: (s) => () => void s.aeadSeal(key, nonce, pt, aad), n: 20000 },
  open_64B: {
    op: (s) => {
      const sealed = s.aeadSeal(key, nonce, pt, aad);
      return () => void s.aeadOpen(key, nonce, sealed, aad);
    },
    n: 20000,
  },
  hmac_64B: { op: (s) => () => void s.hmac(key, pt), n: 20000 },
  hkdf_expand_64B: { op: (s) => () => void s.hkdfExpand(key, aad, 64), n: 10000 },
  x25519_keypair: { op: (s) => () => void s.dhKeyPair(), n: 500 },
  x25519_dh: {
    op: (s) => {
      const a = s.dhKeyPair();
      const b = s.dhKeyPair();
      return () => void s.dh(a.privateKey, b.publicKey);
    },
    n: 500,
  },
};

export const SUITES: Record<string, () => CryptoSuite> = {
  noble: () => createNobleSuite({ fill: (b) => b.set(randomBytes(b.length)) }),
  'node:crypto': () => createNodeCryptoSuite(),
  'libsodium + node:crypto (broker)': () => createSodiumSuite(),
};

function cpuUsPerCall(f: () => void, n: number): number {
  for (let i = 0; i < Math.min(1000, n); i++) f();
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) f();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

export function measureSuites(rounds = 3): Record<string, Record<string, number>> {
  const samples: Record<string, Record<string, number[]>> = {};
  const names = Object.keys(SUITES);
  for (let r = 0; r < rounds; r++) {
    for (const name of interleavedOrder(names, r)) {
      const suite = SUITES[name]();
      for (const [op, { op: make, n }] of Object.entries(OPS)) {
        const n2 = name === 'noble' && op.startsWith('x25519') ? Math.ceil(n / 5) : n;
        ((samples[name] ??= {})[op] ??= []).push(cpuUsPerCall(make(suite), n2));
      }
    }
  }
  const out: Record<string, Record<string, number>> = {};
  for (const [name, ops] of Object.entries(samples)) {
    out[name] = {};
    for (const [op, v] of Object.entries(ops)) out[name][op] = Math.round(median(v) * 100) / 100;
  }
  return out;
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  const res = measureSuites();
  if (process.argv.includes('--json')) console.log(JSON.stringify(res));
  else {
    const ops = Object.keys(OPS);
    console.log(`| suite | ${ops.map((o) => `${o} µs`).join(' | ')} |`);
    console.log(`|---|${ops.map(() => '---').join('|')}|`);
    for (const [name, r] of Object.entries(res)) console.log(`| ${name} | ${ops.map((o) => r[o]).join(' | ')} |`);
  }
}
