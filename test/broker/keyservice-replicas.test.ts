/**
 * Key service replicas on one PostgreSQL state (docs/protocol.md §14.13),
 * all real processes: PostgreSQL, `mqsec broker --keyservice external`, two
 * `mqsec keyservice --db postgres://...` replicas, an app and a device
 * (SDK) exchanging end-to-end readings.
 *
 * - One replica is active (linked), the other waits on the active lock.
 * - `kill -9` the active one under a stream of QoS 1 readings: the standby
 *   takes over (measured: kill -> standby linked, kill -> first reading the
 *   app opens that was sealed after the kill), every reading sent arrives,
 *   the members are on new epochs.
 * - The store shows nothing handed out twice: the journal (written in the
 *   same statement as each epoch and range) has every epoch of a group once
 *   and no overlapping ranges, from both replicas.
 * - The killed replica started again waits as standby.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { KEY_SERVICE_KEY_FILE } from '../../broker/keyservice/store.js';
import { MemoryStorage } from '../../firmware/core/memory-storage.js';
import { hasPostgres, startPostgres, type RunningPostgres } from '../helpers/postgres.js';
import { overlapping } from './keyservice-store.js';
import { tempDir, waitFor } from './helpers.js';
import { freePort } from '../helpers/brokers.js';

const BIN = resolve(import.meta.dirname, '../../cli/bin.mjs');

async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), readStdin: async () => '' };
  const code = await main(['node', 'mqsec', ...args], io);
  process.exitCode = 0;
  if (code !== 0) throw new Error(`mqsec ${args.join(' ')} failed: ${err.join('\n')}`);
  return out.join('\n');
}

/** A CLI child process; each stdout line with the time it arrived. */
class Child {
  readonly lines: { at: number; text: string }[] = [];
  readonly exited: Promise<number | null>;
  private err = '';
  stderrText(): string {
    return this.err;
  }
  constructor(readonly proc: ChildProcess) {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      const at = Date.now();
      buf += d.toString('utf8');
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const text of parts) this.lines.push({ at, text });
    });
    proc.stderr!.on('data', (d: Buffer) => (this.err = (this.err + d.toString('utf8')).slice(-4000)));
    this.exited = new Promise((r) => proc.once('exit', (code) => r(code)));
  }
  static start(args: string[]): Child {
    return new Child(spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  }
  async line(re: RegExp, ms = 30_000, after = 0): Promise<{ at: number; m: RegExpMatchArray }> {
    let hit: { at: number; m: RegExpMatchArray } | undefined;
    await waitFor(
      () => {
        for (const l of this.lines) {
          const m = l.at >= after ? l.text.match(re) : null;
          if (m) return !!(hit = { at: l.at, m });
        }
        return false;
      },
      ms,
      `${re} (stdout: ${this.lines.map((l) => l.text).join(' | ')}; stderr: ${this.err.slice(-800)})`,
    );
    return hit!;
  }
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 8000);
    await this.exited;
    clearTimeout(t);
  }
}

describe.skipIf(!hasPostgres())('key service replicas on PostgreSQL', () => {
  const dir = tempDir('mqsec-ksrep-');
  const brokerDir = join(dir.path, 'broker');
  const ksDirA = join(dir.path, 'ks-a');
  const ksDirB = join(dir.path, 'ks-b');
  const pwFile = join(dir.path, 'ks.password');
  const keys = new Map<string, string>();
  const open: MqsecApp[] = [];
  let server: RunningPostgres;
  let url = '';
  let broker: Child;
  let a: Child;
  let b: Child;
  let brokerPort = 0;
  const replicaArgs = (data: string) => ['keyservice', '--broker', `mqtt://127.0.0.1:${brokerPort}`, '--data', data, '--db', url, '--password-file', pwFile, '--log-level', 'warn'];

  beforeAll(async () => {
    server = await startPostgres();
    url = await server.createDatabase();
    await run(['keyservice', 'account', '--data', brokerDir, '--password-file', pwFile]);
    const admin = SqliteRegistry.open(brokerDir, { memberKeys: null });
    await admin.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
    await admin.close();
    // provisioning writes K_ks into the replicas' PostgreSQL, sealed under keyservice.key (made here, then copied)
    for (const [id, role] of [['dev1', 'sensor'], ['app1', 'app']]) {
      const out = await run(['device', 'add', id, '--role', role, '--data', brokerDir, '--keyservice-data', ksDirA, '--keyservice-db', url, '--json', '--config', join(dir.path, `${id}.json`)]);
      keys.set(id, (JSON.parse(out) as { key: string }).key);
    }
    mkdirSync(ksDirB, { mode: 0o700 });
    copyFileSync(join(ksDirA, KEY_SERVICE_KEY_FILE), join(ksDirB, KEY_SERVICE_KEY_FILE));
    broker = Child.start(['broker', '--data', brokerDir, '--port', '0', '--keyservice', 'external', '--log-level', 'warn']);
    brokerPort = Number((await broker.line(/listening on mqtt:\/\/127\.0\.0\.1:(\d+)/)).m[1]);
    a = Child.start(replicaArgs(ksDirA));
    await a.line(/key service linked/);
    b = Child.start(replicaArgs(ksDirB));
    await b.line(/standby: another replica is active/);
  }, 120_000);

  afterAll(async () => {
    for (const x of open) await x.end().catch(() => {});
    await a?.stop();
    await b?.stop();
    await broker?.stop();
    await server?.stop();
    dir.remove();
  });

  it('kill -9 the active replica: the standby takes over, every QoS 1 reading arrives, nothing handed out twice', async () => {
    const member = async (id: string, persistent: boolean) => {
      const x = await connectApp({ url: `mqtt://127.0.0.1:${brokerPort}`, id, key: keys.get(id)!, storage: new MemoryStorage(), keyTimeoutMs: 10_000, persistent, reconnect: { initialMs: 100, maxMs: 1000 } });
      open.push(x);
      return x;
    };
    const app = await member('app1', true);
    const dev = await member('dev1', false);
    const got = new Map<string, number>();
    app.on('message', (_t, payload) => {
      const n = payload.toString('utf8');
      got.set(n, Date.now());
    });
    await app.subscribe('sensors/#');
    const epochOf = (x: MqsecApp) => x.groups().find((g) => g.filter === 'sensors/dev1/#')?.epoch ?? 0;
    const epochBefore = epochOf(app);
    let rekeyedAt = 0;
    for (const x of [app, dev]) x.on('keys', () => epochOf(app) > epochBefore && epochOf(dev) > epochBefore && !rekeyedAt && (rekeyedAt = Date.now()));

    // a reading every 50 ms, each resolved at its PUBACK (the SDK resends across reconnects)
    const sent: { text: string; at: number }[] = [];
    const acks: Promise<unknown>[] = [];
    let streaming = true;
    const stream = (async () => {
      for (let i = 0; streaming; i++) {
        const text = `reading-${i}`;
        sent.push({ text, at: Date.now() });
        acks.push(dev.publish('sensors/dev1/t', text, { qos: 1 }));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await waitFor(() => got.size >= 10, 10_000, 'readings before the kill');

    const status = async () => JSON.parse(await run(['keyservice', 'status', '--db', url, '--json'])) as { active?: { name: string }; standbys: { name: string }[]; memberKeys: number; groups: number; journal: { rows: number } };
    const before = await status();
    expect(before.active?.name).toMatch(/^mqsec-keyservice keyservice@/);
    expect(before.standbys.length).toBe(1);
    expect(before.memberKeys).toBe(2);
    const killedAt = Date.now();
    a.proc.kill('SIGKILL');
    expect(b.lines.some((l) => /linked/.test(l.text))).toBe(false); // the standby never linked while the other held the lock
    const linked = await b.line(/key service linked/, 30_000, killedAt);
    await waitFor(() => rekeyedAt > 0, 30_000, 'app and device on the new epoch from the standby');
    await waitFor(() => sent.some((s) => s.at > rekeyedAt && got.has(s.text)), 30_000, 'a reading sealed under the new epoch arrives');
    const firstAfter = Math.min(...sent.filter((s) => s.at > rekeyedAt && got.has(s.text)).map((s) => got.get(s.text)!));
    await new Promise((r) => setTimeout(r, 500));
    streaming = false;
    await stream;
    await Promise.all(acks);
    await waitFor(() => sent.every((s) => got.has(s.text)), 15_000, 'every reading acknowledged is delivered');
    expect(sent.filter((s) => !got.has(s.text))).toEqual([]);
    expect(epochOf(app)).toBeGreaterThan(epochBefore);
    console.log(
      `[key service replicas] kill -9 of the active replica -> standby linked ${linked.at - killedAt} ms; -> app and device on new epochs ${rekeyedAt - killedAt} ms; ` +
        `-> first reading sent after that delivered ${firstAfter - killedAt} ms; ${sent.length} QoS 1 readings sent, ${sent.filter((s) => got.has(s.text)).length} delivered`,
    );

    // the store: every epoch of a group once, no overlapping ranges, handed out by both replicas
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const rows = (await c.query<{ holder: string; kind: string; subject: string; first: string; last: string }>('SELECT holder, kind, subject, first, last FROM ks_journal ORDER BY seq')).rows;
      const epochs = rows.filter((r) => r.kind === 'epoch');
      const seqs = rows.filter((r) => r.kind === 'seq');
      expect(new Set(epochs.map((r) => r.holder)).size).toBe(2);
      expect(new Set(seqs.map((r) => r.holder)).size).toBe(2);
      for (const g of new Set(epochs.map((r) => r.subject))) {
        const list = epochs.filter((r) => r.subject === g).map((r) => Number(r.first));
        expect(new Set(list).size).toBe(list.length);
      }
      expect(rows.some((r) => r.kind === 'reset')).toBe(false);
      for (const w of new Set(seqs.map((r) => r.subject))) {
        expect(overlapping(seqs.filter((r) => r.subject === w).map((r) => [Number(r.first), Number(r.last) - Number(r.first) + 1] as [number, number]))).toEqual([]);
      }
    } finally {
      await c.end();
    }

    // the killed replica started again waits as standby; `mqsec keyservice status` shows the other one active
    a = Child.start(replicaArgs(ksDirA));
    await a.line(/standby: another replica is active/);
    const after = await status();
    expect(after.active?.name).toBe(before.standbys[0]!.name);
    expect(after.standbys.map((x) => x.name)).not.toContain(before.active!.name); // a new instance of the killed one
    expect(after.standbys.length).toBe(1);
    expect(after.groups).toBeGreaterThan(0);
    expect(after.journal.rows).toBeGreaterThan(before.journal.rows);
  }, 120_000);

  it('an orderly stop of the active replica hands over at once; a replica with another keyservice.key is refused', async () => {
    const stoppedAt = Date.now();
    await b.stop();
    const linked = await a.line(/key service linked/, 30_000, stoppedAt);
    console.log(`[key service replicas] SIGTERM of the active replica -> standby linked ${linked.at - stoppedAt} ms`);
    const wrong = Child.start(replicaArgs(join(dir.path, 'ks-wrong')));
    expect(await wrong.exited).not.toBe(0);
    // one line and exit 69 (EX_UNAVAILABLE) when the database cannot be reached; a replica must say where its key is
    const unreachable = Child.start(['keyservice', '--broker', `mqtt://127.0.0.1:${brokerPort}`, '--data', join(dir.path, 'ks-x'), '--db', `postgres://mqsec:secret@127.0.0.1:${await freePort()}/x`, '--password-file', pwFile]);
    expect(await unreachable.exited).toBe(69);
    expect(unreachable.stderrText()).toMatch(/key service store unavailable: cannot reach postgres:\/\/mqsec:\*\*\*@/);
    await expect(run(['device', 'add', 'dev9', '--role', 'sensor', '--data', brokerDir, '--keyservice-db', url])).rejects.toThrow(/--keyservice-db needs --keyservice-data/);
    b = Child.start(replicaArgs(ksDirB));
    await b.line(/standby: another replica is active/);
  }, 60_000);

  it('PostgreSQL away: the active replica steps down, and a replica is active and linked again by itself once it is back, on new epochs', async () => {
    const epochBefore = open[0]!.groups().find((g) => g.filter === 'sensors/dev1/#')!.epoch;
    const pausedAt = Date.now();
    await server.pause();
    await a.line(/stepped down/, 20_000, pausedAt);
    await new Promise((r) => setTimeout(r, 1000));
    const resumedAt = Date.now();
    await server.resume();
    await waitFor(() => [a, b].some((x) => x.lines.some((l) => l.at >= resumedAt && /key service linked/.test(l.text))), 30_000, 'a replica linked again');
    // and only one of them
    await new Promise((r) => setTimeout(r, 1500));
    expect([a, b].filter((x) => x.lines.some((l) => l.at >= resumedAt && /key service linked/.test(l.text))).length).toBe(1);
    const app = open[0]!;
    const dev = open[1]!;
    const got: string[] = [];
    app.on('message', (_t, p) => got.push(p.toString('utf8')));
    await dev.publish('sensors/dev1/t', 'after PostgreSQL came back', { qos: 1 });
    await waitFor(() => got.includes('after PostgreSQL came back'), 15_000, 'a reading after PostgreSQL came back');
    await waitFor(() => app.groups().find((g) => g.filter === 'sensors/dev1/#')!.epoch > epochBefore, 15_000, 'the group on a new epoch');
  }, 90_000);
});
