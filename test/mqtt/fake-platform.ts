/**
 * Deterministic stand-ins for the platform services, for unit tests of the
 * MQTT client: a manual clock whose timers fire only when the test advances
 * time, and a scripted transport whose "broker" side the test drives packet
 * by packet.
 */
import { MqsecError } from '../../firmware/core/errors.js';
import type { Clock, Connection, Endpoint, Random, Timer, TimerHandle, Transport, TransportEvents } from '../../firmware/core/platform.js';
import { silentLog } from '../../firmware/core/platform.js';
import { encodePacket, MqttParser, type MqttPacket } from '../../firmware/mqtt/codec.js';
import type { MqttClientServices } from '../../firmware/mqtt/client.js';

export class ManualTime implements Clock, Timer {
  private t = 0;
  private seq = 0;
  private timers = new Map<number, { at: number; cb: () => void }>();

  now(): number {
    return this.t;
  }
  set(callback: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), cb: callback });
    return id;
  }
  clear(handle: TimerHandle): void {
    this.timers.delete(handle as number);
  }
  get pending(): number {
    return this.timers.size;
  }
  /** Moves time forward, firing due timers in order (each at its own due time). */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { at: number; cb: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].cb();
    }
    this.t = end;
  }
  /** Delay of the earliest timer, if any. */
  nextDelay(): number | undefined {
    let min: number | undefined;
    for (const { at } of this.timers.values()) if (min === undefined || at < min) min = at;
    return min === undefined ? undefined : min - this.t;
  }
}

export class FakeConnection implements Connection {
  readonly written: Uint8Array[] = [];
  private readonly parser = new MqttParser({ maxPacketSize: 1 << 20 });
  readonly packets: MqttPacket[] = [];
  closed = false;

  constructor(
    readonly endpoint: Endpoint,
    readonly events: TransportEvents,
  ) {}

  write(bytes: Uint8Array): void {
    if (this.closed) throw new Error('write after close');
    this.written.push(bytes.slice());
    this.parser.feed(bytes, (p) => this.packets.push(p));
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.events.onClose();
  }
  /** The broker accepts the TCP connection. */
  accept(): void {
    this.events.onConnect();
  }
  /** The broker sends a packet (or raw bytes). */
  send(p: MqttPacket | Uint8Array): void {
    this.events.onData(p instanceof Uint8Array ? p : encodePacket(p));
  }
  /** The broker goes away. */
  drop(): void {
    if (this.closed) return;
    this.closed = true;
    this.events.onClose(new MqsecError('CONNECTION_CLOSED', 'closed by peer'));
  }
  /** Packets of one type the client sent on this connection. */
  sent<T extends MqttPacket['type']>(type: T): Extract<MqttPacket, { type: T }>[] {
    return this.packets.filter((p) => p.type === type) as Extract<MqttPacket, { type: T }>[];
  }
}

export class FakeTransport implements Transport {
  readonly connections: FakeConnection[] = [];
  connect(endpoint: Endpoint, events: TransportEvents): Connection {
    const c = new FakeConnection(endpoint, events);
    this.connections.push(c);
    return c;
  }
  get last(): FakeConnection {
    const c = this.connections[this.connections.length - 1];
    if (!c) throw new Error('no connection yet');
    return c;
  }
}

/** Random that returns a fixed byte, so backoff jitter is predictable. */
export function fixedRandom(byte = 0x80): Random {
  return { fill: (b) => b.fill(byte) };
}

export function fakeServices(): MqttClientServices & { time: ManualTime; transport: FakeTransport } {
  const time = new ManualTime();
  return { time, transport: new FakeTransport(), timer: time, clock: time, random: fixedRandom(), log: silentLog };
}

/** Lets pending promise callbacks (credentials(), publish resolutions) run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}
