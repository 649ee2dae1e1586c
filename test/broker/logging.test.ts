/**
 * The broker's info log tells an operator what the audit table tells: refused
 * logins (accounts and devices), denied subscriptions, dropped publishes,
 * admin changes made by `mqsec` commands in another process, and sessions
 * closed by them; as pino JSON, within the per-second budget (what it drops is
 * counted in one warning), and never with a password or a key in it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import type { RunningBroker } from '../../broker/server.js';
import { toHex } from '../../firmware/core/bytes.js';
import { TestApp, TestDevice, subscribeQos, tempDir, testBroker, tryLogin, waitFor } from './helpers.js';

interface LogLine {
  level: number;
  time: number;
  msg: string;
  event?: string;
  subject?: string | null;
  detail?: string | null;
  remote?: string | null;
  suppressed?: number;
}

const dir = tempDir();
const raw: string[] = [];
const lines = (): LogLine[] => raw.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);
const events = (event: string) => lines().filter((l) => l.event === event && l.level === 30);
let broker: RunningBroker;
const APP_PASSWORD = 'app-password-123';
const WRONG_PASSWORD = 'wrong-guess-4711';
const PER_SECOND = 8;

beforeAll(async () => {
  const sink = new Writable({ write: (chunk, _enc, cb) => (raw.push(String(chunk)), cb()) });
  broker = await testBroker(dir.path, {
    logger: pino({ level: 'info', base: { svc: 'mqsec-broker' } }, sink),
    limits: { auditPerSecond: PER_SECOND },
  });
  await broker.registry.addAccount('backend', 'app', APP_PASSWORD);
  await broker.syncRegistry();
});
afterAll(async () => {
  await broker.stop();
  dir.remove();
});

describe('broker info log', () => {
  it('a refused account login: who, from where, why; never the password', async () => {
    expect(await tryLogin(broker, { clientId: 'backend-1', username: 'backend', password: WRONG_PASSWORD })).toBe(4);
    await waitFor(() => events('auth.fail').length > 0, 5000, 'logged');
    const l = events('auth.fail')[0];
    expect(l).toMatchObject({ msg: 'login refused', subject: 'backend', detail: 'bad password or disabled', remote: '127.0.0.1' });
    // counted under the metric label docs/operations.md names
    expect(await broker.metrics.value('mqsec_auth_total', { kind: 'account', result: 'fail' })).toBe(1);
    expect(readFileSync(join(process.cwd(), 'docs', 'operations.md'), 'utf8')).toMatch(/`account` for username\/password logins/);
  });

  it('a refused device login (unknown device, phase 1)', async () => {
    const dev = new TestDevice(broker, 'ghost-01', new Uint8Array(32).fill(9));
    expect((await dev.connect()).ok).toBe(false);
    await waitFor(() => events('auth.fail').some((l) => l.subject === 'ghost-01'), 5000, 'logged');
  });

  it('a denied subscription and a dropped publish', async () => {
    const app = await TestApp.connect(broker, 'backend', APP_PASSWORD);
    expect(await subscribeQos(app.client, 'secrets/#')).toBe(128);
    await app.client.publishAsync('sensors/someone/t', 'forged', { qos: 1 });
    await app.end();
    await waitFor(() => events('subscribe.deny').length > 0 && events('publish.drop').length > 0, 5000, 'logged');
    expect(events('subscribe.deny')[0]).toMatchObject({ msg: 'subscription denied', subject: 'backend', detail: 'secrets/#' });
    expect(events('publish.drop')[0]).toMatchObject({ msg: 'publish dropped', subject: 'backend' });
    expect(events('publish.drop')[0].detail).toMatch(/sensors\/someone\/t/);
  });

  it('admin changes made from another process, and the session they close', async () => {
    const { key } = await broker.registry.addDevice('live-01', 'sensor');
    await broker.syncRegistry();
    const dev = new TestDevice(broker, 'live-01', key);
    expect((await dev.connect()).ok).toBe(true);
    const admin = SqliteRegistry.open(dir.path); // what `mqsec device ...` does
    const rotated = await admin.rotateDevice('live-01');
    await admin.addDevice('new-01', 'sensor');
    await admin.close();
    await broker.syncRegistry();
    expect(lines().filter((l) => l.msg === 'admin change').map((l) => [l.event, l.subject])).toEqual(
      expect.arrayContaining([
        ['device.rotate', 'live-01'],
        ['device.add', 'new-01'],
      ]),
    );
    await waitFor(() => dev.closed, 5000, 'rotated device disconnected');
    expect(events('session.revoked').find((l) => l.subject === 'live-01')).toMatchObject({ msg: 'session closed by a registry change', detail: 'key rotated' });
    // no key ever reaches the log
    expect(raw.join('')).not.toContain(toHex(key));
    expect(raw.join('')).not.toContain(toHex(rotated.key));
    await dev.end();
  });

  it('a flood is cut at the per-second budget and the rest counted in one warning', async () => {
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 20)); // start of a fresh second
    const before = events('subscribe.deny').length;
    const app = await TestApp.connect(broker, 'backend', APP_PASSWORD);
    const burst = 30;
    await Promise.all(Array.from({ length: burst }, (_, i) => subscribeQos(app.client, `flood/${i}`)));
    const logged = events('subscribe.deny').length - before;
    expect(logged).toBeGreaterThan(0);
    expect(logged).toBeLessThan(burst);
    // the next second's first event reports what was suppressed
    await new Promise((r) => setTimeout(r, 1100));
    await subscribeQos(app.client, 'flood/after');
    await app.end();
    const warnings = lines().filter((l) => l.level === 40 && l.suppressed !== undefined);
    expect(warnings.reduce((n, w) => n + w.suppressed!, 0)).toBeGreaterThanOrEqual(burst - logged - PER_SECOND);
  });

  it('every line is pino JSON and no password appears anywhere', () => {
    for (const l of lines()) {
      expect(typeof l.level).toBe('number');
      expect(typeof l.time).toBe('number');
      expect(typeof l.msg).toBe('string');
    }
    expect(raw.join('')).not.toContain(WRONG_PASSWORD);
    expect(raw.join('')).not.toContain(APP_PASSWORD);
  });
});
