/**
 * The operator console's HTTP API, against a real broker (Aedes, SQLite) with
 * real devices (the protocol's DeviceSecureSession over MQTT.js): every
 * endpoint the page uses, the login and its limits, the CSRF and cross-site
 * defences one at a time, HTTPS with a generated certificate, and that a
 * device key appears in exactly one response and never in a log line.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { fromHex } from '../../firmware/core/bytes.js';
import type { RunningBroker } from '../../broker/server.js';
import { GENERATED_CERT_FILE, GENERATED_KEY_FILE, isLoopbackHost } from '../../broker/console/tls.js';
import { tempDir, testBroker, TestDevice, waitFor } from '../broker/helpers.js';
import { login, send, sessionCookie, type AdminSession } from './helpers.js';

const ADMIN = 'root-admin';
const ADMIN_PW = 'correct horse battery';
const logLines: string[] = [];
const logStream = new Writable({
  write(chunk, _enc, cb) {
    logLines.push(chunk.toString('utf8'));
    cb();
  },
});

let dir: ReturnType<typeof tempDir>;
let broker: RunningBroker;
let base: string;
let admin: AdminSession;
const devices: TestDevice[] = [];

beforeAll(async () => {
  dir = tempDir('mqsec-console-api-');
  broker = await testBroker(dir.path, {
    logger: pino({ level: 'debug' }, logStream),
    console: {
      port: 0,
      sessionLimits: { loginPerAddress: { ratePerSec: 0.001, burst: 6 }, loginPerAccount: { ratePerSec: 0.001, burst: 6 } },
    },
  });
  base = broker.console!.url;
  await broker.registry.addAccount(ADMIN, 'admin', ADMIN_PW);
  await broker.registry.addAccount('backend', 'app', 'app password 1');
  await broker.registry.addAccount('other-admin', 'admin', 'other admin pw');
  admin = await login(base, ADMIN, ADMIN_PW);
});

afterAll(async () => {
  for (const d of devices) await d.end();
  await broker?.stop();
  dir?.remove();
});

async function onlineDevice(id: string): Promise<TestDevice> {
  const { key } = await broker.registry.addDevice(id, 'sensor');
  await broker.syncRegistry();
  const d = new TestDevice(broker, id, key);
  devices.push(d);
  expect((await d.connect()).ok).toBe(true);
  await waitFor(() => broker.context.liveDevices.has(id), 5000, `${id} online`);
  return d;
}

describe('login', () => {
  it('sets an HttpOnly, Secure, SameSite=Strict session cookie and returns the CSRF token; the login is audited', async () => {
    const r = await send(`${base}api/login`, { body: { name: 'other-admin', password: 'other admin pw' }, headers: { origin: new URL(base).origin } });
    expect(r.status).toBe(200);
    const c = sessionCookie(r);
    expect(c.pair).toMatch(/^mqsec_console=[A-Za-z0-9_-]{43}$/);
    expect(c.attributes).toEqual(expect.arrayContaining(['Path=/', 'HttpOnly', 'Secure', 'SameSite=Strict']));
    expect(r.json.csrf).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(r.headers['cache-control']).toBe('no-store');
    const me = await send(`${base}api/session`, { cookie: c.pair });
    expect(me.json).toMatchObject({ name: 'other-admin', csrf: r.json.csrf, https: false });
    expect(await broker.registry.listAudit({ kind: 'console.login', subject: 'other-admin' })).toHaveLength(1);
  });

  it('refuses a wrong password, an unknown account and a non-admin account alike, and audits each', async () => {
    const origin = new URL(base).origin;
    const local = { localAddress: '127.0.0.2' };
    for (const [name, password] of [
      [ADMIN, 'wrong password'],
      ['nobody', 'whatever pw'],
      ['backend', 'app password 1'], // right password, but role app
    ]) {
      const r = await send(`${base}api/login`, { ...local, body: { name, password }, headers: { origin } });
      expect(r.status).toBe(401);
      expect(r.headers['set-cookie']).toBeUndefined();
    }
    const fails = (await broker.registry.listAudit({ kind: 'console.login.fail' })).map((a) => `${a.subject}:${a.detail}`);
    expect(fails).toEqual(expect.arrayContaining([`${ADMIN}:bad-credentials`, 'nobody:bad-credentials', 'backend:not-admin']));
  });

  it('is rate-limited per source address: past the burst even the right password is refused (429)', async () => {
    const local = { localAddress: '127.0.0.3' };
    const origin = new URL(base).origin;
    for (let i = 0; i < 6; i++) {
      const r = await send(`${base}api/login`, { ...local, body: { name: `guess-${i}`, password: 'guess guess' }, headers: { origin } });
      expect(r.status).toBe(401);
    }
    const r = await send(`${base}api/login`, { ...local, body: { name: ADMIN, password: ADMIN_PW }, headers: { origin } });
    expect(r.status).toBe(429);
    // another address is not affected
    expect((await send(`${base}api/login`, { localAddress: '127.0.0.4', body: { name: ADMIN, password: ADMIN_PW }, headers: { origin } })).status).toBe(200);
  });

  it('is rate-limited per account: guesses from many addresses at one account exhaust it', async () => {
    const origin = new URL(base).origin;
    await broker.registry.addAccount('target-admin', 'admin', 'target admin pw');
    for (let i = 0; i < 6; i++) {
      const r = await send(`${base}api/login`, { localAddress: `127.0.1.${10 + i}`, body: { name: 'target-admin', password: `guess ${i}` }, headers: { origin } });
      expect(r.status).toBe(401);
    }
    const r = await send(`${base}api/login`, { localAddress: '127.0.1.30', body: { name: 'target-admin', password: 'target admin pw' }, headers: { origin } });
    expect(r.status).toBe(429);
  });

  it('refuses a login from another origin, without an Origin, or as a form post (login CSRF)', async () => {
    const body = { name: ADMIN, password: ADMIN_PW };
    const l = { localAddress: '127.0.0.5' };
    expect((await send(`${base}api/login`, { ...l, body, headers: { origin: 'http://evil.example' } })).status).toBe(403);
    expect((await send(`${base}api/login`, { ...l, body })).status).toBe(403);
    expect((await send(`${base}api/login`, { ...l, body, headers: { origin: new URL(base).origin, 'sec-fetch-site': 'same-site' } })).status).toBe(403);
    const form = await send(`${base}api/login`, {
      ...l,
      raw: `name=${ADMIN}&password=${encodeURIComponent(ADMIN_PW)}`,
      headers: { origin: new URL(base).origin, 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(form.status).toBe(403);
  });

  it('logout ends the session', async () => {
    const s = await login(base, ADMIN, ADMIN_PW, { localAddress: '127.0.0.6' });
    expect((await s.get('api/session')).status).toBe(200);
    expect((await s.post('api/logout', {})).status).toBe(200);
    expect((await s.get('api/session')).status).toBe(401);
    expect((await broker.registry.listAudit({ kind: 'console.logout', subject: ADMIN })).length).toBeGreaterThan(0);
  });

  it('a disabled admin account loses its console session at once', async () => {
    await broker.registry.addAccount('temp-admin', 'admin', 'temp admin pw');
    const s = await login(base, 'temp-admin', 'temp admin pw', { localAddress: '127.0.0.7' });
    expect((await s.get('api/overview')).status).toBe(200);
    await broker.registry.setAccountStatus('temp-admin', 'disabled');
    expect((await s.get('api/overview')).status).toBe(401);
  });
});

describe('every API endpoint needs a session', () => {
  it.each(['api/session', 'api/overview', 'api/devices', 'api/devices/x', 'api/roles', 'api/health', 'api/events'])('GET %s -> 401', async (path) => {
    expect((await send(`${base}${path}`)).status).toBe(401);
    expect((await send(`${base}${path}`, { cookie: 'mqsec_console=forged-cookie-value' })).status).toBe(401);
  });
  it.each(['api/devices', 'api/devices/x/revoke', 'api/devices/x/rotate', 'api/logout'])('POST %s -> 401', async (path) => {
    expect((await send(`${base}${path}`, { body: { id: 'x', confirm: 'x' }, headers: { origin: new URL(base).origin } })).status).toBe(401);
  });
});

describe('cross-site state changes are refused, each defence on its own', () => {
  // The session cookie is attached in every case below (as a same-site page on another port would get it sent).
  it('without the CSRF token', async () => {
    const r = await send(`${base}api/devices`, { cookie: admin.cookie, body: { id: 'csrf-1' }, headers: { origin: admin.origin } });
    expect(r.status).toBe(403);
    expect(await broker.registry.getDevice('csrf-1')).toBeUndefined();
  });
  it('with a wrong CSRF token (another session\'s)', async () => {
    const other = await login(base, 'other-admin', 'other admin pw', { localAddress: '127.0.0.8' });
    const r = await send(`${base}api/devices`, { cookie: admin.cookie, body: { id: 'csrf-2' }, headers: { origin: admin.origin, 'x-csrf-token': other.csrf } });
    expect(r.status).toBe(403);
    expect(await broker.registry.getDevice('csrf-2')).toBeUndefined();
  });
  it('with the right token but a foreign Origin', async () => {
    const r = await send(`${base}api/devices`, { cookie: admin.cookie, body: { id: 'csrf-3' }, headers: { origin: 'http://127.0.0.1:1', 'x-csrf-token': admin.csrf } });
    expect(r.status).toBe(403);
    expect(await broker.registry.getDevice('csrf-3')).toBeUndefined();
  });
  it('with the right token and Origin but a non-JSON (form) body', async () => {
    const r = await send(`${base}api/devices`, {
      cookie: admin.cookie,
      raw: 'id=csrf-4',
      headers: { origin: admin.origin, 'x-csrf-token': admin.csrf, 'content-type': 'text/plain' },
    });
    expect(r.status).toBe(403);
    expect(await broker.registry.getDevice('csrf-4')).toBeUndefined();
  });
  it('a request naming another host (DNS rebinding) gets 421', async () => {
    const r = await send(`${base}api/session`, { cookie: admin.cookie, headers: { host: `rebind.example:${new URL(base).port}` } });
    expect(r.status).toBe(421);
  });
  it('refusals are audited', async () => {
    expect((await broker.registry.listAudit({ kind: 'console.refused' })).map((a) => a.detail)).toEqual(
      expect.arrayContaining(['POST /api/devices: missing or wrong CSRF token', 'POST /api/devices: cross-origin request', 'POST /api/devices: JSON body required']),
    );
  });
});

describe('fleet data', () => {
  it('overview totals equal the broker metrics; the series covers what happened', async () => {
    await onlineDevice('ov-1');
    await onlineDevice('ov-2');
    // one refused login of a known class: a plain password for a device id (DOWNGRADE)
    const { tryConnect } = await import('../../host-sim/fleet/attackers.js');
    const { encodePacket } = await import('../../firmware/mqtt/codec.js');
    const accepted = await tryConnect(broker.host, broker.port, encodePacket({ type: 'connect', protocolLevel: 4, clientId: 'ov-1', cleanSession: true, keepalive: 30, username: 'ov-1', password: new TextEncoder().encode('letmein') } as never));
    expect(accepted).toBe(false);
    await new Promise((r) => setTimeout(r, 1200)); // one sample of the 1 s feed
    const o = (await admin.get('api/overview')).json;
    const m = broker.metrics;
    expect(o.totals.connected).toBe(await m.value('mqsec_device_sessions'));
    expect(o.totals.connected).toBe(2);
    expect(o.totals.phase1).toBe(await m.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' }));
    expect(o.totals.phase1).toBeGreaterThanOrEqual(2);
    expect(o.totals.phase2).toBe(await m.value('mqsec_auth_total', { kind: 'phase2', result: 'ok' }));
    expect(o.totals.messagesIn).toBe(await m.value('mqsec_messages_total'));
    expect(o.totals.messagesOut).toBe(await m.value('mqsec_deliveries_total'));
    expect(o.totals.refusedLogins.DOWNGRADE).toBe(await m.value('mqsec_login_refusals_total', { class: 'DOWNGRADE' }));
    expect(o.totals.refusedLogins.DOWNGRADE).toBe(1);
    const last = o.series[o.series.length - 1];
    expect(last.connected).toBe(2);
    expect(last.phase1PerMin).toBeGreaterThanOrEqual(2);
    expect(o.series.length).toBeGreaterThan(1);
    expect(o.health.pid).toBe(process.pid);
  });

  it('device list: search and every state filter', async () => {
    await broker.registry.addDevice('never-1', 'sensor');
    await onlineDevice('sleepy-1');
    await devices.at(-1)!.end();
    await waitFor(() => !broker.context.liveDevices.has('sleepy-1'), 5000, 'sleepy-1 offline');
    await onlineDevice('gone-1');
    await broker.registry.revokeDevice('gone-1');
    await broker.syncRegistry();
    const states = async (q: string) => Object.fromEntries(((await admin.get(`api/devices${q}`)).json.devices as { id: string; state: string }[]).map((d) => [d.id, d.state]));
    const all = await states('');
    expect(all).toMatchObject({ 'ov-1': 'online', 'never-1': 'never-seen', 'sleepy-1': 'asleep', 'gone-1': 'revoked' });
    expect(Object.keys(await states('?state=online'))).toEqual(expect.arrayContaining(['ov-1', 'ov-2']));
    expect(Object.values(await states('?state=online')).every((s) => s === 'online')).toBe(true);
    expect(await states('?state=never-seen')).toEqual({ 'never-1': 'never-seen' });
    expect(await states('?state=asleep')).toEqual({ 'sleepy-1': 'asleep' });
    expect(await states('?state=revoked')).toEqual({ 'gone-1': 'revoked' });
    expect(Object.keys(await states('?search=SLEEPY'))).toEqual(['sleepy-1']);
    expect((await admin.get('api/devices?state=bogus')).status).toBe(400);
    const row = ((await admin.get('api/devices?search=ov-1')).json.devices as Record<string, unknown>[])[0]!;
    expect(row).toMatchObject({ id: 'ov-1', role: 'sensor', keyVersion: 1, protection: 'sealed', sessions: 1 });
    expect(row.counter).toBe(await broker.registry.getCounter('ov-1'));
    expect(typeof row.lastSeen).toBe('number');
  });

  it('device detail: current session, ticket age, audit trail, group-key epoch not applicable', async () => {
    const d = (await admin.get('api/devices/ov-2')).json;
    expect(d.session).toMatchObject({ phase: 1, remote: expect.stringContaining('127.0.0.1'), keyVersion: 1 });
    expect(typeof d.session.since).toBe('number');
    expect(d.ticketAgeMs).toBeGreaterThanOrEqual(0);
    expect(d.ticketAgeMs).toBeLessThan(60_000);
    expect(d.ticketExpiresAt).toBeGreaterThan(Date.now());
    expect(d.groupKeyEpoch).toBeNull();
    expect(d.audit.map((a: { kind: string }) => a.kind)).toContain('device.add');
    const gone = (await admin.get('api/devices/gone-1')).json;
    expect(gone).toMatchObject({ state: 'revoked', session: null, ticketAgeMs: null });
    expect(gone.audit.map((a: { kind: string }) => a.kind)).toEqual(expect.arrayContaining(['device.revoke', 'session.revoked']));
    expect((await admin.get('api/devices/nope')).status).toBe(404);
  });

  it('roles and rules (read-only) and broker health', async () => {
    const roles = (await admin.get('api/roles')).json.roles as { name: string; rules: unknown[] }[];
    expect(roles.map((r) => r.name)).toEqual(expect.arrayContaining(['sensor', 'app', 'admin']));
    expect(roles.find((r) => r.name === 'sensor')!.rules.length).toBeGreaterThan(0);
    const h = (await admin.get('api/health')).json;
    expect(h.nodes).toHaveLength(1);
    expect(h.nodes[0]).toMatchObject({ mqtt: `mqtt://${broker.host}:${broker.port}`, pid: process.pid });
    expect(h.nodes[0].rssBytes).toBeGreaterThan(0);
    expect(h.nodes[0].eventLoopDelayMs.max).toBeGreaterThanOrEqual(0);
    expect(h.nodes[0].connections).toBeGreaterThanOrEqual(2);
    expect(h.registry.revision).toBe(await broker.registry.revision());
  });
});

describe('provision, revoke, rotate', () => {
  let keyHex = '';

  it('provision returns the key and device config once; the key works; it is in no other response and no log line', async () => {
    const r = await admin.post('api/devices', { id: 'made-1', role: 'sensor' });
    expect(r.status).toBe(201);
    expect(r.headers['cache-control']).toBe('no-store');
    expect(r.json.config).toMatchObject({ id: 'made-1', broker: { host: broker.host, port: broker.port } });
    keyHex = r.json.config.key;
    expect(keyHex).toMatch(/^[0-9a-f]{64}$/);
    const d = new TestDevice(broker, 'made-1', fromHex(keyHex));
    devices.push(d);
    expect((await d.connect()).ok).toBe(true);
    for (const path of ['api/devices', 'api/devices/made-1', 'api/overview', 'api/health']) {
      expect((await admin.get(path)).text).not.toContain(keyHex);
    }
    expect(logLines.join('')).not.toContain(keyHex);
    const trail = await broker.registry.listAudit({ subject: 'made-1' });
    expect(trail.find((a) => a.kind === 'console.device.add')).toMatchObject({ detail: `by ${ADMIN} role=sensor`, source: expect.stringContaining('127.0.0.1') });
    expect(JSON.stringify(trail)).not.toContain(keyHex);
  });

  it('provision refuses a bad id, an unknown role and an existing id', async () => {
    expect((await admin.post('api/devices', { id: 'bad id!', role: 'sensor' })).status).toBe(400);
    expect((await admin.post('api/devices', { id: 'made-2', role: 'nosuchrole' })).status).toBe(400);
    expect((await admin.post('api/devices', { id: 'made-1', role: 'sensor' })).status).toBe(400);
    expect(await broker.registry.getDevice('made-2')).toBeUndefined();
  });

  it('a body over 8 KiB is refused before it is parsed', async () => {
    const r = await admin.post('api/devices', { id: 'big', role: 'x'.repeat(9000) });
    expect(r.status).toBe(413);
  });

  it('revoke needs the confirmation, then closes the live session at once', async () => {
    const d = devices.find((x) => x.devId === 'made-1')!;
    expect((await admin.post('api/devices/made-1/revoke', {})).status).toBe(400);
    expect((await admin.post('api/devices/made-1/revoke', { confirm: 'made-2' })).status).toBe(400);
    expect(d.closed).toBe(false);
    const r = await admin.post('api/devices/made-1/revoke', { confirm: 'made-1' });
    expect(r.status).toBe(200);
    expect(r.json.device.state).toBe('revoked');
    await waitFor(() => d.closed, 1000, 'revoked device dropped');
    expect((await d.connect()).ok).toBe(false);
    expect(await broker.registry.listAudit({ kind: 'console.device.revoke', subject: 'made-1' })).toHaveLength(1);
    expect((await admin.post('api/devices/nope/revoke', { confirm: 'nope' })).status).toBe(400);
  });

  it('rotate needs the confirmation, returns a new key once; the old key is dead, the new one works', async () => {
    expect((await admin.post('api/devices/made-1/rotate', {})).status).toBe(400);
    const r = await admin.post('api/devices/made-1/rotate', { confirm: 'made-1' });
    expect(r.status).toBe(200);
    const fresh = r.json.config.key as string;
    expect(fresh).toMatch(/^[0-9a-f]{64}$/);
    expect(fresh).not.toBe(keyHex);
    expect(r.json.device).toMatchObject({ state: 'asleep', keyVersion: 2 }); // seen before, offline: rotation keeps its history
    const old = new TestDevice(broker, 'made-1', fromHex(keyHex));
    devices.push(old);
    expect((await old.connect()).ok).toBe(false);
    const d = new TestDevice(broker, 'made-1', fromHex(fresh));
    devices.push(d);
    expect((await d.connect()).ok).toBe(true);
    expect(logLines.join('')).not.toContain(fresh);
    expect((await admin.get('api/devices/made-1')).text).not.toContain(fresh);
  });
});

describe('live events (SSE)', () => {
  it('streams stats every second and a device event when a session starts and when it is revoked', async () => {
    const events: { event: string; data: any }[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
    const u = new URL(`${base}api/events`);
    const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname, headers: { cookie: admin.cookie } });
    const opened = new Promise<void>((resolve, reject) => {
      req.on('response', (res) => {
        expect(res.statusCode).toBe(200);
        expect(res.headers['content-type']).toContain('text/event-stream');
        let buf = '';
        res.on('data', (c: Buffer) => {
          buf += c.toString('utf8');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const event = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
            const data = /^data: (.*)$/m.exec(block)?.[1];
            events.push({ event, data: data ? JSON.parse(data) : undefined });
          }
        });
        resolve();
      });
      req.on('error', reject);
    });
    req.end();
    await opened;
    try {
      await waitFor(() => events.some((e) => e.event === 'stats'), 3000, 'stats event');
      const stats = events.find((e) => e.event === 'stats')!.data;
      expect(stats.totals.connected).toBe(broker.context.liveDevices.size);
      await onlineDevice('live-1');
      await waitFor(() => events.some((e) => e.event === 'device' && e.data.id === 'live-1' && e.data.online), 3000, 'device up event');
      await admin.post('api/devices/live-1/revoke', { confirm: 'live-1' });
      await waitFor(() => events.some((e) => e.event === 'device' && e.data.id === 'live-1' && !e.data.online), 1000, 'device down event');
      await waitFor(() => events.some((e) => e.event === 'devices'), 1000, 'registry change event');
      await waitFor(() => events.some((e) => e.event === 'health'), 3000, 'health event');
    } finally {
      req.destroy();
    }
  });
});

describe('the page and its assets', () => {
  it('serves the page with a strict CSP, and only the listed assets', async () => {
    const r = await send(base);
    expect(r.status).toBe(200);
    const csp = String(r.headers['content-security-policy']);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'self' 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(r.text).toContain('<script type="importmap">');
    for (const a of ['app.js', 'style.css', 'preact.mjs', 'hooks.mjs', 'htm.mjs', 'uplot.mjs', 'uplot.css']) {
      const x = await send(`${base}assets/${a}`);
      expect(x.status, a).toBe(200);
      expect(x.headers['x-content-type-options']).toBe('nosniff');
    }
    expect(r.text).toContain('<link rel="modulepreload" href="/assets/uplot.mjs">');
    const first = await send(`${base}assets/uplot.mjs`);
    const again = await send(`${base}assets/uplot.mjs`, { headers: { 'if-none-match': String(first.headers.etag) } });
    expect(again.status).toBe(304);
    expect(again.text).toBe('');
    expect((await send(`${base}assets/..%2f..%2fpackage.json`)).status).toBe(404);
    expect((await send(`${base}assets/server.ts`)).status).toBe(404);
  });
});

describe('HTTPS', () => {
  it('generates a certificate at first start (key mode 0600), serves the console over it, and reuses it after a restart', async () => {
    const d = tempDir('mqsec-console-tls-');
    try {
      const b1 = await testBroker(d.path, { console: { port: 0, tls: 'generate' } });
      const certFile = join(d.path, GENERATED_CERT_FILE);
      const cert = readFileSync(certFile, 'utf8');
      expect(b1.console!.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/$/);
      expect(b1.console!.certFile).toBe(certFile);
      expect(statSync(join(d.path, GENERATED_KEY_FILE)).mode & 0o777).toBe(0o600);
      await b1.registry.addAccount('tls-admin', 'admin', 'tls admin pw');
      const s = await login(b1.console!.url, 'tls-admin', 'tls admin pw', { ca: cert });
      expect((await s.get('api/session')).json.https).toBe(true);
      const r = await send(`${b1.console!.url}api/session`, { ca: cert, cookie: s.cookie });
      expect(r.headers['strict-transport-security']).toContain('max-age=');
      // an untrusted certificate is refused by a client that checks (no silent downgrade to plain HTTP either)
      await expect(send(b1.console!.url)).rejects.toThrow();
      await expect(send(b1.console!.url.replace('https:', 'http:'))).rejects.toThrow();
      await b1.stop();
      const b2 = await testBroker(d.path, { console: { port: 0, tls: 'generate' } });
      expect(readFileSync(certFile, 'utf8')).toBe(cert);
      expect((await send(b2.console!.url, { ca: cert })).status).toBe(200);
      await b2.stop();
    } finally {
      d.remove();
    }
  });

  it('plain HTTP only on loopback addresses', () => {
    expect(isLoopbackHost('127.0.0.1')).toBe(true);
    expect(isLoopbackHost('127.3.2.1')).toBe(true);
    expect(isLoopbackHost('::1')).toBe(true);
    expect(isLoopbackHost('localhost')).toBe(true);
    expect(isLoopbackHost('0.0.0.0')).toBe(false);
    expect(isLoopbackHost('192.168.1.10')).toBe(false);
    expect(isLoopbackHost('127.0.0.1.example')).toBe(false);
  });
});

describe('start-up', () => {
  it('a taken console port fails the start, closes what was opened and releases the data directory', async () => {
    const d = tempDir('mqsec-console-port-');
    try {
      const taken = broker.console!.port;
      await expect(testBroker(d.path, { console: { port: taken } })).rejects.toThrow();
      const b = await testBroker(d.path, { console: { port: 0 } }); // the lock was released
      expect((await send(b.console!.url)).status).toBe(200);
      await b.stop();
    } finally {
      d.remove();
    }
  });
});
