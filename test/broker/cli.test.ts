import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/command.js';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { TestDevice, tempDir, testBroker, waitFor } from './helpers.js';
import { fromHex } from '../../firmware/core/bytes.js';
import { startCli } from '../helpers/cli-process.js';

function io(stdin = ''): CliIo & { outLines: string[]; errLines: string[] } {
  const outLines: string[] = [];
  const errLines: string[] = [];
  return {
    outLines,
    errLines,
    out: (l) => outLines.push(l),
    err: (l) => errLines.push(l),
    readStdin: async () => stdin,
  };
}

async function run(args: string[], stdin = '') {
  const x = io(stdin);
  const code = await main(['node', 'mqsec', ...args], x);
  return { code, out: x.outLines.join('\n'), err: x.errLines.join('\n') };
}

describe('mqsec CLI (in process)', () => {
  const dir = tempDir();
  const data = dir.path;
  afterAll(() => {
    process.exitCode = 0;
    dir.remove();
  });

  it('device add --json prints id+key and writes a 0600 config file', async () => {
    const cfg = join(data, 'dev-a.json');
    const r = await run(['device', 'add', 'dev-a', '--role', 'sensor', '--data', data, '--json', '--config', cfg, '--broker-port', '18830']);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out) as { id: string; key: string };
    expect(printed.id).toBe('dev-a');
    expect(printed.key).toMatch(/^[0-9a-f]{64}$/);
    const file = JSON.parse(readFileSync(cfg, 'utf8'));
    expect(file).toEqual({ id: 'dev-a', key: printed.key, broker: { host: '127.0.0.1', port: 18830 } });
    expect(statSync(cfg).mode & 0o777).toBe(0o600);
    expect(statSync(join(data, 'master.key')).mode & 0o777).toBe(0o600);
    // the key is stored encrypted: its hex never appears in the database file
    expect(readFileSync(join(data, 'registry.db')).includes(Buffer.from(printed.key, 'hex'))).toBe(false);
  });

  it('list, show, revoke, rotate', async () => {
    expect((await run(['device', 'list', '--data', data])).out).toMatch(/dev-a\s+sensor\s+active/);
    const show = JSON.parse((await run(['device', 'show', 'dev-a', '--data', data, '--json'])).out);
    expect(show).toMatchObject({ id: 'dev-a', role: 'sensor', status: 'active', keyVersion: 1 });
    expect((await run(['device', 'revoke', 'dev-a', '--data', data])).code).toBe(0);
    expect(JSON.parse((await run(['device', 'show', 'dev-a', '--data', data, '--json'])).out).status).toBe('revoked');
    const rot = await run(['device', 'rotate', 'dev-a', '--data', data, '--json', '--config', join(data, 'rot.json')]);
    expect(rot.code).toBe(0);
    expect(JSON.parse((await run(['device', 'show', 'dev-a', '--data', data, '--json'])).out)).toMatchObject({
      status: 'active',
      keyVersion: 2,
    });
  });

  it('user add reads the password from stdin; roles and acl', async () => {
    expect((await run(['user', 'add', 'svc', '--role', 'app', '--password-stdin', '--data', data], 'long-password\n')).code).toBe(0);
    const reg = SqliteRegistry.open(data);
    expect(await reg.verifyAccount('svc', 'long-password')).toMatchObject({ name: 'svc', role: 'app' });
    expect(await reg.verifyAccount('svc', 'long-passwore')).toBeUndefined();
    await reg.close();
    expect((await run(['user', 'add', 'tmp', '--role', 'app', '--password-stdin', '--data', data], 'long-password\n')).code).toBe(0);
    expect((await run(['user', 'remove', 'tmp', '--data', data])).code).toBe(0);
    expect((await run(['user', 'list', '--json', '--data', data])).out).not.toContain('"tmp"');
    expect((await run(['role', 'add', 'ops', '--data', data])).code).toBe(0);
    expect((await run(['acl', 'add', 'ops', 'allow', 'subscribe', 'status/%u/#', '--data', data])).code).toBe(0);
    const roles = JSON.parse((await run(['role', 'list', '--json', '--data', data])).out);
    expect(roles.find((r: { name: string }) => r.name === 'ops').rules).toEqual([{ action: 'subscribe', filter: 'status/%u/#' }]);
  });

  it.each([
    [['device', 'show', 'nope', '--data', data], /unknown device "nope"/],
    [['device', 'revoke', 'nope', '--data', data], /unknown device/],
    [['device', 'add', 'dev-a', '--role', 'sensor', '--data', data], /already exists/],
    [['device', 'add', 'bad/id', '--role', 'sensor', '--data', data], /invalid device id/],
    [['device', 'add', 'x1', '--role', 'nosuch', '--data', data], /unknown role/],
    [['device', 'add', 'x1', '--data', data], /required option/],
    [['acl', 'add', 'ops', 'allow', 'publish', '$mqsec/#', '--data', data], /reserved/],
    [['acl', 'add', 'ops', 'deny', 'publish', 'a', '--data', data], /expected "allow"/],
    [['acl', 'add', 'ops', 'allow', 'write', 'a', '--data', data], /publish or subscribe/],
    [['user', 'add', 'u1', '--role', 'app', '--data', data], /password-stdin/],
    [['user', 'remove', 'nobody', '--data', data], /unknown account/],
    [['user', 'add', 'u2', '--role', 'app', '--password-stdin', '--data', data], /at least 8/],
    [['broker', '--port', 'abc', '--data', data], /invalid port/],
    [['broker', '--retained-total', '-1', '--data', data], /--retained-total/],
    [['nosuchcommand'], /unknown command/],
    [['device', 'list', '--data', '/nonexistent/mqsec-data'], /no mqsec registry in/],
  ])('clear one-line error: %j', async (args, msg) => {
    const r = await run(args as string[], '');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(msg);
    expect(r.err.trim().split('\n')).toHaveLength(1);
  });

  it('device remove and user remove delete them (and close a live session); unknown names are one-line errors', async () => {
    const d2 = tempDir();
    const broker = await testBroker(d2.path);
    const { key } = await broker.registry.addDevice('gone1', 'sensor');
    await broker.registry.addAccount('olduser', 'app', 'old-password-1');
    await broker.syncRegistry();
    const dev = new TestDevice(broker, 'gone1', key);
    expect((await dev.connect()).ok).toBe(true);
    expect((await run(['device', 'remove', 'gone1', '--data', d2.path])).out).toBe('device gone1 removed');
    expect((await run(['user', 'remove', 'olduser', '--data', d2.path])).out).toBe('account olduser removed');
    await waitFor(() => dev.closed, 3000, 'removed device disconnected');
    expect(await broker.registry.getDevice('gone1')).toBeUndefined();
    expect(await broker.registry.getAccount('olduser')).toBeUndefined();
    expect(await broker.registry.listAudit({ kind: 'device.remove' })).toHaveLength(1);
    expect((await dev.connect()).ok).toBe(false);
    for (const args of [['device', 'remove', 'gone1'], ['user', 'remove', 'olduser']]) {
      const r = await run([...args, '--data', d2.path]);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/^mqsec: unknown (device "gone1"|account "olduser")$/);
    }
    // the id can be registered again, with a new key
    expect((await run(['device', 'add', 'gone1', '--role', 'sensor', '--data', d2.path])).code).toBe(0);
    await broker.stop();
    d2.remove();
  });

  it('revoke from the CLI reaches a running broker', async () => {
    const d2 = tempDir();
    const broker = await testBroker(d2.path);
    const { key } = await broker.registry.addDevice('live1', 'sensor');
    const dev = new TestDevice(broker, 'live1', key);
    expect((await dev.connect()).ok).toBe(true);
    expect((await run(['device', 'revoke', 'live1', '--data', d2.path])).code).toBe(0);
    await waitFor(() => dev.closed, 3000, 'revoked device disconnected');
    expect((await dev.connect()).ok).toBe(false);
    await broker.stop();
    d2.remove();
  });
});

describe('mqsec CLI (bin, separate processes)', () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  it('broker prints where it listens, refuses a second broker on the same data dir, stops on SIGTERM', async () => {
    const add = startCli(['device', 'add', 'bin1', '--role', 'sensor', '--data', dir.path, '--json', '--config', join(dir.path, 'c.json')]);
    expect(await add.exited).toBe(0);
    const key = fromHex(JSON.parse(add.out()).key);

    const b = startCli(['broker', '--data', dir.path, '--port', '0', '--metrics-port', '0', '--retained-per-account', '1']);
    await waitFor(() => /listening on mqtt:\/\/127\.0\.0\.1:\d+/.test(b.out()) && /metrics on/.test(b.out()), 20000, 'broker start');
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(b.out())![1]);
    const metricsPort = Number(/metrics on http:\/\/127\.0\.0\.1:(\d+)/.exec(b.out())![1]);

    const second = startCli(['broker', '--data', dir.path, '--port', '0']);
    expect(await second.exited).not.toBe(0);
    expect(second.err()).toMatch(/in use by another broker \(pid \d+\)/);

    const dev = new TestDevice({ host: '127.0.0.1', port }, 'bin1', key);
    expect((await dev.connect()).ok).toBe(true);
    await dev.end();
    // the broker counts phase 1 when KX3 has been processed, just after the device is ready
    let metrics = '';
    const scrape = async () => (metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
    for (let i = 0; i < 100 && !/mqsec_auth_total\{kind="phase1",result="ok"\} 1/.test(await scrape()); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(metrics).toMatch(/mqsec_auth_total\{kind="phase1",result="ok"\} 1/);
    // --retained-per-account 1: the device's second retained reading is not stored
    expect((await dev.connect()).ok).toBe(true);
    await dev.publish('sensors/bin1/a', 'first', 1, true);
    await dev.publish('sensors/bin1/b', 'second', 1, true);
    await dev.end();
    expect(await scrape()).toMatch(/mqsec_drops_total\{reason="retained-limit"\} 1/);

    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(0);
    expect(b.out()).toMatch(/broker stopped/);
  }, 60000);
});
