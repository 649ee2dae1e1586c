/**
 * A byte-counting TCP proxy on loopback, optionally with an artificial
 * one-way delay.
 *
 * Every connection accepted on `port` is relayed to the target; the proxy
 * counts the TCP payload bytes it relays in each direction and keeps a
 * timeline of the chunks (direction, size, time). TCP/IP headers, the TCP
 * handshake and ACKs are not counted: figures are application-layer bytes
 * (TLS records incl. their headers, MQTT packets), the same quantity TLS
 * size studies report.
 *
 * The delay turns the loopback into a link with a known round-trip time
 * (2 x delay). Counting round trips from packet captures depends on how the
 * kernel and the TLS stacks happen to split or merge writes; counting them
 * as "time to ready / RTT" on a slow emulated link does not: every flight
 * the client must wait for adds exactly one RTT, local computation adds a
 * small fraction of one (see bench/handshake/measure.ts).
 */
import net from 'node:net';

export type Direction = 'c2s' | 's2c';

export interface Chunk {
  dir: Direction;
  bytes: number;
  /** performance.now() when the chunk was delivered to the other side. */
  at: number;
}

export interface ProxiedConnection {
  readonly id: number;
  bytesC2S: number;
  bytesS2C: number;
  readonly chunks: Chunk[];
  /** Resolves when both sides are closed. */
  readonly closed: Promise<void>;
}

export interface CountingProxy {
  readonly port: number;
  /** Connections in the order they were accepted. */
  readonly connections: ProxiedConnection[];
  /** Resolves with the next connection accepted from now on. */
  nextConnection(): Promise<ProxiedConnection>;
  close(): Promise<void>;
}

export interface CountingProxyOptions {
  targetPort: number;
  targetHost?: string;
  /** One-way delay added to every chunk in both directions (ms). Default 0. */
  oneWayDelayMs?: number;
}

/** Sums bytes per direction; a pure helper, exported for tests. */
export function totals(chunks: readonly Chunk[]): { c2s: number; s2c: number } {
  let c2s = 0;
  let s2c = 0;
  for (const c of chunks) {
    if (c.dir === 'c2s') c2s += c.bytes;
    else s2c += c.bytes;
  }
  return { c2s, s2c };
}

/**
 * Number of flights: maximal runs of chunks in one direction. Informational
 * (a proxy sees writes, not protocol flights); round trips are measured by
 * timing, see the module comment.
 */
export function countFlights(chunks: readonly Chunk[]): number {
  let flights = 0;
  let last: Direction | undefined;
  for (const c of chunks) {
    if (c.dir !== last) {
      flights++;
      last = c.dir;
    }
  }
  return flights;
}

export function startCountingProxy(options: CountingProxyOptions): Promise<CountingProxy> {
  const targetHost = options.targetHost ?? '127.0.0.1';
  const delay = options.oneWayDelayMs ?? 0;
  const connections: ProxiedConnection[] = [];
  const sockets = new Set<net.Socket>();
  const waiters: Array<(c: ProxiedConnection) => void> = [];
  let nextId = 1;

  const server = net.createServer({ noDelay: true }, (client) => {
    const upstream = net.connect({ host: targetHost, port: options.targetPort, noDelay: true });
    client.setNoDelay(true);
    sockets.add(client);
    sockets.add(upstream);
    let resolveClosed!: () => void;
    const closed = new Promise<void>((r) => (resolveClosed = r));
    const conn: ProxiedConnection = { id: nextId++, bytesC2S: 0, bytesS2C: 0, chunks: [], closed };
    connections.push(conn);
    const w = waiters.shift();
    if (w) w(conn);

    let openSides = 2;
    const sideClosed = (s: net.Socket) => {
      sockets.delete(s);
      if (--openSides === 0) resolveClosed();
    };

    // Writes to `to` in arrival order, each `delay` ms after it was read. Timers
    // with equal delays fire in creation order, so ordering is preserved.
    const relay = (from: net.Socket, to: net.Socket, dir: Direction) => {
      let pending = 0;
      let ended = false;
      const deliver = (data: Buffer) => {
        pending--;
        if (!to.destroyed) {
          if (dir === 'c2s') conn.bytesC2S += data.length;
          else conn.bytesS2C += data.length;
          conn.chunks.push({ dir, bytes: data.length, at: performance.now() });
          to.write(data);
        }
        if (ended && pending === 0) to.end();
      };
      from.on('data', (data: Buffer) => {
        pending++;
        if (delay > 0) setTimeout(deliver, delay, data);
        else deliver(data);
      });
      from.on('end', () => {
        ended = true;
        if (pending === 0) to.end();
      });
    };
    // The client may write before the upstream connect completes: net.Socket
    // buffers writes until then, so nothing is lost or reordered.
    relay(client, upstream, 'c2s');
    relay(upstream, client, 's2c');
    const onError = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', onError);
    upstream.on('error', onError);
    client.on('close', () => {
      sideClosed(client);
      upstream.destroy();
    });
    upstream.on('close', () => {
      sideClosed(upstream);
      // let delayed data drain before tearing down the client side
      setTimeout(() => client.destroy(), delay);
    });
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({
        port,
        connections,
        nextConnection: () => new Promise((r) => waiters.push(r)),
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}
