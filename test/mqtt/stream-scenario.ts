/**
 * Feeds chunks to the firmware streaming parser and reports what came out,
 * the error code if any, and the most it ever buffered. Platform-free: the
 * XS codec test runs it inside XS (test/xs/entries/mqtt.entry.ts) and under
 * Node, and compares the two results.
 */
import { MqttParser, type MqttPacket } from '../../firmware/mqtt/codec.js';

/** Feeds one chunk and returns the packets it completed (throws like feed). */
export function feedAll(parser: MqttParser, chunk: Uint8Array): MqttPacket[] {
  const out: MqttPacket[] = [];
  parser.feed(chunk, (p) => out.push(p));
  return out;
}

export interface StreamResult {
  packets: MqttPacket[];
  maxBuffered: number;
  code?: string;
}

export function feedChunks(chunks: Uint8Array[], maxPacketSize: number): StreamResult {
  const parser = new MqttParser({ maxPacketSize });
  const packets: MqttPacket[] = [];
  let maxBuffered = 0;
  try {
    for (const c of chunks) {
      parser.feed(c, (p) => packets.push(p));
      maxBuffered = Math.max(maxBuffered, parser.bufferedBytes);
    }
    return { packets, maxBuffered };
  } catch (e) {
    return { packets, maxBuffered, code: (e as { code?: string }).code ?? `untyped: ${String(e)}` };
  }
}
