/**
 * Test helpers for the operator console: raw HTTP(S) requests with full
 * control of Host, Origin and the source address (node:http, not fetch, so
 * nothing is added or refused behind the test's back), and a logged-in admin.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: unknown;
  /** Raw body (sent as is; `body` is JSON-encoded). */
  raw?: string;
  cookie?: string;
  /** Source address (127.0.0.0/8) to send from. */
  localAddress?: string;
  /** CA to trust for HTTPS. */
  ca?: string;
}

export function send(url: string, o: RequestOptions = {}): Promise<Reply> {
  const u = new URL(url);
  const payload = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
  const headers: Record<string, string> = {
    ...(payload !== undefined && o.raw === undefined ? { 'content-type': 'application/json' } : {}),
    ...(o.cookie ? { cookie: o.cookie } : {}),
    ...o.headers,
  };
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method: o.method ?? (payload === undefined ? 'GET' : 'POST'), headers, localAddress: o.localAddress, ca: o.ca },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** `name=value` of the session cookie in a Set-Cookie reply, and its attributes. */
export function sessionCookie(r: Reply): { pair: string; attributes: string[] } {
  const set = r.headers['set-cookie'];
  const line = (Array.isArray(set) ? set : [set ?? ''])[0]!;
  const [pair, ...attributes] = line.split(';').map((s) => s.trim());
  return { pair: pair!, attributes };
}

export interface AdminSession {
  cookie: string;
  csrf: string;
  origin: string;
  /** A state change as the page makes it (Origin, JSON, CSRF token). */
  post(path: string, body: unknown): Promise<Reply>;
  get(path: string): Promise<Reply>;
}

export async function login(base: string, name: string, password: string, extra: RequestOptions = {}): Promise<AdminSession> {
  const origin = new URL(base).origin;
  const r = await send(`${base}api/login`, { ...extra, body: { name, password }, headers: { origin, ...extra.headers } });
  if (r.status !== 200) throw new Error(`login failed: ${r.status} ${r.text}`);
  const cookie = sessionCookie(r).pair;
  const csrf = r.json.csrf as string;
  return {
    cookie,
    csrf,
    origin,
    post: (path, body) => send(`${base}${path.replace(/^\//, '')}`, { ...extra, body, cookie, headers: { origin, 'x-csrf-token': csrf } }),
    get: (path) => send(`${base}${path.replace(/^\//, '')}`, { ...extra, cookie }),
  };
}
