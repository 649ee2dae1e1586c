/**
 * A TCP proxy on a free loopback port between a client and a broker, for
 * attacks that need a position on the path:
 *
 *   const p = await TcpProxy.start(broker.port);   // forwards, records both directions
 *   p.mode = 'impersonate';                        // new connections: answered by the proxy itself
 *   p.cutAll();                                    // the network drops every live connection
 *
 * In 'forward' mode every connection is piped to the broker and its bytes are
 * recorded per connection (client->broker and broker->client), so a test can
 * replay them later. In 'impersonate' mode the proxy is an on-path attacker
 * that never reaches the broker: it answers CONNECT with CONNACK 0 and every
 * QoS 1 PUBLISH with a PUBACK, and keeps everything the client sent.
 */
import net from 'node:net';
import mqttPacket from 'mqtt-packet';

export interface RecordedConnection {
  /** Client -> broker bytes, in arrival order. */
  up: Buffer[];
  /** Broker -> client bytes (in 'impersonate' mode: what the proxy answered). */
  down: Buffer[];
  /** Packets the client sent (parsed from `up`). */
  packets: mqttPacket.Packet[];
  /** Packets the broker sent (parsed from `down`, 'forward' mode). */
  downPackets: mqttPacket.Packet[];
  /** Both directions in the order the proxy saw them, with each packet's size on the wire (fixed header included). */
  log: { dir: 'up' | 'down'; packet: mqttPacket.Packet; bytes: number }[];
}

/** Bytes of a parsed packet on the wire: type byte, remaining-length varint, remaining length. */
function wireSize(p: mqttPacket.Packet): number {
  const n = p.length ?? 0;
  return 1 + (n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4) + n;
}

export class TcpProxy {
  mode: 'forward' | 'impersonate' = 'forward';
  /** 'forward' mode: while true, broker -> client bytes are recorded but lost (PUBACKs the client never sees). */
  dropDown = false;
  readonly connections: RecordedConnection[] = [];
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(upstreamPort: number, upstreamHost = '127.0.0.1'): Promise<TcpProxy> {
    let proxy!: TcpProxy;
    const server = net.createServer((client) => proxy.accept(client, upstreamPort, upstreamHost));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    proxy = new TcpProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.on('error', () => {});
    s.once('close', () => this.sockets.delete(s));
  }

  private accept(client: net.Socket, upstreamPort: number, upstreamHost: string): void {
    const rec: RecordedConnection = { up: [], down: [], packets: [], downPackets: [], log: [] };
    this.connections.push(rec);
    this.track(client);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (p) => {
      rec.packets.push(p);
      rec.log.push({ dir: 'up', packet: p, bytes: wireSize(p) });
    });
    parser.on('error', () => {});
    if (this.mode === 'impersonate') {
      parser.on('packet', (p) => {
        const answer = (pkt: mqttPacket.Packet) => {
          const b = mqttPacket.generate(pkt);
          rec.down.push(b);
          client.write(b);
        };
        if (p.cmd === 'connect') answer({ cmd: 'connack', returnCode: 0, sessionPresent: false });
        else if (p.cmd === 'publish' && p.qos === 1) answer({ cmd: 'puback', messageId: p.messageId });
        else if (p.cmd === 'subscribe') answer({ cmd: 'suback', messageId: p.messageId, granted: p.subscriptions.map(() => 1) });
        else if (p.cmd === 'pingreq') answer({ cmd: 'pingresp' });
      });
      client.on('data', (d) => {
        rec.up.push(Buffer.from(d));
        parser.parse(d);
      });
      return;
    }
    const upstream = net.connect(upstreamPort, upstreamHost);
    this.track(upstream);
    const downParser = mqttPacket.parser({ protocolVersion: 4 });
    downParser.on('packet', (p) => {
      rec.downPackets.push(p);
      rec.log.push({ dir: 'down', packet: p, bytes: wireSize(p) });
    });
    downParser.on('error', () => {});
    client.on('data', (d) => {
      rec.up.push(Buffer.from(d));
      parser.parse(d);
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      rec.down.push(Buffer.from(d));
      downParser.parse(d);
      if (!this.dropDown) client.write(d);
    });
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  }

  /** The network drops every connection through the proxy. */
  cutAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Sends recorded client bytes to a broker on a fresh connection, as one
 * attacker replaying a capture would, and collects the packets it answers.
 */
export class ReplayConnection {
  readonly packets: mqttPacket.Packet[] = [];
  closed = false;
  private constructor(private readonly socket: net.Socket) {}

  static async open(port: number, host = '127.0.0.1'): Promise<ReplayConnection> {
    const socket = net.connect(port, host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const r = new ReplayConnection(socket);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (p) => r.packets.push(p));
    parser.on('error', () => {});
    socket.on('data', (d) => parser.parse(d));
    socket.on('error', () => {});
    socket.once('close', () => (r.closed = true));
    return r;
  }

  write(chunks: Buffer[]): void {
    for (const c of chunks) this.socket.write(c);
  }

  close(): void {
    this.socket.destroy();
  }
}
