/**
 * Pre-parse limits on the raw byte stream, applied before Aedes buffers
 * anything: Aedes 1.x has no maximum packet size, and mqtt-packet would
 * happily accumulate a 256 MB remaining length. The guard only follows MQTT
 * framing (fixed header, remaining-length varint, MQTT 3.1.1 section 2.2),
 * never payloads, so it costs a few comparisons per packet.
 *
 * Pure state machine: feed chunks, get a verdict. The first packet must be a
 * CONNECT, a second CONNECT is a protocol violation [MQTT-3.1.0-2], packet
 * types 0 and 15 are reserved, and a packet whose remaining length exceeds
 * `maxPacketSize` is refused as soon as its header is seen.
 */
export type GuardVerdict =
  | { ok: true }
  | { ok: false; reason: 'oversize' | 'malformed-length' | 'first-not-connect' | 'second-connect' | 'reserved-type' };

const CONNECT = 1;

type State = 'header' | 'length' | 'body';

export class FrameGuard {
  private state: State = 'header';
  private packetType = 0;
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private remaining = 0;
  private packets = 0;
  private failed: GuardVerdict | undefined;

  constructor(private readonly maxPacketSize: number) {}

  /** True while a packet is partly received (used by the slow-packet timeout). */
  get midPacket(): boolean {
    return this.state !== 'header';
  }

  get packetsSeen(): number {
    return this.packets;
  }

  feed(chunk: Uint8Array): GuardVerdict {
    if (this.failed) return this.failed;
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'header') {
        const type = chunk[i]! >> 4;
        i++;
        if (type === 0 || type === 15) return this.fail('reserved-type');
        if (this.packets === 0 && type !== CONNECT) return this.fail('first-not-connect');
        if (this.packets > 0 && type === CONNECT) return this.fail('second-connect');
        this.packetType = type;
        this.state = 'length';
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
      } else if (this.state === 'length') {
        const b = chunk[i]!;
        i++;
        this.length += (b & 0x7f) * this.multiplier;
        this.multiplier *= 128;
        this.lengthBytes++;
        if (this.length > this.maxPacketSize) return this.fail('oversize');
        if (b & 0x80) {
          if (this.lengthBytes >= 4) return this.fail('malformed-length');
          continue;
        }
        this.packets++;
        this.remaining = this.length;
        this.state = this.remaining > 0 ? 'body' : 'header';
      } else {
        const take = Math.min(this.remaining, chunk.length - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'header';
      }
    }
    return { ok: true };
  }

  /** The packet type of the packet currently or last framed (for logs). */
  get lastType(): number {
    return this.packetType;
  }

  private fail(reason: Extract<GuardVerdict, { ok: false }>['reason']): GuardVerdict {
    this.failed = { ok: false, reason };
    return this.failed;
  }
}
