/**
 * The app side of the command line on a live broker:
 * - `mqsec app add --json` prints the key once and writes the app config (0600);
 * - `mqsec sub` (its own process) prints plaintext readings of an e2e topic and
 *   of a hop topic, first with phase 1, on the next run with phase 2;
 * - `mqsec pub` seals a command end to end that the device opens, with the
 *   app's id as publisher;
 * - `mqsec app revoke` / `rotate`: the old config is refused, the rewritten one works;
 * - mixed mode: one e2e topic read by an SDK app and one hop topic read by a
 *   plaintext account through the real `mosquitto_sub`, which gets nothing of
 *   the e2e topic.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import type { RunningBroker } from '../../broker/server.js';
import { tempDir, testBroker, waitFor } from '../broker/helpers.js';
import { startCli, type CliProcess } from '../helpers/cli-process.js';

const dir = tempDir('mqsec-app-cli-');
const data = join(dir.path, 'data');
let broker: RunningBroker;
let dev: MqsecApp;
const devGot: { topic: string; text: string; publisher?: string; mode: string }[] = [];
const procs: CliProcess[] = [];

async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), readStdin: async () => '' };
  const code = await main(['node', 'mqsec', ...args], io);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function cli(args: string[]): CliProcess {
  const p = startCli(args, { cwd: dir.path });
  procs.push(p);
  return p;
}

beforeAll(async () => {
  // the registry as an operator makes it, before the broker starts
  expect((await run(['acl', 'add', 'sensor', 'allow', 'publish', 'sensors/%u/#', '--mode', 'e2e', '--data', data])).code).toBe(0);
  expect((await run(['acl', 'add', 'sensor', 'allow', 'subscribe', 'cmd/%u/#', '--mode', 'e2e', '--data', data])).code).toBe(0);
  expect((await run(['acl', 'add', 'sensor', 'allow', 'publish', 'status/%u', '--data', data])).code).toBe(0);
  expect((await run(['acl', 'add', 'app', 'allow', 'subscribe', 'status/#', '--data', data])).code).toBe(0);
  broker = await testBroker(data, { revisionPollMs: 50 });
  const k = (await broker.registry.addDevice('dev1', 'sensor')).key;
  await broker.syncRegistry();
  dev = await connectApp({ url: `mqtt://127.0.0.1:${broker.port}`, id: 'dev1', key: k });
  dev.on('message', (topic, p, info) => devGot.push({ topic, text: p.toString(), publisher: info.publisher, mode: info.mode }));
  await dev.subscribe('cmd/dev1/#');
}, 60_000);

afterAll(async () => {
  for (const p of procs) p.child.kill();
  await dev?.end();
  await broker?.stop();
  dir.remove();
});

describe('mqsec app add', () => {
  it('prints the key once as JSON and writes the app config with mode 0600; a second add of the name is refused', async () => {
    const r = await run(['app', 'add', 'ops', '--role', 'app', '--json', '--data', data, '--config', join(dir.path, 'app-config-ops.json'), '--broker-port', String(broker.port)]);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out) as { id: string; key: string; url: string; config: string };
    expect(printed).toEqual({ id: 'ops', key: expect.stringMatching(/^[0-9a-f]{64}$/), url: `mqtt://127.0.0.1:${broker.port}`, config: join(dir.path, 'app-config-ops.json') });
    const cfg = JSON.parse(readFileSync(printed.config, 'utf8'));
    expect(cfg).toEqual({ id: 'ops', key: printed.key, broker: { host: '127.0.0.1', port: broker.port } });
    expect(statSync(printed.config).mode & 0o777).toBe(0o600);
    expect(await broker.registry.getDevice('ops')).toMatchObject({ role: 'app', status: 'active' });
    expect((await run(['device', 'list', '--data', data])).out).toMatch(/^ops\s+app\s+active/m);
    const again = await run(['app', 'add', 'ops', '--data', data]);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/already exists/);
    // a second app for `pub`: one connection per principal id (MQTT client ids), so sub and pub run as two apps
    expect((await run(['app', 'add', 'ops-pub', '--json', '--data', data, '--config', join(dir.path, 'app-config-ops-pub.json'), '--broker-port', String(broker.port)])).code).toBe(0);
  });
});

describe('mqsec sub / mqsec pub', () => {
  it('sub prints the plaintext of an e2e reading and of a hop status (-v: topic payload); phase 1, then phase 2 on the next run', async () => {
    const sub = cli(['sub', '--app', 'ops', '-t', 'sensors/#', '-t', 'status/#', '-v', '-C', '2', '-W', '60']);
    await waitFor(() => /online \(phase 1\), subscribed/.test(sub.err()), 60_000, `sub online: ${sub.err()}`);
    await dev.publish('sensors/dev1/temp', '21.5', { qos: 1 });
    await dev.publish('status/dev1', 'online', { qos: 1 });
    expect(await sub.exited).toBe(0);
    expect(sub.out().trim().split('\n').sort()).toEqual(['sensors/dev1/temp 21.5', 'status/dev1 online']);

    const again = cli(['sub', '--app', 'ops', '-t', 'sensors/#', '--json', '-C', '1', '-W', '60']);
    await waitFor(() => /online \(phase 2\), subscribed/.test(again.err()), 60_000, `second sub online: ${again.err()}`);
    await dev.publish('sensors/dev1/temp', '22.0', { qos: 1 });
    expect(await again.exited).toBe(0);
    expect(JSON.parse(again.out())).toEqual({ topic: 'sensors/dev1/temp', payload: '22.0', mode: 'e2e', publisher: 'dev1', epoch: expect.any(Number), retain: false });
  }, 120_000);

  it('pub seals a command end to end: the device opens it, with the app as publisher', async () => {
    const pub = cli(['pub', '--app', 'ops-pub', '-t', 'cmd/dev1/interval', '-m', '30']);
    expect(await pub.exited).toBe(0);
    await waitFor(() => devGot.length === 1, 10_000, 'command at the device');
    expect(devGot).toEqual([{ topic: 'cmd/dev1/interval', text: '30', publisher: 'ops-pub', mode: 'e2e' }]);
    const bad = await run(['pub', '--config', join(dir.path, 'app-config-ops-pub.json'), '-t', 'cmd/dev1/x']);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/exactly one payload/);
  }, 60_000);

  it('a revoked app is refused; after rotate the rewritten config connects again and the old key stays refused', async () => {
    const oldConfig = readFileSync(join(dir.path, 'app-config-ops-pub.json'), 'utf8');
    expect((await run(['app', 'revoke', 'ops-pub', '--data', data])).code).toBe(0);
    await waitFor(async () => (await broker.registry.getDevice('ops-pub'))?.status === 'revoked', 5000);
    const refused = await run(['pub', '--config', join(dir.path, 'app-config-ops-pub.json'), '-t', 'cmd/dev1/interval', '-m', '31', '--url', `mqtt://127.0.0.1:${broker.port}`]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/cannot connect as ops-pub: .*CONNECTION_REFUSED/);
    const rot = await run(['app', 'rotate', 'ops-pub', '--data', data, '--config', join(dir.path, 'app-config-ops-pub.json')]);
    expect(rot.code).toBe(0);
    const newConfig = readFileSync(join(dir.path, 'app-config-ops-pub.json'), 'utf8');
    expect(JSON.parse(newConfig).key).not.toBe(JSON.parse(oldConfig).key);
    expect(JSON.parse(newConfig).broker).toEqual({ host: '127.0.0.1', port: broker.port });
    await new Promise((r) => setTimeout(r, 200)); // the broker's registry poll (50 ms) sees the new key
    const ok = await run(['pub', '--config', join(dir.path, 'app-config-ops-pub.json'), '-t', 'cmd/dev1/interval', '-m', '32', '--state', join(dir.path, 'fresh-state')]);
    expect(ok).toMatchObject({ code: 0 });
    await waitFor(() => devGot.length === 2, 10_000, 'second command');
    expect(devGot[1]).toMatchObject({ text: '32', publisher: 'ops-pub' });
    writeFileSync(join(dir.path, 'stale.json'), oldConfig);
    const stale = await run(['pub', '--config', join(dir.path, 'stale.json'), '-t', 'cmd/dev1/interval', '-m', '33', '--state', join(dir.path, 'stale-state')]);
    expect(stale.code).toBe(1);
    expect(stale.err).toMatch(/cannot connect as ops-pub: .*CONNECTION_REFUSED/);
    expect(devGot).toHaveLength(2);
  }, 60_000);
});

describe('mixed mode: an e2e topic for the SDK app, a hop topic for a plaintext account on mosquitto_sub', () => {
  it('mosquitto_sub with a password reads the hop status in plaintext and nothing of the e2e readings; the SDK app reads both', async () => {
    await broker.registry.addAccount('viewer', 'app', 'viewer-password');
    await broker.syncRegistry();
    const k = (await broker.registry.addDevice('backend', 'app')).key;
    await broker.syncRegistry();
    const app = await connectApp({ url: `mqtt://127.0.0.1:${broker.port}`, id: 'backend', key: k });
    const appGot: string[] = [];
    app.on('message', (t, p, info) => appGot.push(`${info.mode} ${t} ${p.toString()}`));
    await app.subscribe('sensors/#');
    await app.subscribe('status/#');
    // the real mosquitto client, as a person would run it; -W: it must not hang the test if nothing comes
    const ms = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(broker.port), '-u', 'viewer', '-P', 'viewer-password', '-i', 'viewer', '-t', 'sensors/#', '-t', 'status/#', '-v', '-W', '30'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let dbg = '';
    ms.stdout.on('data', (d) => (out += d));
    ms.stderr.on('data', (d) => (dbg += d));
    const exited = new Promise<number | null>((r) => ms.on('exit', (c) => r(c)));
    try {
      // subscribed once a status published now comes out (mosquitto_sub prints nothing before)
      for (let i = 0; !/status\/dev1 hello/.test(out); i++) {
        if (i > 100) throw new Error(`mosquitto_sub never subscribed: ${out}${dbg}`);
        await dev.publish('status/dev1', 'hello', { qos: 1 });
        await new Promise((r) => setTimeout(r, 100));
      }
      await new Promise((r) => setTimeout(r, 200)); // the app's copies of the hellos arrive too
      appGot.length = 0;
      await dev.publish('sensors/dev1/temp', 'secret-reading-23.1', { qos: 1 });
      await dev.publish('status/dev1', 'battery-ok', { qos: 1 });
      await waitFor(() => /status\/dev1 battery-ok/.test(out), 10_000, `mosquitto_sub got the status: ${out}`);
      await waitFor(() => appGot.length >= 2, 10_000, 'app got both');
      await new Promise((r) => setTimeout(r, 300));
      expect(appGot.sort()).toEqual(['e2e sensors/dev1/temp secret-reading-23.1', 'hop status/dev1 battery-ok']);
      expect(out).not.toContain('sensors/dev1');
      expect(out + dbg).not.toContain('secret-reading');
    } finally {
      ms.kill('SIGTERM');
      await exited;
      await app.end();
    }
  }, 60_000);
});
