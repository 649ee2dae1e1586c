/**
 * ModdableTcpTransport (firmware/platform/moddable/tcp-transport.ts) against a
 * model of the ECMA-419 TCP socket as the Moddable SDK implements it: IP
 * addresses only, the first onWritable means connected, `write` throws
 * beyond the announced writable bytes, onError for failures and the peer's
 * close.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { ModdableTcpTransport, isIpv4Literal, type Tcp419, type Tcp419Options } from '../../firmware/platform/moddable/tcp-transport.js';
import type { TransportEvents } from '../../firmware/core/platform.js';
import type { MqsecError } from '../../firmware/core/errors.js';
import { ManualTimer, flush } from '../app/fakes.js';

class SocketModel implements Tcp419 {
  static last: SocketModel | undefined;
  written: number[] = [];
  inbox: Uint8Array[] = [];
  budget = 0;
  closed = false;
  writeCalls = 0;
  constructor(readonly options: Tcp419Options) {
    if (!isIpv4Literal(options.address)) throw new Error('invalid address');
    SocketModel.last = this;
  }
  read(n?: number): ArrayBuffer | undefined {
    const head = this.inbox.shift();
    if (!head) return undefined;
    const take = Math.min(n ?? head.length, head.length);
    if (take < head.length) this.inbox.unshift(head.subarray(take));
    return head.slice(0, take).buffer;
  }
  write(v: ArrayBuffer | Uint8Array): void {
    const b = v instanceof Uint8Array ? v : new Uint8Array(v);
    if (this.closed) throw new Error('closed');
    if (b.length > this.budget) throw new Error('would block');
    this.writeCalls++;
    this.budget -= b.length;
    this.written.push(...b);
  }
  close(): void {
    this.closed = true;
  }
  // test drivers
  writable(n: number) {
    this.budget = n;
    this.options.onWritable!.call(this, n);
  }
  receive(bytes: number[]) {
    this.inbox.push(new Uint8Array(bytes));
    this.options.onReadable!.call(this, bytes.length);
  }
  error() {
    this.options.onError!.call(this);
  }
}

function recorder() {
  const log: string[] = [];
  const data: number[] = [];
  let closeError: MqsecError | undefined | null = null;
  const events: TransportEvents = {
    onConnect: () => log.push('connect'),
    onData: (c) => {
      data.push(...c);
      c.fill(0); // the contract allows the callee to reuse the chunk
    },
    onClose: (e) => {
      log.push(`close:${e?.code ?? 'clean'}`);
      closeError = e;
    },
  };
  return { log, data, events, get closeError() {
    return closeError;
  } };
}

function transport(resolve: (h: string) => Promise<string> = async () => '10.0.0.7', timer = new ManualTimer()) {
  return { t: new ModdableTcpTransport({ TCP: SocketModel, resolve, timer, maxQueuedBytes: 64 }), timer };
}

describe('ModdableTcpTransport', () => {
  it('resolves names first (the socket takes IPs only) and reports connect on the first onWritable', async () => {
    const asked: string[] = [];
    const { t } = transport(async (h) => {
      asked.push(h);
      return '192.168.1.20';
    });
    const r = recorder();
    t.connect({ host: 'broker.local', port: 1883 }, r.events);
    await flush();
    expect(asked).toEqual(['broker.local']);
    const s = SocketModel.last!;
    expect(s.options).toMatchObject({ address: '192.168.1.20', port: 1883, nodelay: true });
    expect(r.log).toEqual([]);
    s.writable(1024);
    expect(r.log).toEqual(['connect']);
  });

  it('uses IPv4 literals as they are; a name that does not resolve closes with CONNECTION_REFUSED', async () => {
    const asked: string[] = [];
    const { t } = transport(async (h) => {
      asked.push(h);
      throw new Error('NXDOMAIN');
    });
    const a = recorder();
    t.connect({ host: '127.0.0.1', port: 1 }, a.events);
    await flush();
    expect(SocketModel.last!.options.address).toBe('127.0.0.1');
    const b = recorder();
    t.connect({ host: 'nowhere.invalid', port: 1 }, b.events);
    await flush();
    expect(asked).toEqual(['nowhere.invalid']);
    expect(b.log).toEqual(['close:CONNECTION_REFUSED']);
  });

  it('queues writes before connect and while the socket would block, drains on onWritable, keeps order', async () => {
    const { t } = transport();
    const r = recorder();
    const c = t.connect({ host: '10.0.0.1', port: 1883 }, r.events);
    c.write(new Uint8Array([1, 2, 3]));
    await flush();
    const s = SocketModel.last!;
    const buf = new Uint8Array([4, 5, 6, 7, 8]);
    c.write(buf);
    buf.fill(9); // the caller reuses its buffer: the queued copy must not change
    s.writable(4);
    expect(s.written).toEqual([1, 2, 3, 4]);
    c.write(new Uint8Array([10]));
    s.writable(2);
    expect(s.written).toEqual([1, 2, 3, 4, 5, 6]);
    s.writable(100);
    expect(s.written).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 10]);
  });

  it('a write that throws "would block" despite the budget waits for the next onWritable', async () => {
    const { t } = transport();
    const r = recorder();
    const c = t.connect({ host: '10.0.0.1', port: 1883 }, r.events);
    await flush();
    const s = SocketModel.last!;
    s.options.onWritable!.call(s, 10); // announces 10 ...
    s.budget = 0; // ... but the stack shrank meanwhile
    c.write(new Uint8Array([1, 2]));
    expect(s.written).toEqual([]);
    expect(r.log).toEqual(['connect']);
    s.writable(10);
    expect(s.written).toEqual([1, 2]);
  });

  it('bounds the send queue: overflow closes with QUEUE_FULL', async () => {
    const { t } = transport();
    const r = recorder();
    const c = t.connect({ host: '10.0.0.1', port: 1883 }, r.events);
    await flush();
    c.write(new Uint8Array(60));
    c.write(new Uint8Array(10));
    expect(r.log).toEqual(['close:QUEUE_FULL']);
    expect(SocketModel.last!.closed).toBe(true);
  });

  it('delivers reads; onError closes once with CONNECTION_CLOSED; later callbacks are ignored', async () => {
    const { t } = transport();
    const r = recorder();
    t.connect({ host: '10.0.0.1', port: 1883 }, r.events);
    await flush();
    const s = SocketModel.last!;
    s.writable(100);
    s.receive([0x20, 2, 0, 0]);
    expect(r.data).toEqual([0x20, 2, 0, 0]);
    s.error();
    s.error();
    s.receive([1]);
    expect(r.log).toEqual(['connect', 'close:CONNECTION_CLOSED']);
    expect(r.data).toEqual([0x20, 2, 0, 0]);
  });

  it('close() reports onClose once, asynchronously, with no error', async () => {
    const { t, timer } = transport();
    const r = recorder();
    const c = t.connect({ host: '10.0.0.1', port: 1883 }, r.events);
    await flush();
    SocketModel.last!.writable(100);
    c.close();
    c.close();
    expect(r.log).toEqual(['connect']);
    await timer.advance(1);
    expect(r.log).toEqual(['connect', 'close:clean']);
    expect(SocketModel.last!.closed).toBe(true);
    c.write(new Uint8Array([1])); // ignored after close
  });

  it('close() during name resolution never creates a socket', async () => {
    let release!: (a: string) => void;
    const { t, timer } = transport(() => new Promise((res) => (release = res)));
    const r = recorder();
    SocketModel.last = undefined;
    const c = t.connect({ host: 'slow.example', port: 1 }, r.events);
    c.close();
    release('10.0.0.9');
    await timer.advance(1);
    expect(SocketModel.last).toBeUndefined();
    expect(r.log).toEqual(['close:clean']);
  });

  it('any split of writes and writable budgets delivers the exact byte stream (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ minLength: 1, maxLength: 20 }), { maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 1, maxLength: 30 }), async (chunks, budgets) => {
        const timer = new ManualTimer();
        const t = new ModdableTcpTransport({ TCP: SocketModel, resolve: async () => '10.0.0.1', timer, maxQueuedBytes: 1000 });
        const r = recorder();
        const c = t.connect({ host: '10.0.0.1', port: 1 }, r.events);
        await flush(3);
        const s = SocketModel.last!;
        for (const ch of chunks) c.write(ch);
        for (const b of budgets) s.writable(b);
        s.writable(1000);
        expect(s.written).toEqual(chunks.flatMap((ch) => [...ch]));
      }),
      { numRuns: 100 },
    );
  });
});

describe('isIpv4Literal', () => {
  it('accepts dotted quads only', () => {
    expect(isIpv4Literal('127.0.0.1')).toBe(true);
    expect(isIpv4Literal('255.255.255.255')).toBe(true);
    expect(isIpv4Literal('256.1.1.1')).toBe(false);
    expect(isIpv4Literal('1.2.3')).toBe(false);
    expect(isIpv4Literal('broker')).toBe(false);
    expect(isIpv4Literal('01.2.3.4')).toBe(false);
  });
});
