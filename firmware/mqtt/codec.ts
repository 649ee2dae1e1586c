/**
 * The MQTT 3.1.1 codec in one import: packet types, generator, parser,
 * streaming parser and topic rules. Pure and platform-free, so the device,
 * the broker and the benchmarks share one definition of the wire format.
 *
 *   encodePacket(p) -> bytes          one packet, fixed header included
 *   decodePacket(bytes) -> packet     exactly one complete packet
 *   new MqttParser({ maxPacketSize }).feed(chunk, onPacket)   for streams
 */
export * from './packets.js';
export * from './generate.js';
export * from './parse.js';
export * from './stream.js';
export * from './topic.js';
