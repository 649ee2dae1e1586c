/**
 * XS side of test/xs/mqtt-codec.xs.test.ts: the firmware MQTT codec and client
 * running inside the real XS engine.
 */
import { exposeToHost } from '../guest.js';
import { decodePacket, encodePacket, MqttParser, type MqttPacket } from '../../../firmware/mqtt/codec.js';
import { runClientScenario } from '../../mqtt/client-scenario.js';

function codeOf(e: unknown): { code: string } {
  return { code: (e as { code?: string }).code ?? `untyped: ${String(e)}` };
}

exposeToHost({
  engine: () => ({ hasProcess: typeof (globalThis as any).process !== 'undefined', hasBuffer: typeof (globalThis as any).Buffer !== 'undefined' }),
  encode: (p: MqttPacket) => {
    try {
      return { ok: encodePacket(p) };
    } catch (e) {
      return codeOf(e);
    }
  },
  decode: (b: Uint8Array) => {
    try {
      return { ok: decodePacket(b) };
    } catch (e) {
      return codeOf(e);
    }
  },
  /** Feeds the chunks in order; returns every packet, the error code if any, and the high-water mark. */
  stream: (chunks: Uint8Array[], maxPacketSize: number) => {
    const parser = new MqttParser({ maxPacketSize });
    const packets: MqttPacket[] = [];
    let maxBuffered = 0;
    try {
      for (const c of chunks) {
        packets.push(...parser.feed(c));
        maxBuffered = Math.max(maxBuffered, parser.bufferedBytes);
      }
      return { packets, maxBuffered };
    } catch (e) {
      return { packets, maxBuffered, ...codeOf(e) };
    }
  },
  clientScenario: () => runClientScenario(),
});
