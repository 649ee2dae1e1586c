/**
 * The key service in its own process (docs/protocol.md §14.2, §14.11):
 * `mqsec broker --keyservice external` and `mqsec keyservice` as two child
 * processes, members (SDK) talking to the broker through a recording TCP
 * proxy, provisioning through the CLI with `--keyservice-data`.
 *
 * - Members get their group keys from the key service process; readings
 *   and commands travel end to end.
 * - Removed member locked out: an app revoked, an auditor whose rule is
 *   removed, a device whose key is rotated: the group moves to a new epoch
 *   within 1 s and the removed member (which ignores every push from then on)
 *   cannot open what is sealed after (real messages captured at a reader).
 * - Operator rotation (`mqsec group rotate`) reaches the key service.
 * - Restart: a new key service process continues the epochs and sequence
 *   ranges of the old one; members it never answered are sent to ask again.
 * - Curious broker: everything the broker received and sent, every file in
 *   its data directory and every readable page of its memory hold no reading
 *   plaintext, no group key (learnt from the members) and no K_ks. The same
 *   scan run against a broker with the embedded key service (the split
 *   undone) finds the group keys and K_ks in its memory: the scan is one that
 *   fails when the defence is taken away.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { startBroker } from '../../broker/server.js';
import { GK_TOPIC, deriveKeyServiceKey } from '../../firmware/secure/group.js';
import { fromHex } from '../../firmware/core/bytes.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { createNodeCryptoSuite } from '../../platform-node/crypto-suite.js';
import { KS_IN_TOPIC } from '../../broker/keyservice/link.js';
import { scanProcessMemory } from './fixtures/memscan.js';
import Database from 'better-sqlite3';
import { MASTER_KEY_FILE, openDeviceKey } from '../../broker/registry/secrets.js';
import { splitPrincipalKey } from '../../broker/registry/principal-keys.js';
import { tempDir, waitFor } from './helpers.js';
import { hasRedis, startRedis, type RunningRedis } from '../helpers/redis.js';

const BIN = resolve(import.meta.dirname, '../../cli/bin.mjs');
const suite = createNodeCryptoSuite();

async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), readStdin: async () => '' };
  const code = await main(['node', 'mqsec', ...args], io);
  process.exitCode = 0;
  if (code !== 0) throw new Error(`mqsec ${args.join(' ')} failed: ${err.join('\n')}`);
  return out.join('\n');
}

/** A CLI child process; its stdout lines are kept, `line(re)` waits for one. */
class Child {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  constructor(readonly proc: ChildProcess) {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const parts = buf.split('\n');
      buf = parts.pop()!;
      this.lines.push(...parts);
    });
    const err: string[] = [];
    proc.stderr!.on('data', (d: Buffer) => err.push(d.toString('utf8')));
    this.exited = new Promise((r) => proc.once('exit', (code) => r(code)));
    this.stderr = () => err.join('');
  }
  readonly stderr: () => string;
  static start(args: string[]): Child {
    return new Child(spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  }
  async line(re: RegExp, ms = 30_000): Promise<RegExpMatchArray> {
    let m: RegExpMatchArray | null = null;
    await waitFor(() => this.lines.some((l) => (m = l.match(re)) !== null), ms, `${re} (stderr: ${this.stderr().slice(-500)})`).catch((e) => {
      throw e;
    });
    return m!;
  }
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 8000);
    await this.exited;
    clearTimeout(t);
  }
}

/** A recording TCP proxy in front of the broker: every byte either way. */
class Proxy {
  readonly toBroker: Buffer[] = [];
  readonly fromBroker: Buffer[] = [];
  private readonly sockets = new Set<net.Socket>();
  private server!: net.Server;
  port = 0;
  /** The broker's port: changed when the broker is restarted on another port. */
  target = 0;
  async start(target: number): Promise<void> {
    this.target = target;
    this.server = net.createServer((c) => {
      const up = net.connect(this.target, '127.0.0.1');
      this.sockets.add(c).add(up);
      c.on('data', (d) => (this.toBroker.push(Buffer.from(d)), up.write(d)));
      up.on('data', (d) => (this.fromBroker.push(Buffer.from(d)), c.write(d)));
      c.on('close', () => up.destroy());
      up.on('close', () => c.destroy());
      c.on('error', () => {});
      up.on('error', () => {});
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as net.AddressInfo).port;
  }
  all(): Buffer {
    return Buffer.concat([...this.toBroker, ...this.fromBroker]);
  }
  close(): void {
    this.server?.close();
    for (const s of this.sockets) s.destroy();
  }
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

/** Every group key a member holds now (current and previous epoch of each group), learnt from its keyring. */
function groupKeysOf(app: MqsecApp): Uint8Array[] {
  const groups = (app.keyring as unknown as { groups: { current: { groupKey: Uint8Array }; previous?: { groupKey: Uint8Array } }[] }).groups;
  return groups.flatMap((g) => [g.current.groupKey, g.previous?.groupKey]).filter((k): k is Uint8Array => !!k).map((k) => k.slice());
}

/**
 * Where the broker could have met a secret: the bytes it received and sent,
 * the files of its data directory, its process memory. Returns the names of
 * the needles found in each.
 */
function curiousBrokerFindings(pid: number, dataDir: string, wire: Buffer, needleBytes: Map<string, Uint8Array>) {
  const needles = new Map([...needleBytes].map(([k, v]) => [k, Buffer.from(v.buffer, v.byteOffset, v.byteLength)]));
  const inWire = [...needles].filter(([, n]) => wire.includes(n)).map(([k]) => k);
  const inFiles: string[] = [];
  for (const f of filesUnder(dataDir)) {
    const b = readFileSync(f);
    for (const [k, n] of needles) if (b.includes(n)) inFiles.push(`${k} in ${f.slice(dataDir.length + 1)}`);
  }
  const mem = scanProcessMemory(pid, needles);
  return { inWire, inFiles, inMemory: [...mem.found], memoryBytes: mem.bytes, files: filesUnder(dataDir).length };
}

const kind = (name: string) => name.split(':')[0];
const epochOf = (a: MqsecApp, filter: string) => a.groups().find((g) => g.filter === filter)?.epoch ?? 0;
function received(a: MqsecApp) {
  const got: { topic: string; text: string; publisher?: string }[] = [];
  a.on('message', (topic, payload, info) => got.push({ topic, text: payload.toString('utf8'), publisher: info.publisher }));
  return got;
}

/** Opens `raw` with a keyring; the error code if it does not open. */
function tryOpen(app: MqsecApp, topic: string, raw: Uint8Array): string {
  try {
    app.keyring.open(topic, raw);
    return 'opened';
  } catch (e) {
    return isMqsecError(e) ? e.code : String(e);
  }
}

describe('key service in its own process', () => {
  const dir = tempDir('mqsec-ksp-');
  const brokerDir = join(dir.path, 'broker');
  const ksDir = join(dir.path, 'keyservice');
  const pwFile = join(dir.path, 'ks.password');
  const keys = new Map<string, string>();
  const flash = new Map<string, MemoryStorage>();
  const proxy = new Proxy();
  const open: MqsecApp[] = [];
  /** Every group key any member ever held, every reading marker sent. */
  const learntKeys: Uint8Array[] = [];
  const markers: string[] = [];
  /** ms from the registry change to the members' new epoch, per lockout case (reported, asserted < 1000 each). */
  const rekeyMs: Record<string, number> = {};
  let broker: Child;
  let ks: Child;
  /** Memory scan of the first broker process, taken just before it is restarted (it saw every case above). */
  let firstBrokerScan: { found: string[]; bytes: number } | undefined;
  /** Every secret the broker must not meet: reading markers, group keys learnt from members, each member's K_ks and K. */
  const needlesNow = () => {
    const needles = new Map<string, Uint8Array>();
    for (const m of markers) needles.set(`reading:${m}`, Buffer.from(m));
    learntKeys.forEach((k, i) => needles.set(`group key:${i}`, k));
    for (const [id, hex] of keys) {
      const k = fromHex(hex);
      needles.set(`K_ks:${id}`, deriveKeyServiceKey(suite, k, id));
      needles.set(`K:${id}`, k);
    }
    return needles;
  };
  let brokerPort = 0;

  const provision = async (id: string, role: string) => {
    const out = await run(['device', 'add', id, '--role', role, '--data', brokerDir, '--keyservice-data', ksDir, '--json', '--config', join(dir.path, `${id}.json`)]);
    keys.set(id, (JSON.parse(out) as { key: string }).key);
  };
  const member = async (id: string, key = keys.get(id)!): Promise<MqsecApp> => {
    if (!flash.has(id)) flash.set(id, new MemoryStorage());
    const a = await connectApp({ url: `mqtt://127.0.0.1:${proxy.port}`, id, key, storage: flash.get(id), keyTimeoutMs: 10_000, reconnect: false });
    open.push(a);
    learntKeys.push(...groupKeysOf(a));
    a.on('keys', () => learntKeys.push(...groupKeysOf(a)));
    return a;
  };
  /** Raw group envelopes as the broker forwards them to `a`. */
  const rawAt = (a: MqsecApp, topic: string) => {
    const raw: Uint8Array[] = [];
    a.client.on('message', (t, p) => t === topic && raw.push(new Uint8Array(p)));
    return raw;
  };
  /**
   * From now on `a` ignores every key push (including "forget this group") and
   * keeps its keys when its connection is closed (the SDK would wipe them):
   * only the re-key can keep it out.
   */
  const turnHostile = (a: MqsecApp) => {
    const h = a as unknown as { incoming(t: string, p: Uint8Array): void };
    const orig = h.incoming.bind(a);
    h.incoming = (t, p) => (t === GK_TOPIC ? undefined : orig(t, p));
    const k = a.keyring as unknown as { destroy(): void; onConnectionLost(): void };
    k.destroy = () => {};
    k.onConnectionLost = () => {};
  };

  beforeAll(async () => {
    await run(['keyservice', 'account', '--data', brokerDir, '--password-file', pwFile]);
    const admin = SqliteRegistry.open(brokerDir, { memberKeys: null });
    await admin.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
    await admin.addRule('sensor', 'subscribe', 'cmd/%u/#', 'e2e');
    await admin.addRole('auditor');
    await admin.addRule('auditor', 'subscribe', 'sensors/#');
    await admin.close();
    for (const [id, role] of [['dev1', 'sensor'], ['app1', 'app'], ['app2', 'app'], ['aud1', 'auditor']]) await provision(id, role);

    broker = Child.start(['broker', '--data', brokerDir, '--port', '0', '--keyservice', 'external', '--log-level', 'warn']);
    brokerPort = Number((await broker.line(/listening on mqtt:\/\/127\.0\.0\.1:(\d+)/))[1]);
    await proxy.start(brokerPort);
    ks = Child.start(['keyservice', '--broker', `mqtt://127.0.0.1:${proxy.port}`, '--data', ksDir, '--password-file', pwFile, '--log-level', 'warn']);
    await ks.line(/key service linked/);
  }, 90_000);

  afterAll(async () => {
    for (const a of open) await a.end().catch(() => {});
    await ks?.stop();
    await broker?.stop();
    proxy.close();
    dir.remove();
  });

  it('members get their keys from the key service process; readings and commands travel end to end', async () => {
    const dev = await member('dev1');
    const app1 = await member('app1');
    const aud = await member('aud1');
    expect(dev.groups().map((g) => g.filter)).toEqual(['cmd/dev1/#', 'sensors/dev1/#']);
    expect(app1.groups()).toContainEqual(expect.objectContaining({ filter: 'sensors/dev1/#', reader: true }));
    expect(aud.groups()).toEqual([expect.objectContaining({ filter: 'sensors/dev1/#', reader: true, writer: false })]);
    const fromApp = received(app1);
    const fromAud = received(aud);
    const fromDev = received(dev);
    await app1.subscribe('sensors/#');
    await aud.subscribe('sensors/#');
    await dev.subscribe('cmd/dev1/#');
    const m = `MARKER-${randomBytes(8).toString('hex')}`;
    markers.push(m);
    await dev.publish('sensors/dev1/reading', m, { qos: 1 });
    const c = `MARKER-CMD-${randomBytes(8).toString('hex')}`;
    markers.push(c);
    await app1.publish('cmd/dev1/interval', c, { qos: 1 });
    await waitFor(() => fromApp.length === 1 && fromAud.length === 1 && fromDev.length === 1, 5000, 'deliveries');
    expect(fromApp[0]).toEqual({ topic: 'sensors/dev1/reading', text: m, publisher: 'dev1' });
    expect(fromAud[0].text).toBe(m);
    expect(fromDev[0]).toEqual({ topic: 'cmd/dev1/interval', text: c, publisher: 'app1' });
  });

  it('an app revoked: the group moves to a new epoch within 1 s and the app cannot open what is sealed after', async () => {
    const [dev, app1] = open;
    const app2 = await member('app2');
    const before = epochOf(app1, 'sensors/dev1/#');
    expect(epochOf(app2, 'sensors/dev1/#')).toBe(before);
    await app1.subscribe('sensors/#');
    const raw = rawAt(app1, 'sensors/dev1/reading');
    const got = received(app1);
    turnHostile(app2);
    const t0 = Date.now();
    await run(['device', 'revoke', 'app2', '--data', brokerDir, '--keyservice-data', ksDir]);
    await waitFor(() => epochOf(app1, 'sensors/dev1/#') > before && epochOf(dev, 'sensors/dev1/#') > before, 1000, 'members re-keyed');
    const took = (rekeyMs.revoke = Date.now() - t0);
    expect(took).toBeLessThan(1000);
    const m = `MARKER-${randomBytes(8).toString('hex')}`;
    markers.push(m);
    await dev.publish('sensors/dev1/reading', m, { qos: 1 });
    await waitFor(() => raw.length === 1 && got.length === 1, 5000, 'reading after the revocation');
    expect(got[0].text).toBe(m);
    expect(app2.groups()).toContainEqual(expect.objectContaining({ filter: 'sensors/dev1/#', epoch: before })); // what it kept
    expect(['UNKNOWN_SESSION', 'DECRYPT_FAILED']).toContain(tryOpen(app2, 'sensors/dev1/reading', raw[0]));
    await expect(connectApp({ url: `mqtt://127.0.0.1:${proxy.port}`, id: 'app2', key: keys.get('app2')!, keyTimeoutMs: 1000, reconnect: false })).rejects.toThrow();
  });

  it("a rule removed: the auditor leaves the group within 1 s and cannot open what is sealed after", async () => {
    const [dev, app1, aud] = open;
    const before = epochOf(app1, 'sensors/dev1/#');
    const raw = rawAt(app1, 'sensors/dev1/reading');
    turnHostile(aud);
    const t0 = Date.now();
    const admin = SqliteRegistry.open(brokerDir, { memberKeys: null });
    expect(await admin.removeRule('auditor', 'subscribe', 'sensors/#')).toBe(true);
    await admin.close();
    await waitFor(() => epochOf(app1, 'sensors/dev1/#') > before && epochOf(dev, 'sensors/dev1/#') > before, 1000, 'members re-keyed');
    expect((rekeyMs.ruleRemoved = Date.now() - t0)).toBeLessThan(1000);
    const m = `MARKER-${randomBytes(8).toString('hex')}`;
    markers.push(m);
    await dev.publish('sensors/dev1/reading', m, { qos: 1 });
    await waitFor(() => raw.length === 1, 5000, 'reading after the rule removal');
    expect(epochOf(aud, 'sensors/dev1/#')).toBe(before);
    expect(['UNKNOWN_SESSION', 'DECRYPT_FAILED']).toContain(tryOpen(aud, 'sensors/dev1/reading', raw[0]));
  });

  it("a device's key rotated: whoever holds the old key cannot open the commands sealed after; the new key gets the new epoch", async () => {
    const [oldDev, app1] = open;
    const before = epochOf(app1, 'cmd/dev1/#');
    turnHostile(oldDev);
    const t0 = Date.now();
    await run(['device', 'rotate', 'dev1', '--data', brokerDir, '--keyservice-data', ksDir, '--json', '--config', join(dir.path, 'dev1.json')]);
    await waitFor(() => epochOf(app1, 'cmd/dev1/#') > before, 1000, 'app1 re-keyed');
    expect((rekeyMs.rotate = Date.now() - t0)).toBeLessThan(1000);
    keys.set('dev1', (JSON.parse(readFileSync(join(dir.path, 'dev1.json'), 'utf8')) as { key: string }).key);
    flash.delete('dev1'); // a re-provisioned device starts over
    const newDev = await member('dev1');
    expect(epochOf(newDev, 'cmd/dev1/#')).toBe(epochOf(app1, 'cmd/dev1/#'));
    const raw = rawAt(newDev, 'cmd/dev1/interval');
    const got = received(newDev);
    await newDev.subscribe('cmd/dev1/#');
    const c = `MARKER-CMD-${randomBytes(8).toString('hex')}`;
    markers.push(c);
    await app1.publish('cmd/dev1/interval', c, { qos: 1 });
    await waitFor(() => raw.length === 1 && got.length === 1, 5000, 'command after the rotation');
    expect(got[0].text).toBe(c);
    expect(epochOf(oldDev, 'cmd/dev1/#')).toBe(before);
    expect(['UNKNOWN_SESSION', 'DECRYPT_FAILED']).toContain(tryOpen(oldDev, 'cmd/dev1/interval', raw[0]));
  });

  it('an operator rotation (`mqsec group rotate`) reaches the key service process: connected members get the new epoch within 1 s', async () => {
    const app1 = open[1];
    const dev = open[open.length - 1];
    const before = epochOf(app1, 'sensors/dev1/#');
    await expect(run(['group', 'rotate', 'sensors/nobody/#', '--data', brokerDir])).rejects.toThrow(/no end-to-end group/);
    const t0 = Date.now();
    expect(await run(['group', 'rotate', 'sensors/dev1/#', '--data', brokerDir])).toMatch(/rotation requested/);
    await waitFor(() => epochOf(app1, 'sensors/dev1/#') === before + 1 && epochOf(dev, 'sensors/dev1/#') === before + 1, 1000, 'members re-keyed');
    expect((rekeyMs.groupRotate = Date.now() - t0)).toBeLessThan(1000);
    expect(epochOf(app1, 'cmd/dev1/#')).toBeGreaterThan(0); // other groups untouched
    const got = received(app1);
    const m = `MARKER-${randomBytes(8).toString('hex')}`;
    markers.push(m);
    await dev.publish('sensors/dev1/reading', m, { qos: 1 });
    await waitFor(() => got.length === 1, 5000, 'reading under the rotated key');
    expect(got[0].text).toBe(m);
  });

  it('a restarted key service continues the epochs and sequence ranges; members answered by the old process are sent to ask again', async () => {
    const app1 = open[1];
    const dev = open[open.length - 1];
    const epochs = app1.groups().map((g) => [g.filter, g.epoch] as const);
    const seq = (dev.keyring as unknown as { seqLimit: number }).seqLimit;
    expect(seq).toBeGreaterThan(0);
    const closed = Promise.all([app1, dev].map((a) => new Promise<void>((r) => a.client.once('close', () => r()))));
    await ks.stop();
    ks = Child.start(['keyservice', '--broker', `mqtt://127.0.0.1:${proxy.port}`, '--data', ksDir, '--password-file', pwFile, '--log-level', 'warn']);
    await ks.line(/key service linked/);
    await closed; // the broker closed both: their delivery answers died with the old process
    const app1b = await member('app1');
    const devb = await member('dev1');
    for (const [f, e] of epochs) expect(epochOf(app1b, f)).toBeGreaterThan(e);
    expect((devb.keyring as unknown as { seqBase: number }).seqBase).toBeGreaterThanOrEqual(seq);
    const got = received(app1b);
    await app1b.subscribe('sensors/#');
    const m = `MARKER-${randomBytes(8).toString('hex')}`;
    markers.push(m);
    await devb.publish('sensors/dev1/reading', m, { qos: 1 });
    await waitFor(() => got.length === 1, 5000, 'reading after the restart');
    expect(got[0].text).toBe(m);
  });

  it('a restarted broker: the key service links again by itself, members reconnect and get the same epochs from it', async () => {
    const app1 = open[open.length - 2];
    const dev = open[open.length - 1];
    const epochs = app1.groups().map((g) => [g.filter, g.epoch] as const);
    const closed = Promise.all([app1, dev].map((a) => new Promise<void>((r) => a.client.once('close', () => r()))));
    const scan = scanProcessMemory(broker.proc.pid!, needlesNow());
    firstBrokerScan = { found: [...scan.found], bytes: scan.bytes };
    await broker.stop();
    await closed;
    broker = Child.start(['broker', '--data', brokerDir, '--port', '0', '--keyservice', 'external', '--log-level', 'warn']);
    proxy.target = Number((await broker.line(/listening on mqtt:\/\/127\.0\.0\.1:(\d+)/))[1]);
    // members' key requests wait at the broker until the key service (reconnecting every 500 ms) is linked again
    const app1b = await member('app1');
    const devb = await member('dev1');
    // the key service kept running: the restarted broker's policy is the same, so the groups keep their epochs (never go back)
    for (const [f, e] of epochs) expect(epochOf(app1b, f)).toBe(e);
    const got = received(app1b);
    await app1b.subscribe('sensors/#');
    const m = `MARKER-${randomBytes(8).toString('hex')}`;
    markers.push(m);
    await devb.publish('sensors/dev1/reading', m, { qos: 1 });
    await waitFor(() => got.length === 1, 5000, 'reading after the broker restart');
    expect(got[0].text).toBe(m);
  }, 60_000);

  it('curious broker: nothing it received, stored or holds in memory contains a reading, a group key or K_ks', async () => {
    const needles = needlesNow();
    expect(markers.length).toBeGreaterThanOrEqual(6);
    expect(learntKeys.length).toBeGreaterThanOrEqual(8);
    const wire = proxy.all();
    expect(wire.includes(Buffer.from(GK_TOPIC))).toBe(true); // key deliveries did cross this wire
    expect(wire.includes(Buffer.from(KS_IN_TOPIC))).toBe(true); // and the key service link
    const f = curiousBrokerFindings(broker.proc.pid!, brokerDir, wire, needles);
    expect(f.memoryBytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(f.inWire).toEqual([]);
    expect(f.inFiles).toEqual([]);
    expect(f.inMemory).toEqual([]);
    // what its data directory can open with its own master key: K_auth|K_psk per principal, no K, no key service store
    expect(filesUnder(brokerDir).map((x) => x.slice(brokerDir.length + 1)).filter((n) => !/^(registry\.db(-wal|-shm)?|master\.key|broker\.lock)$/.test(n))).toEqual([]);
    const master = readFileSync(join(brokerDir, MASTER_KEY_FILE));
    const db = new Database(join(brokerDir, 'registry.db'), { readonly: true });
    for (const row of db.prepare('SELECT id, key_version, key_sealed, hs_sealed FROM devices').all() as { id: string; key_version: number; key_sealed: Buffer; hs_sealed: Buffer }[]) {
      expect(row.key_sealed.length).toBe(0);
      const hs = openDeviceKey(master, `hs|${row.id}`, row.key_version, row.hs_sealed);
      expect(Buffer.from(hs).equals(Buffer.from(splitPrincipalKey(fromHex(keys.get(row.id)!), row.id).handshake))).toBe(true);
    }
    db.close();
    // and the first broker process, which saw every case before its restart
    expect(firstBrokerScan!.bytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(firstBrokerScan!.found).toEqual([]);
    console.info(`curious broker: ${needles.size} secrets looked for in ${wire.length} B of traffic, ${f.files} files, ${firstBrokerScan!.bytes} + ${f.memoryBytes} B of memory of the broker before and after its restart: none found; re-key after change (ms): ${JSON.stringify(rekeyMs)}`);
    // the scan does find what is there: the key service process holds the current group keys and K_ks
    const inKs = scanProcessMemory(ks.proc.pid!, needles).found;
    expect([...inKs].map(kind)).toContain('group key');
    expect([...inKs].map(kind)).toContain('K_ks');
  }, 60_000);
});

describe('the same curious-broker scan with the embedded key service (split undone)', () => {
  const dir = tempDir('mqsec-ksp-emb-');
  let broker: Child;
  const open: MqsecApp[] = [];
  afterAll(async () => {
    for (const a of open) await a.end().catch(() => {});
    await broker?.stop();
    dir.remove();
  });

  it('finds the group keys and K_ks in the broker: the scan above fails when the key service runs inside the broker', async () => {
    const keys = new Map<string, string>();
    const admin = SqliteRegistry.open(dir.path);
    await admin.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
    for (const [id, role] of [['dev1', 'sensor'], ['app1', 'app']]) keys.set(id, Buffer.from((await admin.addDevice(id, role)).key).toString('hex'));
    await admin.close();
    broker = Child.start(['broker', '--data', dir.path, '--port', '0', '--log-level', 'warn']);
    const port = Number((await broker.line(/listening on mqtt:\/\/127\.0\.0\.1:(\d+)/))[1]);
    const url = `mqtt://127.0.0.1:${port}`;
    const dev = await connectApp({ url, id: 'dev1', key: keys.get('dev1')!, keyTimeoutMs: 10_000, reconnect: false });
    const app1 = await connectApp({ url, id: 'app1', key: keys.get('app1')!, keyTimeoutMs: 10_000, reconnect: false });
    open.push(dev, app1);
    const got = received(app1);
    await app1.subscribe('sensors/#');
    const m = `MARKER-${randomBytes(8).toString('hex')}`;
    await dev.publish('sensors/dev1/reading', m, { qos: 1 });
    await waitFor(() => got.length === 1, 5000, 'reading');
    const needles = new Map<string, Uint8Array>([[`reading:${m}`, Buffer.from(m)]]);
    groupKeysOf(app1).forEach((k, i) => needles.set(`group key:${i}`, k));
    for (const [id, hex] of keys) needles.set(`K_ks:${id}`, deriveKeyServiceKey(suite, fromHex(hex), id));
    const f = curiousBrokerFindings(broker.proc.pid!, dir.path, Buffer.alloc(0), needles);
    expect(f.inMemory.map(kind)).toContain('group key');
    expect(f.inMemory.map(kind)).toContain('K_ks');
  }, 60_000);

  function received(a: MqsecApp) {
    const got: string[] = [];
    a.on('message', (_t, p) => got.push(p.toString('utf8')));
    return got;
  }
});

describe('the key service link over TLS, and while the key service is away', () => {
  const dir = tempDir('mqsec-ksp-tls-');
  const brokerDir = join(dir.path, 'broker');
  const ksDir = join(dir.path, 'keyservice');
  const pwFile = join(dir.path, 'ks.password');
  let broker: Child;
  let ks: Child | undefined;
  const open: MqsecApp[] = [];
  afterAll(async () => {
    for (const a of open) await a.end().catch(() => {});
    await ks?.stop();
    await broker?.stop();
    dir.remove();
  });

  it('a member that connects before the key service is linked gets its keys once it is; plain TCP refused off the local addresses, mqtts with --ca linked; mqsec_keyservice_linked follows', async () => {
    await run(['keyservice', 'account', '--data', brokerDir, '--password-file', pwFile]);
    const admin = SqliteRegistry.open(brokerDir, { memberKeys: null });
    await admin.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
    await admin.close();
    const out = await run(['device', 'add', 'app1', '--role', 'app', '--data', brokerDir, '--keyservice-data', ksDir, '--json', '--config', join(dir.path, 'app1.json')]);
    await run(['device', 'add', 'dev1', '--role', 'sensor', '--data', brokerDir, '--keyservice-data', ksDir, '--json', '--config', join(dir.path, 'dev1.json')]);
    const appKey = (JSON.parse(out) as { key: string }).key;
    // loopback is not a local address here: a password login needs TLS
    broker = Child.start(['broker', '--data', brokerDir, '--port', '0', '--tls-port', '0', '--metrics-port', '0', '--local-addresses', '192.0.2.0/24', '--keyservice', 'external', '--log-level', 'warn']);
    const port = Number((await broker.line(/listening on mqtt:\/\/127\.0\.0\.1:(\d+)/))[1]);
    const [, tlsPort, cert] = await broker.line(/TLS on mqtts:\/\/127\.0\.0\.1:(\d+) \(certificate (\S+),/);
    const metricsUrl = (await broker.line(/metrics on (http:\S+)/))[1];
    const linkedGauge = async () => Number((await (await fetch(metricsUrl)).text()).match(/^mqsec_keyservice_linked (\d+)/m)?.[1]);
    expect(await linkedGauge()).toBe(0);

    const early = connectApp({ url: `mqtt://127.0.0.1:${port}`, id: 'app1', key: appKey, keyTimeoutMs: 30_000, reconnect: false });
    early.then((a) => open.push(a), () => {});
    // over plain TCP from a non-local address the key service's login is refused, and it says so
    const plain = Child.start(['keyservice', '--broker', `mqtt://127.0.0.1:${port}`, '--data', join(dir.path, 'other'), '--password-file', pwFile, '--log-level', 'warn']);
    expect(await plain.exited).not.toBe(0);
    expect(plain.stderr()).toMatch(/refused the key service login/);
    expect(await linkedGauge()).toBe(0);
    // over TLS with the broker's certificate
    ks = Child.start(['keyservice', '--broker', `mqtts://127.0.0.1:${tlsPort}`, '--ca', cert, '--data', ksDir, '--password-file', pwFile, '--log-level', 'warn']);
    await ks.line(/key service linked/);
    const app1 = await early; // its key request waited at the broker
    expect(app1.groups()).toEqual([expect.objectContaining({ filter: 'sensors/dev1/#', reader: true })]);
    expect(await linkedGauge()).toBe(1);
    await ks.stop();
    ks = undefined;
    let g = 1;
    for (let i = 0; i < 50 && g !== 0; i++) {
      g = await linkedGauge();
      if (g !== 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(g).toBe(0);
  }, 90_000);
});

describe('one key service for the nodes of a cluster', () => {
  const dir = tempDir('mqsec-ksp-cl-');
  const brokerDir = join(dir.path, 'broker');
  const ksDir = join(dir.path, 'keyservice');
  const pwFile = join(dir.path, 'ks.password');
  let redis: RunningRedis | undefined;
  const nodes: Child[] = [];
  let ks: Child | undefined;
  const open: MqsecApp[] = [];
  afterAll(async () => {
    for (const a of open) await a.end().catch(() => {});
    await ks?.stop();
    for (const n of nodes) await n.stop();
    await redis?.stop();
    dir.remove();
  });

  it.skipIf(!hasRedis())('members on two nodes get the same group keys from one key service linked to both; a revocation on the shared registry re-keys both within 1 s', async () => {
    redis = await startRedis();
    await run(['keyservice', 'account', '--data', brokerDir, '--password-file', pwFile]);
    const admin = SqliteRegistry.open(brokerDir, { memberKeys: null });
    await admin.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
    await admin.close();
    const keys = new Map<string, string>();
    for (const [id, role] of [['dev1', 'sensor'], ['app1', 'app'], ['app2', 'app']]) {
      const out = await run(['device', 'add', id, '--role', role, '--data', brokerDir, '--keyservice-data', ksDir, '--json', '--config', join(dir.path, `${id}.json`)]);
      keys.set(id, (JSON.parse(out) as { key: string }).key);
    }
    const ports: number[] = [];
    for (const id of ['n1', 'n2']) {
      const n = Child.start(['broker', '--data', brokerDir, '--port', '0', '--cluster', redis.url, '--node-id', id, '--keyservice', 'external', '--log-level', 'warn']);
      nodes.push(n);
      ports.push(Number((await n.line(/listening on mqtt:\/\/127\.0\.0\.1:(\d+)/))[1]));
    }
    ks = Child.start(['keyservice', ...ports.flatMap((p) => ['--broker', `mqtt://127.0.0.1:${p}`]), '--data', ksDir, '--password-file', pwFile, '--log-level', 'warn']);
    await ks.line(/key service linked/);
    const at = (i: number, id: string) => connectApp({ url: `mqtt://127.0.0.1:${ports[i]}`, id, key: keys.get(id)!, keyTimeoutMs: 10_000, reconnect: false }).then((a) => (open.push(a), a));
    const dev = await at(1, 'dev1');
    const app1 = await at(0, 'app1');
    const app2 = await at(1, 'app2');
    const key = (a: MqsecApp) => Buffer.from(groupKeysOf(a)[0]!).toString('hex');
    expect(key(app1)).toBe(key(dev)); // one key per group epoch across the nodes
    expect(key(app2)).toBe(key(dev));
    const got = received(app1);
    await app1.subscribe('sensors/#');
    await dev.publish('sensors/dev1/reading', 'across nodes', { qos: 1 });
    await waitFor(() => got.length === 1, 5000, 'reading from node 2 at node 1');
    expect(got[0]).toMatchObject({ text: 'across nodes', publisher: 'dev1' });
    const before = epochOf(app1, 'sensors/dev1/#');
    const t0 = Date.now();
    await run(['device', 'revoke', 'app2', '--data', brokerDir, '--keyservice-data', ksDir]);
    await waitFor(() => epochOf(app1, 'sensors/dev1/#') > before && epochOf(dev, 'sensors/dev1/#') > before, 1000, 'both nodes re-keyed');
    const took = Date.now() - t0;
    expect(took).toBeLessThan(1000);
    // both nodes sent the new policy: the group moved one epoch, not one per node
    await new Promise((r) => setTimeout(r, 600));
    expect(epochOf(app1, 'sensors/dev1/#')).toBe(before + 1);
    expect(key(app1)).toBe(key(dev));
    await dev.publish('sensors/dev1/reading', 'after the revocation', { qos: 1 });
    await waitFor(() => got.length === 2, 5000, 'reading after the revocation');
    expect(got[1].text).toBe('after the revocation');

    // `mqsec group rotate` on the shared registry: both nodes pass it on (each polls every 250 ms),
    // the key service applies that rotation once: one epoch per cluster, not one per node
    const beforeRotate = epochOf(app1, 'sensors/dev1/#');
    await run(['group', 'rotate', 'sensors/dev1/#', '--data', brokerDir]);
    await waitFor(() => epochOf(app1, 'sensors/dev1/#') > beforeRotate && epochOf(dev, 'sensors/dev1/#') > beforeRotate, 5000, 'the rotation reached both nodes');
    await new Promise((r) => setTimeout(r, 1500));
    expect(epochOf(app1, 'sensors/dev1/#')).toBe(beforeRotate + 1);
    expect(epochOf(dev, 'sensors/dev1/#')).toBe(beforeRotate + 1);
    expect(key(app1)).toBe(key(dev));
    await dev.publish('sensors/dev1/reading', 'after the rotation', { qos: 1 });
    await waitFor(() => got.length === 3, 5000, 'reading after the rotation');
    expect(got[2].text).toBe('after the rotation');
  }, 90_000);

  it('a cluster node refuses the embedded key service, with the way out in the message', async () => {
    await expect(run(['broker', '--data', join(dir.path, 'refused'), '--port', '0', '--cluster', 'redis://127.0.0.1:1', '--node-id', 'n9'])).rejects.toThrow(/--keyservice external/);
    await expect(startBroker({ dataDir: join(dir.path, 'refused'), port: 0, logLevel: 'silent', cluster: { url: 'redis://127.0.0.1:1', nodeId: 'n9' } })).rejects.toThrow(/cannot run the embedded key service/);
  });
});
