/**
 * QoS 1 through the SDK across a broker that is killed (SIGKILL: no grace
 * state written, docs/protocol.md §8.5) and started again, the broker being
 * `mqsec broker` in its own process:
 * - end to end: a reading whose PUBACK was lost before the crash is resent
 *   with its group envelope and a new channel trailer; the restarted broker
 *   checks only the trailer, and the reader, whose replay window lives in
 *   the app and not in the broker, drops the copy: exactly once;
 * - hop by hop: a status that never reached the broker before the crash is
 *   resent unchanged, which the restarted broker cannot open (no grace keys):
 *   it refuses it with the connection, and the next connection re-seals it
 *   under fresh keys: it arrives once. (Had the first copy been routed before
 *   the crash, the restarted broker could not tell the re-sealed one from a
 *   new message: hop-by-hop QoS 1 is at least once across a crash.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { join } from 'node:path';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { tempDir, waitFor } from '../broker/helpers.js';
import { freePort } from '../helpers/brokers.js';
import { startCli, type CliProcess } from '../helpers/cli-process.js';

/** Between the writer and the broker: can swallow the broker's answers, and refuse connections. */
class Link {
  dropUp = false;
  dropDown = false;
  refuse = false;
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}
  static async start(upstreamPort: number): Promise<Link> {
    let link!: Link;
    const server = net.createServer((c) => link.accept(c, upstreamPort));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    link = new Link(server, (server.address() as net.AddressInfo).port);
    return link;
  }
  private accept(c: net.Socket, port: number): void {
    if (this.refuse) return void c.destroy();
    const up = net.connect(port, '127.0.0.1');
    for (const s of [c, up]) {
      this.sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => (this.sockets.delete(s), c.destroy(), up.destroy()));
    }
    c.on('data', (d) => this.dropUp || up.write(d));
    up.on('data', (d) => this.dropDown || c.write(d));
  }
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const dir = tempDir('mqsec-sdk-crash-');
const data = join(dir.path, 'data');
let port = 0;
let broker: CliProcess;
let link: Link;
let writer: MqsecApp;
let reader: MqsecApp;
const got: string[] = [];
const dropped: string[] = [];

async function run(args: string[]): Promise<string> {
  const out: string[] = [];
  const io: CliIo = { out: (l) => out.push(l), err: () => {}, readStdin: async () => '' };
  expect(await main(['node', 'mqsec', ...args], io)).toBe(0);
  return out.join('\n');
}

async function startBrokerProcess(): Promise<CliProcess> {
  const b = startCli(['broker', '--data', data, '--port', String(port), '--log-level', 'warn']);
  await waitFor(() => /listening on mqtt/.test(b.out()), 60_000, `broker started: ${b.err()}`);
  return b;
}

beforeAll(async () => {
  port = await freePort();
  await run(['acl', 'add', 'sensor', 'allow', 'publish', 'sensors/%u/#', '--mode', 'e2e', '--data', data]);
  await run(['acl', 'add', 'sensor', 'allow', 'publish', 'status/%u', '--data', data]);
  await run(['acl', 'add', 'app', 'allow', 'subscribe', 'status/#', '--data', data]);
  const devKey = (JSON.parse(await run(['device', 'add', 'dev1', '--role', 'sensor', '--data', data, '--json', '--config', join(dir.path, 'dev1.json')])) as { key: string }).key;
  const appKey = (JSON.parse(await run(['app', 'add', 'backend', '--data', data, '--json', '--config', join(dir.path, 'backend.json')])) as { key: string }).key;
  broker = await startBrokerProcess();
  link = await Link.start(port);
  const reconnect = { initialMs: 50, maxMs: 300 };
  writer = await connectApp({ url: `mqtt://127.0.0.1:${link.port}`, id: 'dev1', key: devKey, storage: new MemoryStorage(), reconnect });
  reader = await connectApp({ url: `mqtt://127.0.0.1:${port}`, id: 'backend', key: appKey, storage: new MemoryStorage(), reconnect });
  reader.on('message', (t, p, info) => got.push(`${info.mode} ${t} ${p.toString()}`));
  reader.on('dropped', (_t, e) => dropped.push(e.code));
  await reader.subscribe('sensors/#', 1);
  await reader.subscribe('status/#', 1);
}, 120_000);

afterAll(async () => {
  await writer?.end();
  await reader?.end();
  await link?.stop();
  broker?.child.kill('SIGKILL');
  dir.remove();
});

describe('QoS 1 through a broker killed with SIGKILL', () => {
  it('e2e: exactly once (the reader drops the resent copies); hop: the lost status is re-sealed on the next connection and arrives', async () => {
    link.dropDown = true; // the reading gets to the broker and is routed, its PUBACK is lost
    const e2e = writer.publish('sensors/dev1/temp', 'before-crash', { qos: 1 });
    await waitFor(() => got.length === 1, 10_000, `routed before the crash: ${got}`);
    link.dropUp = true; // the status never gets to the broker before the crash
    const hop = writer.publish('status/dev1', 'status-before-crash', { qos: 1 });
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual(['e2e sensors/dev1/temp before-crash']);
    expect(writer.pending).toBe(2);
    link.refuse = true; // the writer stays out until the reader is back and subscribed
    broker.child.kill('SIGKILL');
    await broker.exited;
    broker = await startBrokerProcess();
    await waitFor(() => reader.state === 'online', 30_000, 'reader back');
    await new Promise((r) => setTimeout(r, 300)); // its SUBSCRIBE, sent at reconnect, is in
    link.dropDown = false;
    link.dropUp = false;
    link.refuse = false;
    await Promise.all([e2e, hop]);
    await waitFor(() => got.some((g) => g.startsWith('hop')) && dropped.length >= 1, 15_000, `resends: ${got} ${dropped}`);
    await new Promise((r) => setTimeout(r, 500));
    expect(got.filter((g) => g === 'e2e sensors/dev1/temp before-crash')).toHaveLength(1);
    // one copy per connection it was resent on before its PUBACK came back (the hop resend costs one connection)
    expect(dropped.length).toBeGreaterThanOrEqual(1);
    expect(new Set(dropped)).toEqual(new Set(['REPLAY']));
    expect(got.filter((g) => g === 'hop status/dev1 status-before-crash')).toHaveLength(1);
    expect(writer.pending).toBe(0);
  }, 120_000);
});
