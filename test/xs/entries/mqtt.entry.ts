/**
 * XS side of test/xs/mqtt-codec.xs.test.ts: the firmware MQTT codec and client
 * running inside the real XS engine.
 */
import { exposeToHost } from '../guest.js';
import { decodePacket, encodePacket, type MqttPacket } from '../../../firmware/mqtt/codec.js';
import { feedChunks } from '../../mqtt/stream-scenario.js';
import { runClientScenario, runOnConnectScenario } from '../../mqtt/client-scenario.js';
import { untypedEncodeFailures, wrongTypeCaseCount } from '../../mqtt/wrong-types.js';

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
  stream: (chunks: Uint8Array[], maxPacketSize: number) => feedChunks(chunks, maxPacketSize),
  clientScenario: () => runClientScenario(),
  onConnectScenario: (held: boolean) => runOnConnectScenario(held),
  wrongTypes: () => ({ cases: wrongTypeCaseCount(), untyped: untypedEncodeFailures() }),
});
