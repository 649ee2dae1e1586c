/**
 * The operator console, served by the broker process (Hono on Node's HTTP or
 * HTTPS server): a JSON API, a Server-Sent Events stream fed by the broker's
 * events (feed.ts), and a page made of static ES modules (page/, plus Preact,
 * htm and uPlot straight from their npm packages: no build step).
 *
 * Security (docs: README "Operator console"):
 * - HTTPS with the operator's certificate or one generated at first start
 *   (tls.ts); plain HTTP only when listening on a loopback address.
 * - Login with an admin account's password (sessions.ts), rate-limited per
 *   address and per account; session cookie `HttpOnly; Secure;
 *   SameSite=Strict`. On plain loopback HTTP the cookie still carries
 *   `Secure`: browsers treat http://localhost and 127.0.0.0/8 as secure
 *   contexts and keep such cookies there (the browser test checks Chromium
 *   does), and the same cookie can never leak over plain HTTP elsewhere.
 * - Every state change (POST) needs a JSON body, an Origin (and, if sent,
 *   Sec-Fetch-Site) of this console, and the session's CSRF token in the
 *   `x-csrf-token` header; login needs the first two. The Host header must
 *   name this console (DNS rebinding).
 * - Every action goes into the registry's audit log with the admin's name
 *   and address. A device key appears in exactly one response (the one that
 *   created it, `Cache-Control: no-store`) and is never logged.
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { getCookie } from 'hono/cookie';
import { streamSSE } from 'hono/streaming';
import { serve } from '@hono/node-server';
import { getConnInfo } from '@hono/node-server/conninfo';
import { toHex } from '../../firmware/core/bytes.js';
import { aedesClients, audit, type BrokerContext } from '../context.js';
import { RegistryError } from '../registry/registry.js';
import { DEVICE_STATES, deviceDetail, deviceRow, listDeviceRows, rolesView, type DeviceState } from './devices.js';
import { ConsoleFeed } from './feed.js';
import { ConsoleSessions, DEFAULT_SESSION_LIMITS, type ConsoleSession, type SessionLimits } from './sessions.js';
import { isLoopbackHost, loadOrCreateConsoleCert, type ConsoleTlsFiles } from './tls.js';

export const SESSION_COOKIE = 'mqsec_console';

export interface ConsoleOptions {
  /** 0 picks a free port. */
  port: number;
  /** Listen address (default: the broker's). */
  host?: string;
  /**
   * HTTPS certificate files, or 'generate' (self-signed, kept in the data
   * directory). Default: plain HTTP on a loopback address, 'generate' elsewhere.
   */
  tls?: ConsoleTlsFiles | 'generate';
  /** Host names the console answers to besides its listen address and the loopback names. */
  hostNames?: string[];
  /** Broker address written into downloaded device configs (default: the MQTT listener's). */
  deviceBroker?: { host: string; port: number };
  sessionLimits?: Partial<SessionLimits>;
  /** Server-Sent Event streams open at once (each costs a little per event). */
  maxEventStreams?: number;
}

/** What the console needs of a running broker. */
export interface ConsoleBroker {
  ctx: BrokerContext;
  host: string;
  port: number;
  /** Apply registry changes now (close revoked sessions) instead of at the next poll. */
  syncRegistry(): Promise<void>;
  /** Emits 'change' after the broker applied a registry change (from here or the CLI). */
  registryEvents: EventEmitter;
}

export interface RunningConsole {
  url: string;
  host: string;
  port: number;
  https: boolean;
  /** The certificate file to trust (HTTPS only). */
  certFile?: string;
  feed: ConsoleFeed;
  sessions: ConsoleSessions;
  close(): Promise<void>;
}

const PAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'page');
const require = createRequire(import.meta.url);

/** The page's static files: name -> [file, content type]. Nothing outside this list is served. */
function assetFiles(): Map<string, { file: string; type: string }> {
  const beside = (pkg: string, file: string) => join(dirname(require.resolve(pkg)), file);
  const js = 'text/javascript; charset=utf-8';
  return new Map([
    ['app.js', { file: join(PAGE_DIR, 'app.js'), type: js }],
    ['style.css', { file: join(PAGE_DIR, 'style.css'), type: 'text/css; charset=utf-8' }],
    ['preact.mjs', { file: beside('preact', 'preact.mjs'), type: js }],
    ['hooks.mjs', { file: beside('preact/hooks', 'hooks.mjs'), type: js }],
    ['htm.mjs', { file: beside('htm', 'htm.mjs'), type: js }],
    ['uplot.mjs', { file: beside('uplot', 'uPlot.esm.js'), type: js }],
    ['uplot.css', { file: beside('uplot', 'uPlot.min.css'), type: 'text/css; charset=utf-8' }],
  ]);
}

const IMPORT_MAP = JSON.stringify({
  imports: { preact: '/assets/preact.mjs', 'preact/hooks': '/assets/hooks.mjs', htm: '/assets/htm.mjs', uplot: '/assets/uplot.mjs' },
});

/** Read once at start: content, and an ETag so a reload revalidates with a 304 instead of downloading again. */
function assetTable(): Map<string, { body: Buffer; type: string; etag: string }> {
  const out = new Map<string, { body: Buffer; type: string; etag: string }>();
  for (const [name, a] of assetFiles()) {
    const body = readFileSync(a.file);
    out.set(name, { body, type: a.type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  }
  return out;
}

/** Every module the page imports, announced up front so the browser fetches them in parallel, not one level at a time. */
const MODULE_PRELOADS = ['app.js', 'preact.mjs', 'hooks.mjs', 'htm.mjs', 'uplot.mjs'].map((m) => `<link rel="modulepreload" href="/assets/${m}">`).join('\n');

function indexHtml(): { html: string; csp: string } {
  const html = readFileSync(join(PAGE_DIR, 'index.html'), 'utf8').replace('<!--IMPORTMAP-->', `<script type="importmap">${IMPORT_MAP}</script>\n${MODULE_PRELOADS}`);
  const mapHash = createHash('sha256').update(IMPORT_MAP).digest('base64');
  const csp = [
    "default-src 'none'",
    `script-src 'self' 'sha256-${mapHash}'`,
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'self'",
  ].join('; ');
  return { html, csp };
}

type Env = { Variables: { session: ConsoleSession; remote: string } };

export async function startConsole(broker: ConsoleBroker, opts: ConsoleOptions): Promise<RunningConsole> {
  const { ctx } = broker;
  const host = opts.host ?? broker.host;
  const loopback = isLoopbackHost(host);
  const tlsChoice = opts.tls ?? (loopback ? undefined : 'generate');
  const tls = tlsChoice ? await loadOrCreateConsoleCert(ctx.registry.dataDir, host, tlsChoice === 'generate' ? undefined : tlsChoice) : undefined;
  if (!tls && !loopback) throw new Error(`the console serves plain HTTP only on a loopback address, not ${host}: give it a certificate`);
  const scheme = tls ? 'https' : 'http';
  const sessions = new ConsoleSessions(ctx.registry, { ...DEFAULT_SESSION_LIMITS, ...opts.sessionLimits });
  const feed = new ConsoleFeed(ctx, ctx.metrics);
  await feed.start();
  const onRegistryChange = () => feed.registryChanged();
  broker.registryEvents.on('change', onRegistryChange);
  const deviceBroker = opts.deviceBroker ?? { host: broker.host === '0.0.0.0' || broker.host === '::' ? '127.0.0.1' : broker.host, port: broker.port };
  const assets = assetTable();
  const page = indexHtml();
  const maxStreams = opts.maxEventStreams ?? 64;
  const streams = new Set<{ abort(): void }>();
  let port = opts.port;

  const allowedHosts = new Set(['localhost', '127.0.0.1', '[::1]', ...(opts.hostNames ?? [])]);
  if (host !== '0.0.0.0' && host !== '::') allowedHosts.add(host.includes(':') ? `[${host}]` : host);
  const anyHost = (host === '0.0.0.0' || host === '::') && !opts.hostNames?.length;
  const hostOk = (hostHeader: string | undefined) => {
    if (!hostHeader) return false;
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(hostHeader);
    if (!m) return false;
    if (m[2] !== undefined && Number(m[2]) !== port) return false;
    return anyHost || allowedHosts.has(m[1]!.toLowerCase());
  };
  const ownOrigin = (c: Context) => `${scheme}://${c.req.header('host')}`;

  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    const remote = getConnInfo(c).remote.address ?? 'unknown';
    c.set('remote', remote);
    if (!hostOk(c.req.header('host'))) return c.text('unknown host', 421);
    await next();
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Referrer-Policy', 'no-referrer');
    c.header('X-Frame-Options', 'DENY');
    c.header('Cross-Origin-Opener-Policy', 'same-origin');
    c.header('Cross-Origin-Resource-Policy', 'same-origin');
    if (tls) c.header('Strict-Transport-Security', 'max-age=31536000');
  });

  const refuse = (c: Context<Env>, status: 401 | 403 | 429, error: string, session?: ConsoleSession) => {
    audit(ctx, 'console.refused', session?.name ?? null, `${c.req.method} ${c.req.path.slice(0, 64)}: ${error}`, c.get('remote'));
    return c.json({ error }, status);
  };

  /** Cross-site request checks shared by login and every state change. */
  const sameOriginJson = (c: Context<Env>): string | undefined => {
    const site = c.req.header('sec-fetch-site');
    if (site !== undefined && site !== 'same-origin') return 'cross-site request';
    if (c.req.header('origin') !== ownOrigin(c)) return 'cross-origin request';
    if (!/^application\/json(;|$)/i.test(c.req.header('content-type') ?? '')) return 'JSON body required';
    return undefined;
  };

  app.use('/api/*', bodyLimit({ maxSize: 8 * 1024, onError: (c) => c.json({ error: 'body too large' }, 413) }));
  app.use('/api/*', async (c, next) => {
    if (c.req.path === '/api/login') return next();
    const session = await sessions.lookup(getCookie(c, SESSION_COOKIE));
    if (!session) return c.json({ error: 'not logged in' }, 401);
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      const bad = sameOriginJson(c);
      if (bad) return refuse(c, 403, bad, session);
      if (!ConsoleSessions.csrfMatches(session, c.req.header('x-csrf-token'))) return refuse(c, 403, 'missing or wrong CSRF token', session);
    }
    c.set('session', session);
    c.header('Cache-Control', 'no-store');
    await next();
  });

  const cookie = (value: string, maxAgeS: number) =>
    `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${maxAgeS}`;

  app.post('/api/login', async (c) => {
    const remote = c.get('remote');
    const bad = sameOriginJson(c);
    if (bad) return refuse(c, 403, bad);
    const body = await c.req.json().catch(() => undefined);
    const name = typeof body?.name === 'string' ? body.name : '';
    const password = typeof body?.password === 'string' ? body.password : '';
    if (!name || !password || name.length > 64 || password.length > 1024) return c.json({ error: 'name and password required' }, 400);
    const r = await sessions.login(name, password, remote);
    if (!r.ok) {
      audit(ctx, 'console.login.fail', name, r.reason, remote);
      ctx.log.info({ name, remote, reason: r.reason }, 'console login refused');
      if (r.reason === 'rate-limited') return c.json({ error: 'too many login attempts; wait a minute' }, 429);
      return c.json({ error: 'wrong account name or password, or not an admin account' }, 401);
    }
    await ctx.registry.audit('console.login', r.session.name, null, remote);
    ctx.log.info({ name: r.session.name, remote }, 'console login');
    c.header('Set-Cookie', cookie(r.token, Math.floor((DEFAULT_SESSION_LIMITS.absoluteMs) / 1000)));
    c.header('Cache-Control', 'no-store');
    return c.json({ name: r.session.name, csrf: r.session.csrf });
  });

  app.get('/api/session', (c) => {
    const s = c.get('session');
    return c.json({ name: s.name, csrf: s.csrf, https: !!tls });
  });

  app.post('/api/logout', async (c) => {
    sessions.logout(getCookie(c, SESSION_COOKIE));
    await ctx.registry.audit('console.logout', c.get('session').name, null, c.get('remote'));
    c.header('Set-Cookie', cookie('', 0));
    return c.json({ ok: true });
  });

  app.get('/api/overview', (c) => c.json({ totals: feed.currentTotals(), series: feed.series(), health: feed.health() }));

  app.get('/api/devices', async (c) => {
    const state = c.req.query('state');
    if (state && !DEVICE_STATES.includes(state as DeviceState)) return c.json({ error: `state must be one of ${DEVICE_STATES.join(', ')}` }, 400);
    const search = c.req.query('search')?.slice(0, 64);
    const rows = await listDeviceRows(ctx, feed, { search, state: state as DeviceState | undefined });
    return c.json({ devices: rows, roles: (await ctx.registry.listRoles()).map((r) => r.name) });
  });

  app.get('/api/devices/:id', async (c) => {
    const d = await deviceDetail(ctx, feed, c.req.param('id'));
    return d ? c.json(d) : c.json({ error: 'unknown device' }, 404);
  });

  /** The one response that ever carries this key: JSON the page shows and offers as a file, then forgets. */
  const keyResponse = async (c: Context<Env>, id: string, key: Uint8Array, status: 200 | 201) => {
    const config = { id, key: toHex(key), broker: deviceBroker };
    key.fill(0);
    return c.json({ device: await deviceRow(ctx, feed, id), config }, status);
  };

  const adminAction = async (c: Context<Env>, kind: string, subject: string, detail: string | null) => {
    const s = c.get('session');
    await ctx.registry.audit(`console.${kind}`, subject, `by ${s.name}${detail ? ` ${detail}` : ''}`, c.get('remote'));
    ctx.log.info({ admin: s.name, subject, action: kind }, 'console action'); // never the key
  };

  const registryError = (c: Context<Env>, e: unknown) => {
    if (e instanceof RegistryError) return c.json({ error: e.message }, 400);
    throw e;
  };

  app.post('/api/devices', async (c) => {
    const body = await c.req.json().catch(() => undefined);
    const id = typeof body?.id === 'string' ? body.id : '';
    const role = typeof body?.role === 'string' ? body.role : 'sensor';
    try {
      const { key } = await ctx.registry.addDevice(id, role);
      await adminAction(c, 'device.add', id, `role=${role}`);
      await broker.syncRegistry();
      return keyResponse(c, id, key, 201);
    } catch (e) {
      return registryError(c, e);
    }
  });

  /** Revoke and rotate are confirmed by repeating the device id in the body (the page's confirmation step). */
  const confirmed = async (c: Context<Env>): Promise<string | undefined> => {
    const id = c.req.param('id')!;
    const body = await c.req.json().catch(() => undefined);
    return body?.confirm === id ? id : undefined;
  };

  app.post('/api/devices/:id/revoke', async (c) => {
    const id = await confirmed(c);
    if (!id) return c.json({ error: 'confirm by sending {"confirm": "<device id>"}' }, 400);
    try {
      await ctx.registry.revokeDevice(id);
    } catch (e) {
      return registryError(c, e);
    }
    await adminAction(c, 'device.revoke', id, null);
    await broker.syncRegistry(); // its live session closes now, not at the next poll
    return c.json({ device: await deviceRow(ctx, feed, id) });
  });

  app.post('/api/devices/:id/rotate', async (c) => {
    const id = await confirmed(c);
    if (!id) return c.json({ error: 'confirm by sending {"confirm": "<device id>"}' }, 400);
    try {
      const { device, key } = await ctx.registry.rotateDevice(id);
      await adminAction(c, 'device.rotate', id, `key_version=${device.keyVersion}`);
      await broker.syncRegistry();
      return keyResponse(c, id, key, 200);
    } catch (e) {
      return registryError(c, e);
    }
  });

  app.get('/api/roles', async (c) => c.json({ roles: await rolesView(ctx) }));

  app.get('/api/health', async (c) =>
    c.json({
      nodes: [
        {
          id: `${broker.host}:${broker.port}`,
          mqtt: `mqtt://${broker.host}:${broker.port}`,
          console: `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`,
          ...feed.health(),
          connections: Object.keys(aedesClients(ctx)).length, // now, not at the last 2 s sample
        },
      ],
      registry: { backend: ctx.registry.backend, dataDir: ctx.registry.dataDir, schemaVersion: await ctx.registry.schemaVersion(), revision: await ctx.registry.revision() },
      consoleSessions: sessions.size,
    }),
  );

  app.get('/api/events', (c) => {
    if (streams.size >= maxStreams) return c.json({ error: 'too many event streams' }, 429);
    const token = getCookie(c, SESSION_COOKIE);
    return streamSSE(c, async (stream) => {
      const handle = { abort: () => stream.abort() };
      streams.add(handle);
      let id = 0;
      const send = (event: string, data: unknown) => void stream.writeSSE({ event, data: JSON.stringify(data), id: String(++id) }).catch(() => stream.abort());
      const onStats = (d: unknown) => send('stats', d);
      const onHealth = (d: unknown) => send('health', d);
      const onDevice = (d: unknown) => send('device', d);
      const onDevices = (d: unknown) => send('devices', d);
      feed.on('stats', onStats);
      feed.on('health', onHealth);
      feed.on('device', onDevice);
      feed.on('devices', onDevices);
      // a session that ends (logout, expiry, account disabled) ends its stream
      const check = setInterval(() => {
        sessions.lookup(token).then((s) => s || stream.abort(), () => {});
      }, 15_000);
      await new Promise<void>((resolve) => stream.onAbort(() => resolve()));
      clearInterval(check);
      feed.off('stats', onStats);
      feed.off('health', onHealth);
      feed.off('device', onDevice);
      feed.off('devices', onDevices);
      streams.delete(handle);
    });
  });

  app.get('/', (c) => {
    c.header('Content-Security-Policy', page.csp);
    c.header('Cache-Control', 'no-store');
    return c.html(page.html);
  });

  app.get('/assets/:name', (c) => {
    const a = assets.get(c.req.param('name'));
    if (!a) return c.text('not found', 404);
    c.header('Cache-Control', 'no-cache');
    c.header('ETag', a.etag);
    if (c.req.header('if-none-match') === a.etag) return c.body(null, 304);
    c.header('Content-Type', a.type);
    return c.body(new Uint8Array(a.body));
  });

  app.notFound((c) => c.json({ error: 'not found' }, 404));
  app.onError((e, c) => {
    ctx.log.error({ err: e, path: c.req.path }, 'console request failed');
    return c.json({ error: 'internal error' }, 500);
  });

  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve(
      {
        fetch: app.fetch,
        port: opts.port,
        hostname: host,
        ...(tls ? { createServer: createHttpsServer, serverOptions: { key: tls.key, cert: tls.cert } } : {}),
      },
      () => resolve(s as Server),
    );
    (s as Server).once('error', reject);
  });
  port = (server.address() as AddressInfo).port;
  const urlHost = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
  const url = `${scheme}://${urlHost}:${port}/`;
  ctx.log.info({ url, certFile: tls?.certFile }, 'operator console listening');

  let closed: Promise<void> | undefined;
  return {
    url,
    host,
    port,
    https: !!tls,
    certFile: tls?.certFile,
    feed,
    sessions,
    close: () =>
      (closed ??= (async () => {
        broker.registryEvents.off('change', onRegistryChange);
        for (const s of streams) s.abort();
        feed.stop();
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      })()),
  };
}
