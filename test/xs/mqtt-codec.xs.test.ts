/**
 * The firmware MQTT codec and client inside the real XS engine, compared with
 * the same code under Node: every packet type, the malformed vectors, split
 * and coalesced streams, and a scripted client run. Also measures the
 * minified size of the codec and client bundles.
 */
import { build } from 'esbuild';
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromHex } from '../../firmware/core/bytes.js';
import { decodePacket, encodePacket, type MqttPacket } from '../../firmware/mqtt/codec.js';
import { anyPacket, normalise } from '../mqtt/arbitraries.js';
import { runClientScenario, runOnConnectScenario } from '../mqtt/client-scenario.js';
import { feedChunks } from '../mqtt/stream-scenario.js';
import { malformedVectors } from '../mqtt/vectors.js';
import { startXs, type XsWorker } from './harness.js';

let xs: XsWorker;

beforeAll(async () => {
  xs = await startXs(new URL('./entries/mqtt.entry.ts', import.meta.url));
});
afterAll(async () => {
  await xs?.close();
});


describe('MQTT codec under XS', () => {
  it('really runs inside XS', async () => {
    expect(await xs.call('engine')).toEqual({ hasProcess: false, hasBuffer: false });
  });

  it('encodes and decodes every packet type exactly like Node', async () => {
    await fc.assert(
      fc.asyncProperty(anyPacket, async (p) => {
        const bytes = encodePacket(p);
        expect(await xs.call('encode', p)).toEqual({ ok: bytes });
        const decoded = await xs.call<{ ok: MqttPacket }>('decode', bytes);
        expect(normalise(decoded.ok)).toEqual(normalise(decodePacket(bytes)));
      }),
      { numRuns: 150 },
    );
  });

  it('rejects every malformed vector with the same code as Node', async () => {
    for (const [name, hex, code] of malformedVectors) {
      expect([name, await xs.call('decode', fromHex(hex.replace(/ /g, '')))]).toEqual([name, { code }]);
    }
  });

  it('parses split and coalesced streams like Node, within the size limit', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof({ weight: 4, arbitrary: anyPacket.map(encodePacket) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }) }), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.array(fc.nat(), { maxLength: 8 }),
        fc.integer({ min: 2, max: 400 }),
        async (parts, cuts, max) => {
          const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          let o = 0;
          for (const p of parts) {
            all.set(p, o);
            o += p.length;
          }
          const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
          const chunks: Uint8Array[] = [];
          let prev = 0;
          for (const at of [...points, all.length]) {
            chunks.push(all.slice(prev, at));
            prev = at;
          }
          const want = feedChunks(chunks, max);
          const got = await xs.call<typeof want>('stream', chunks, max);
          expect(got.maxBuffered).toBeLessThanOrEqual(max);
          expect({ ...got, packets: got.packets.map(normalise) }).toEqual({ ...want, packets: want.packets.map(normalise) });
        },
      ),
      { numRuns: 100 },
    );
  });

  it('delivers the valid packets that precede a malformed one, then fails, however the stream is cut', async () => {
    const definite = malformedVectors.filter(([, , code]) => code !== 'TRUNCATED');
    await fc.assert(
      fc.asyncProperty(
        fc.array(anyPacket.map(encodePacket), { maxLength: 4 }),
        fc.constantFrom(...definite),
        fc.array(fc.nat(), { maxLength: 6 }),
        async (valid, [, hex, code], cuts) => {
          const bad = fromHex(hex.replace(/ /g, ''));
          const all = new Uint8Array([...valid.flatMap((v) => [...v]), ...bad]);
          const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
          const chunks: Uint8Array[] = [];
          let prev = 0;
          for (const at of [...points, all.length]) {
            chunks.push(all.slice(prev, at));
            prev = at;
          }
          const got = await xs.call<ReturnType<typeof feedChunks>>('stream', chunks, 2 ** 30);
          expect(got.code).toBe(code);
          expect(got.packets.map(normalise)).toEqual(valid.map((v) => normalise(decodePacket(v))));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('sends what the app issues inside onConnect once per connection, held or not, like Node', async () => {
    for (const held of [false, true]) {
      const want = await runOnConnectScenario(held);
      expect(await xs.call<string[]>('onConnectScenario', held)).toEqual(want);
      // Within one connection (after release when held), no packet id goes out twice.
      const sections = want.join('\n').split(/^# /m).filter((x) => x && !x.split('\n')[0].endsWith('held'));
      for (const section of sections) {
        const ids = section.split('\n').flatMap((l) => l.match(/#\d+/g) ?? []);
        expect(new Set(ids).size).toBe(ids.length);
      }
      expect(want).toContain('publish hello/1 #3 dup=true');
    }
  });

  it('refuses wrongly typed input to every encoder with an MqsecError', async () => {
    const got = await xs.call<{ cases: number; untyped: string[] }>('wrongTypes');
    expect(got.cases).toBeGreaterThan(1000);
    expect(got.untyped).toEqual([]);
  });

  it('runs the scripted client scenario with the same transcript as Node', async () => {
    const want = await runClientScenario();
    const got = await xs.call<string[]>('clientScenario');
    expect(got).toEqual(want);
    // The transcript is meaningful: it reconnected, re-sent through onResend and ended cleanly.
    expect(want).toContain('resend a/x dup=true');
    expect(want).toContain('error UNKNOWN_TYPE');
    expect(want.at(-2)).toBe('state closed');
  });
});

describe('bundle size', () => {
  async function minified(entry: string): Promise<{ bytes: number; gzip: number }> {
    const r = await build({
      entryPoints: [fileURLToPath(new URL(entry, import.meta.url))],
      bundle: true,
      minify: true,
      write: false,
      format: 'esm',
      platform: 'neutral',
      target: 'es2022',
      logLevel: 'silent',
    });
    const text = r.outputFiles[0].contents;
    return { bytes: text.length, gzip: gzipSync(text).length };
  }

  it('codec and client stay small enough for an ESP32 (measured and printed)', async () => {
    const codec = await minified('../../firmware/mqtt/codec.ts');
    const client = await minified('../../firmware/mqtt/client.ts');
    console.log(`firmware/mqtt/codec.ts minified ${codec.bytes} B (gzip ${codec.gzip} B); client.ts incl. codec ${client.bytes} B (gzip ${client.gzip} B)`);
    expect(codec.bytes).toBeLessThan(16 * 1024);
    expect(client.bytes).toBeLessThan(32 * 1024);
  });
});
