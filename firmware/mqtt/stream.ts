/**
 * Streaming MQTT parser: TCP delivers packets split across reads and several
 * packets in one read; `feed` takes whatever arrived and returns the packets
 * completed by it.
 *
 * Memory is bounded by construction: the fixed header is at most 5 bytes and
 * is validated as it arrives (type and flags on the first byte, size as soon
 * as the Remaining Length is complete), so an oversize packet is refused
 * before a single byte of its body is buffered, and the body buffer is
 * allocated once at its exact size, which is at most `maxPacketSize`.
 *
 * Packets are handed to the caller as they complete, in order, before
 * anything later in the same chunk is looked at: a valid packet that precedes
 * a malformed one is delivered, then `feed` throws. What a consumer receives
 * therefore does not depend on how TCP segmented the stream.
 *
 * After an error the parser stays failed (the stream position is lost, so
 * the only safe reaction is to close the connection): further feeds rethrow.
 * An exception thrown by the consumer's callback fails the parser the same
 * way (the rest of that chunk was not parsed) and is rethrown as an MqsecError.
 */
import { asMqsecError, fail, type MqsecError } from '../core/errors.js';
import { decodeRemainingLength } from '../core/varint.js';
import type { MqttPacket } from './packets.js';
import { checkFirstByte, decodeBody } from './parse.js';

/** 16 KiB: roomy for sensor payloads, small next to the ESP32's JS heap. */
export const DEFAULT_MAX_PACKET_SIZE = 16 * 1024;

export interface MqttParserOptions {
  /** Largest accepted packet, fixed header included, in bytes. */
  maxPacketSize?: number;
}

const EMPTY = new Uint8Array(0);

export class MqttParser {
  readonly maxPacketSize: number;
  private readonly header = new Uint8Array(5);
  private headerLength = 0;
  private body: Uint8Array | undefined;
  private bodyFilled = 0;
  private failure: MqsecError | undefined;

  constructor(options: MqttParserOptions = {}) {
    const max = options.maxPacketSize ?? DEFAULT_MAX_PACKET_SIZE;
    if (!Number.isInteger(max) || max < 2) fail('MALFORMED', `maxPacketSize ${max} must be an integer >= 2`);
    this.maxPacketSize = max;
  }

  /** Bytes held for the packet being assembled (never more than maxPacketSize). */
  get bufferedBytes(): number {
    return this.headerLength + this.bodyFilled;
  }

  /** The error that stopped the parser, if any. */
  get error(): MqsecError | undefined {
    return this.failure;
  }

  /** Discards any partial packet and a previous error (for a new connection). */
  reset(): void {
    this.headerLength = 0;
    this.body = undefined;
    this.bodyFilled = 0;
    this.failure = undefined;
  }

  /**
   * Consumes `chunk` (not kept: the caller may reuse it) and calls `onPacket`
   * for every packet it completes, in order. On bad input, throws an
   * MqsecError after the packets that preceded the defect were delivered.
   */
  feed(chunk: Uint8Array, onPacket: (packet: MqttPacket) => void): void {
    if (this.failure) throw this.failure;
    try {
      let i = 0;
      while (i < chunk.length) {
        const body = this.body;
        if (body === undefined) {
          this.header[this.headerLength++] = chunk[i++];
          if (this.headerLength === 1) {
            checkFirstByte(this.header[0]);
            continue;
          }
          // Throws MALFORMED on a fifth length byte, so the header never outgrows 5 bytes.
          const rl = decodeRemainingLength(this.header.subarray(0, this.headerLength), 1);
          if (rl === undefined) {
            // Length still incomplete: refuse as soon as even the smallest size it can still end
            // up as is too big, so not even the header outgrows a tiny maxPacketSize.
            if (this.smallestPossibleSize() > this.maxPacketSize) fail('OVERSIZE', `packet exceeds ${this.maxPacketSize} bytes`);
            continue;
          }
          const size = this.headerLength + rl.value;
          if (size > this.maxPacketSize) fail('OVERSIZE', `packet of ${size} bytes exceeds ${this.maxPacketSize}`);
          if (rl.value === 0) {
            onPacket(this.complete(EMPTY));
          } else {
            this.body = new Uint8Array(rl.value);
            this.bodyFilled = 0;
          }
        } else {
          const n = Math.min(chunk.length - i, body.length - this.bodyFilled);
          body.set(chunk.subarray(i, i + n), this.bodyFilled);
          this.bodyFilled += n;
          i += n;
          if (this.bodyFilled === body.length) onPacket(this.complete(body));
        }
      }
    } catch (e) {
      this.failure = asMqsecError(e);
      this.headerLength = 0;
      this.body = undefined;
      this.bodyFilled = 0;
      throw this.failure;
    }
  }

  /**
   * Lower bound on the size of a packet whose Remaining Length bytes so far
   * all had the continuation bit set: at least one more length byte, which
   * must be non-zero (minimal encoding) and is worth 128^k.
   */
  private smallestPossibleSize(): number {
    let value = 0;
    let mult = 1;
    for (let i = 1; i < this.headerLength; i++) {
      value += (this.header[i] & 0x7f) * mult;
      mult *= 128;
    }
    return this.headerLength + 1 + value + mult;
  }

  private complete(body: Uint8Array): MqttPacket {
    const firstByte = this.header[0];
    this.headerLength = 0;
    this.body = undefined;
    this.bodyFilled = 0;
    return decodeBody(firstByte, body);
  }
}
