/**
 * The firmware codec against mqtt-packet (the codec MQTT.js and Aedes use):
 * both directions, on random valid packets of every type.
 */
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { decodePacket, encodePacket, MqttParser } from '../../firmware/mqtt/codec.js';
import { anyPacket, fromMqttPacket, normalise, toMqttPacket } from './arbitraries.js';
import { feedAll } from './stream-scenario.js';

/** Parses one buffer with mqtt-packet, returning every packet and error it reports. */
function parseWithMqttPacket(bytes: Uint8Array): { packets: Record<string, unknown>[]; errors: Error[] } {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: Record<string, unknown>[] = [];
  const errors: Error[] = [];
  parser.on('packet', (p) => packets.push(p as unknown as Record<string, unknown>));
  parser.on('error', (e) => errors.push(e));
  parser.parse(Buffer.from(bytes));
  return { packets, errors };
}

describe('firmware codec vs mqtt-packet', () => {
  it('mqtt-packet decodes every packet the firmware encodes to the same packet', () => {
    fc.assert(
      fc.property(anyPacket, (p) => {
        const { packets, errors } = parseWithMqttPacket(encodePacket(p));
        expect(errors).toEqual([]);
        expect(packets).toHaveLength(1);
        expect(normalise(fromMqttPacket(packets[0] as never))).toEqual(normalise(p));
      }),
      { numRuns: 400 },
    );
  });

  it('the firmware decodes every packet mqtt-packet generates, and both give the same bytes', () => {
    fc.assert(
      fc.property(anyPacket, (p) => {
        const theirs = new Uint8Array(mqttPacket.generate(toMqttPacket(p) as never));
        expect(normalise(decodePacket(theirs))).toEqual(normalise(p));
        expect(Buffer.from(encodePacket(p)).toString('hex')).toBe(Buffer.from(theirs).toString('hex'));
      }),
      { numRuns: 400 },
    );
  });

  it('a stream of mqtt-packet packets, chopped anywhere, decodes to the same sequence', () => {
    fc.assert(
      fc.property(fc.array(anyPacket, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (ps, cuts) => {
        const stream = Buffer.concat(ps.map((p) => mqttPacket.generate(toMqttPacket(p) as never)));
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        const parser = new MqttParser({ maxPacketSize: 1 << 20 });
        const out = [];
        let prev = 0;
        for (const at of [...points, stream.length]) {
          out.push(...feedAll(parser, new Uint8Array(stream.subarray(prev, at))));
          prev = at;
        }
        expect(out.map(normalise)).toEqual(ps.map(normalise));
        expect(parser.bufferedBytes).toBe(0);
      }),
      { numRuns: 200 },
    );
  });
});
