// The mqsec operator console page: Preact components written with htm tagged
// templates, uPlot for the charts; plain ES modules the broker serves as they
// are (no build step). Data: one JSON fetch per page view, then the broker's
// Server-Sent Events (/api/events) keep it live. Device keys exist here only
// in the one response that created them, in memory, until the dialog closes.
import { h, render } from 'preact';
import { useEffect, useRef, useState, useCallback } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';

const html = htm.bind(h);

// ---- API ---------------------------------------------------------------------

let csrf = '';

async function api(path, { method = 'GET', body } = {}) {
  const headers = {};
  if (method !== 'GET') {
    headers['content-type'] = 'application/json';
    headers['x-csrf-token'] = csrf;
  }
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401 && path !== '/api/login') {
    window.dispatchEvent(new Event('mqsec-logged-out'));
  }
  if (!res.ok) throw Object.assign(new Error(data.error || `HTTP ${res.status}`), { status: res.status });
  return data;
}

// ---- live events (one EventSource for the whole page) -------------------------

const listeners = new Map();
let source;
function openEvents(onState) {
  source?.close();
  source = new EventSource('/api/events');
  source.onopen = () => onState(true);
  source.onerror = () => onState(false);
  for (const ev of ['stats', 'health', 'device', 'devices']) {
    source.addEventListener(ev, (e) => {
      const data = JSON.parse(e.data);
      for (const f of listeners.get(ev) ?? []) f(data);
    });
  }
}
function useEvent(name, f) {
  const ref = useRef(f);
  ref.current = f;
  useEffect(() => {
    const g = (d) => ref.current(d);
    if (!listeners.has(name)) listeners.set(name, new Set());
    listeners.get(name).add(g);
    return () => listeners.get(name).delete(g);
  }, [name]);
}

// ---- formatting ----------------------------------------------------------------

const fmtInt = (n) => (n ?? 0).toLocaleString('en-US');
const fmtBytes = (b) => `${(b / 1048576).toFixed(1)} MiB`;
function fmtAgo(ms) {
  if (ms == null) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
function fmtDuration(ms) {
  if (ms == null) return '—';
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
const fmtTime = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : '—');

// ---- routing (hash) -------------------------------------------------------------

function useRoute() {
  const [hash, setHash] = useState(location.hash || '#/overview');
  useEffect(() => {
    const f = () => setHash(location.hash || '#/overview');
    window.addEventListener('hashchange', f);
    return () => window.removeEventListener('hashchange', f);
  }, []);
  return hash.slice(1).split('/').filter(Boolean).map(decodeURIComponent);
}

// ---- charts -----------------------------------------------------------------------

const WINDOW_S = 15 * 60;
function Chart({ title, series, points, testid }) {
  const el = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const opts = {
      width: Math.max(300, el.current.clientWidth - 10),
      height: 160,
      legend: { show: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [{ size: 30 }, { size: 48 }],
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, points: { show: false } }))],
    };
    plot.current = new uPlot(opts, toData(points, series), el.current);
    const ro = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(300, el.current.clientWidth - 10), height: 160 }));
    ro.observe(el.current);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
    };
  }, []);
  useEffect(() => {
    plot.current?.setData(toData(points, series));
  }, [points]);
  return html`<div class="chart" data-testid=${testid}><div class="title">${title}</div><div ref=${el}></div></div>`;
}
function toData(points, series) {
  return [points.map((p) => p.t / 1000), ...series.map((s) => points.map((p) => p[s.key]))];
}

// ---- pages --------------------------------------------------------------------------

function Overview() {
  const [data, setData] = useState(null);
  useEffect(() => {
    api('/api/overview').then(setData, () => {});
  }, []);
  useEvent('stats', ({ point, totals }) => {
    setData((d) => {
      if (!d) return d;
      const series = d.series.concat(point).filter((p) => p.t > point.t - WINDOW_S * 1000);
      return { ...d, totals, series };
    });
  });
  if (!data) return html`<p class="muted">Loading…</p>`;
  const t = data.totals;
  const last = data.series[data.series.length - 1] ?? {};
  const refusals = [
    ...Object.entries(t.refusedLogins).map(([k, v]) => ['login', k, v]),
    ...Object.entries(t.refusedByPolicy).map(([k, v]) => ['policy', k, v]),
    ...Object.entries(t.refusedByLimits).map(([k, v]) => ['limits', k, v]),
  ].sort((a, b) => b[2] - a[2]);
  const totalRefused = refusals.reduce((a, r) => a + r[2], 0);
  return html`
    <h2>Fleet overview</h2>
    <div class="cards" data-testid="overview-cards">
      <${Card} label="Connected devices" value=${fmtInt(t.connected)} sub=${`${fmtInt(t.pending)} in phase 1`} testid="connected" />
      <${Card} label="Phase 1 / min" value=${fmtInt(last.phase1PerMin)} sub=${`${fmtInt(t.phase1)} total`} testid="phase1" total=${t.phase1} />
      <${Card} label="Phase 2 / min" value=${fmtInt(last.phase2PerMin)} sub=${`${fmtInt(t.phase2)} total`} testid="phase2" total=${t.phase2} />
      <${Card} label="Messages in / s" value=${fmtInt(last.inPerSec)} sub=${`${fmtInt(t.messagesIn)} total`} testid="msgs-in" total=${t.messagesIn} />
      <${Card} label="Messages out / s" value=${fmtInt(last.outPerSec)} sub=${`${fmtInt(t.messagesOut)} total`} testid="msgs-out" total=${t.messagesOut} />
      <${Card} label="Refused logins / min" value=${fmtInt(last.refusedPerMin)} sub=${`${fmtInt(totalRefused)} refusals of all kinds`} testid="refused" total=${totalRefused} />
    </div>
    <div class="charts">
      <${Chart} testid="chart-connected" title="Connected devices (15 min)" points=${data.series} series=${[{ key: 'connected', label: 'connected', color: '#2357d9' }]} />
      <${Chart} testid="chart-handshakes" title="Handshakes per minute" points=${data.series} series=${[
        { key: 'phase1PerMin', label: 'phase 1', color: '#b7791f' },
        { key: 'phase2PerMin', label: 'phase 2', color: '#18864b' },
      ]} />
      <${Chart} testid="chart-messages" title="Messages per second" points=${data.series} series=${[
        { key: 'inPerSec', label: 'in', color: '#2357d9' },
        { key: 'outPerSec', label: 'out', color: '#7c3aed' },
      ]} />
      <${Chart} testid="chart-refused" title="Refused logins per minute" points=${data.series} series=${[{ key: 'refusedPerMin', label: 'refused', color: '#c53030' }]} />
    </div>
    <h3>Refused attacks by class</h3>
    ${refusals.length === 0
      ? html`<p class="muted" data-testid="no-refusals">Nothing refused since the broker started.</p>`
      : html`<table class="refusals" data-testid="refusals"><thead><tr><th>Where</th><th>Class</th><th>Count</th></tr></thead><tbody>
          ${refusals.map(([where, cls, n]) => html`<tr data-class=${`${where}:${cls}`}><td>${where}</td><td>${cls}</td><td>${fmtInt(n)}</td></tr>`)}
        </tbody></table>`}
  `;
}

function Card({ label, value, sub, testid, total }) {
  return html`<div class="card" data-testid=${testid} data-total=${total}><div class="label">${label}</div><div class="value">${value}</div><div class="sub">${sub}</div></div>`;
}

function StateBadge({ state }) {
  return html`<span class=${`state ${state}`}>${state.replace('-', ' ')}</span>`;
}

const MAX_ROWS = 500;
function Devices() {
  const [search, setSearch] = useState('');
  const [state, setState] = useState('');
  const [rows, setRows] = useState(null);
  const [error, setError] = useState('');
  const load = useCallback(() => {
    const q = new URLSearchParams();
    if (search) q.set('search', search);
    if (state) q.set('state', state);
    api(`/api/devices?${q}`).then((d) => setRows(d.devices), (e) => setError(e.message));
  }, [search, state]);
  useEffect(load, [load]);
  // Sessions start and end all the time in a large fleet: refresh the list at most once a
  // second, and only when the broker reported a change (never on a timer of its own).
  const pending = useRef(null);
  useEffect(() => () => clearTimeout(pending.current), []);
  const changed = () => {
    if (pending.current) return;
    pending.current = setTimeout(() => {
      pending.current = null;
      load();
    }, 1000);
  };
  useEvent('devices', changed);
  useEvent('device', changed);
  return html`
    <h2>Devices</h2>
    <div class="toolbar">
      <input type="search" placeholder="Search id or role" value=${search} onInput=${(e) => setSearch(e.target.value)} data-testid="device-search" />
      <select value=${state} onChange=${(e) => setState(e.target.value)} data-testid="device-state-filter">
        <option value="">all states</option>
        <option value="online">online</option>
        <option value="asleep">asleep</option>
        <option value="revoked">revoked</option>
        <option value="never-seen">never seen</option>
      </select>
      <span class="muted" data-testid="device-count">${rows ? `${fmtInt(rows.length)} devices` : ''}</span>
      <a href="#/provision"><button class="secondary">Provision a device</button></a>
    </div>
    ${error && html`<p class="error">${error}</p>`}
    ${rows && html`<table data-testid="device-table"><thead><tr>
        <th>Device</th><th>State</th><th>Role</th><th>Last seen</th><th>Counter</th><th>Protection</th><th>Sessions</th><th>Key</th>
      </tr></thead><tbody>
      ${rows.slice(0, MAX_ROWS).map((d) => html`<tr data-device=${d.id} data-state=${d.state}>
        <td><a href=${`#/devices/${encodeURIComponent(d.id)}`}>${d.id}</a></td>
        <td><${StateBadge} state=${d.state} /></td>
        <td>${d.role}</td><td title=${fmtTime(d.lastSeen)}>${fmtAgo(d.lastSeen)}</td>
        <td>${d.counter < 0 ? '—' : fmtInt(d.counter)}</td><td>${d.protection}</td><td>${d.sessions}</td><td>v${d.keyVersion}</td>
      </tr>`)}
      </tbody></table>
      ${rows.length > MAX_ROWS && html`<p class="muted">${fmtInt(rows.length - MAX_ROWS)} more: narrow the search.</p>`}`}
  `;
}

function DeviceDetail({ id }) {
  const [d, setD] = useState(null);
  const [error, setError] = useState('');
  const [confirming, setConfirming] = useState(null);
  const [issued, setIssued] = useState(null);
  const load = useCallback(() => api(`/api/devices/${encodeURIComponent(id)}`).then(setD, (e) => setError(e.message)), [id]);
  useEffect(() => {
    load();
  }, [load]);
  useEvent('device', (e) => e.id === id && load());
  useEvent('devices', load);
  if (error) return html`<p class="error">${error}</p>`;
  if (!d) return html`<p class="muted">Loading…</p>`;
  const act = async (action) => {
    setConfirming(null);
    try {
      const r = await api(`/api/devices/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: { confirm: id } });
      if (r.config) setIssued(r.config);
      load();
    } catch (e) {
      setError(e.message);
    }
  };
  return html`
    <h2>Device ${d.id} <${StateBadge} state=${d.state} /></h2>
    <dl class="kv" data-testid="device-detail">
      <dt>Role</dt><dd>${d.role}</dd>
      <dt>Key version</dt><dd>v${d.keyVersion}</dd>
      <dt>Protection</dt><dd>${d.protection} (device ↔ broker envelope)</dd>
      <dt>Current session</dt><dd data-testid="current-session">${d.session ? `phase ${d.session.phase} from ${d.session.remote}${d.session.since ? `, since ${fmtTime(d.session.since)}` : ''}` : 'none'}</dd>
      <dt>Last seen</dt><dd>${fmtTime(d.lastSeen)} (${fmtAgo(d.lastSeen)})</dd>
      <dt>Highest counter</dt><dd>${d.counter < 0 ? '—' : fmtInt(d.counter)}</dd>
      <dt>Resumable sessions (tickets)</dt><dd>${d.sessions}</dd>
      <dt>Ticket age</dt><dd data-testid="ticket-age">${d.ticketAgeMs == null ? 'no ticket' : `${fmtDuration(d.ticketAgeMs)} (expires ${fmtTime(d.ticketExpiresAt)})`}</dd>
      <dt>Group-key epoch</dt><dd data-testid="group-key-epoch">${d.groupKeyEpoch == null ? 'not applicable (this broker has no group keys)' : d.groupKeyEpoch}</dd>
      <dt>Registered</dt><dd>${fmtTime(d.createdAt)}</dd>
    </dl>
    <div class="toolbar actions-row">
      <button class="danger" disabled=${d.status === 'revoked'} onClick=${() => setConfirming('revoke')} data-testid="revoke">Revoke</button>
      <button class="secondary" onClick=${() => setConfirming('rotate')} data-testid="rotate">Rotate key</button>
    </div>
    ${confirming && html`<${Confirm} id=${id} action=${confirming} onCancel=${() => setConfirming(null)} onConfirm=${() => act(confirming)} />`}
    ${issued && html`<${KeyOnce} config=${issued} onClose=${() => setIssued(null)} verb="rotated" />`}
    <h3>Audit trail</h3>
    <table data-testid="audit"><thead><tr><th>When</th><th>Event</th><th>Detail</th><th>Source</th></tr></thead><tbody>
      ${d.audit.map((a) => html`<tr><td>${fmtTime(a.at)}</td><td>${a.kind}</td><td>${a.detail ?? ''}</td><td>${a.source ?? ''}</td></tr>`)}
    </tbody></table>
  `;
}

function Confirm({ id, action, onCancel, onConfirm }) {
  const [typed, setTyped] = useState('');
  const what = action === 'revoke'
    ? 'Its live session closes at once and its tickets are deleted; it cannot log in again until its key is rotated.'
    : 'A new key is issued; the old key and every ticket stop working at once. The device needs the new config.';
  return html`<div class="modal-back"><div class="modal" role="dialog" data-testid="confirm-dialog">
    <h3>${action === 'revoke' ? 'Revoke' : 'Rotate the key of'} ${id}?</h3>
    <p>${what}</p>
    <label>Type the device id to confirm</label>
    <input value=${typed} onInput=${(e) => setTyped(e.target.value)} data-testid="confirm-input" />
    <div class="actions">
      <button class="secondary" onClick=${onCancel}>Cancel</button>
      <button class=${action === 'revoke' ? 'danger' : ''} disabled=${typed !== id} onClick=${onConfirm} data-testid="confirm-button">${action === 'revoke' ? 'Revoke' : 'Rotate'}</button>
    </div>
  </div></div>`;
}

/** Shows a new device key and offers its config file, once: closing forgets both. */
function KeyOnce({ config, onClose, verb }) {
  const [url, setUrl] = useState(null);
  useEffect(() => {
    const u = URL.createObjectURL(new Blob([JSON.stringify(config, null, 2) + '\n'], { type: 'application/json' }));
    setUrl(u);
    return () => URL.revokeObjectURL(u);
  }, [config]);
  return html`<div class="notice" data-testid="key-once">
    <p><strong>Device ${config.id} ${verb}.</strong> This is the only time its key is shown: the broker keeps it only encrypted and will not show it again.</p>
    <div class="secret" data-testid="device-key">${config.key}</div>
    <p>
      ${url && html`<a href=${url} download=${`device-config-${config.id}.json`} data-testid="download-config"><button>Download device config</button></a>`}
      ${' '}<button class="secondary" onClick=${onClose} data-testid="forget-key">I have stored it, close</button>
    </p>
  </div>`;
}

function Provision() {
  const [id, setId] = useState('');
  const [role, setRole] = useState('sensor');
  const [roles, setRoles] = useState(['sensor']);
  const [error, setError] = useState('');
  const [issued, setIssued] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    api('/api/roles').then((r) => setRoles(r.roles.map((x) => x.name)), () => {});
  }, []);
  const submit = async (e) => {
    e.preventDefault();
    setError('');
    setBusy(true);
    try {
      const r = await api('/api/devices', { method: 'POST', body: { id, role } });
      setIssued(r.config);
      setId('');
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <h2>Provision a device</h2>
    <form class="form" onSubmit=${submit} data-testid="provision-form">
      <label>Device id (A-Z a-z 0-9 _ . -, up to 23)</label>
      <input value=${id} onInput=${(e) => setId(e.target.value)} required maxlength="23" pattern="[A-Za-z0-9_.\\-]{1,23}" data-testid="provision-id" />
      <label>Role</label>
      <select value=${role} onChange=${(e) => setRole(e.target.value)} data-testid="provision-role">
        ${roles.map((r) => html`<option value=${r}>${r}</option>`)}
      </select>
      <p><button type="submit" disabled=${busy} data-testid="provision-submit">Create device and key</button></p>
    </form>
    ${error && html`<p class="error" data-testid="provision-error">${error}</p>`}
    ${issued && html`<${KeyOnce} config=${issued} onClose=${() => setIssued(null)} verb="created" />`}
  `;
}

function Rules() {
  const [roles, setRoles] = useState(null);
  useEffect(() => {
    api('/api/roles').then((r) => setRoles(r.roles), () => {});
  }, []);
  if (!roles) return html`<p class="muted">Loading…</p>`;
  return html`
    <h2>Roles and rules</h2>
    <p class="muted">Deny by default: a client may do only what a rule of its role allows (<code>%u</code> is its own id). Change them with <code>mqsec role</code> and <code>mqsec acl</code>.</p>
    <table data-testid="rules"><thead><tr><th>Role</th><th>Plain-MQTT readers get decrypted payloads</th><th>Allowed</th></tr></thead><tbody>
      ${roles.map((r) => html`<tr><td>${r.name}</td><td>${r.plaintext ? 'yes' : 'no'}</td>
        <td>${r.rules.length ? r.rules.map((x) => html`<div>${x.action} <code>${x.filter}</code></div>`) : html`<span class="muted">nothing</span>`}</td></tr>`)}
    </tbody></table>
  `;
}

function Health() {
  const [h, setH] = useState(null);
  useEffect(() => {
    api('/api/health').then(setH, () => {});
  }, []);
  useEvent('health', (sample) => setH((x) => x && { ...x, nodes: x.nodes.map((n) => ({ ...n, ...sample })) }));
  if (!h) return html`<p class="muted">Loading…</p>`;
  return html`
    <h2>Broker health</h2>
    <table data-testid="health"><thead><tr><th>Node</th><th>PID</th><th>Up</th><th>Connections</th><th>CPU</th><th>Memory (RSS / heap)</th><th>Event-loop delay p50 / p99 / max</th></tr></thead><tbody>
      ${h.nodes.map((n) => html`<tr data-node=${n.id}>
        <td>${n.mqtt}</td><td>${n.pid}</td><td>${fmtDuration(n.uptimeS * 1000)}</td><td>${fmtInt(n.connections)}</td>
        <td>${(n.cpu * 100).toFixed(1)} %</td><td>${fmtBytes(n.rssBytes)} / ${fmtBytes(n.heapUsedBytes)}</td>
        <td>${n.eventLoopDelayMs.p50} / ${n.eventLoopDelayMs.p99} / ${n.eventLoopDelayMs.max} ms</td></tr>`)}
    </tbody></table>
    <h3>Registry</h3>
    <dl class="kv"><dt>Schema version</dt><dd>${h.registry.schemaVersion}</dd><dt>Revision</dt><dd>${h.registry.revision}</dd><dt>Console sessions</dt><dd>${h.consoleSessions}</dd></dl>
  `;
}

function Login({ onLogin }) {
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const submit = async (e) => {
    e.preventDefault();
    setError('');
    try {
      const r = await api('/api/login', { method: 'POST', body: { name, password } });
      setPassword('');
      onLogin(r);
    } catch (err) {
      setError(err.message);
    }
  };
  return html`<form class="login" onSubmit=${submit} data-testid="login-form">
    <h2>mqsec console</h2>
    <label>Admin account</label><input autocomplete="username" value=${name} onInput=${(e) => setName(e.target.value)} data-testid="login-name" />
    <label>Password</label><input type="password" autocomplete="current-password" value=${password} onInput=${(e) => setPassword(e.target.value)} data-testid="login-password" />
    ${error && html`<p class="error" data-testid="login-error">${error}</p>`}
    <button type="submit" data-testid="login-submit">Log in</button>
  </form>`;
}

const PAGES = [
  ['overview', 'Overview'],
  ['devices', 'Devices'],
  ['provision', 'Provision'],
  ['rules', 'Rules'],
  ['health', 'Health'],
];

function App() {
  const [me, setMe] = useState(undefined);
  const [live, setLive] = useState(false);
  const route = useRoute();
  useEffect(() => {
    api('/api/session').then(setMe, () => setMe(null));
    const out = () => setMe(null);
    window.addEventListener('mqsec-logged-out', out);
    return () => window.removeEventListener('mqsec-logged-out', out);
  }, []);
  useEffect(() => {
    if (!me) return;
    csrf = me.csrf;
    openEvents(setLive);
    return () => source?.close();
  }, [me]);
  if (me === undefined) return html`<p class="boot">Loading…</p>`;
  if (me === null) return html`<${Login} onLogin=${setMe} />`;
  const [page, arg] = route;
  const logout = async () => {
    await api('/api/logout', { method: 'POST', body: {} }).catch(() => {});
    source?.close();
    setMe(null);
  };
  let body;
  if (page === 'devices' && arg) body = html`<${DeviceDetail} id=${arg} />`;
  else if (page === 'devices') body = html`<${Devices} />`;
  else if (page === 'provision') body = html`<${Provision} />`;
  else if (page === 'rules') body = html`<${Rules} />`;
  else if (page === 'health') body = html`<${Health} />`;
  else body = html`<${Overview} />`;
  return html`
    <header>
      <h1>mqsec console</h1>
      <nav>${PAGES.map(([p, label]) => html`<a href=${`#/${p}`} class=${(page ?? 'overview') === p ? 'active' : ''}>${label}</a>`)}</nav>
      <div class="who"><span class=${`live ${live ? 'on' : ''}`} title=${live ? 'live' : 'reconnecting'} data-testid="live"></span>${me.name}
        <button class="secondary" onClick=${logout} data-testid="logout">Log out</button></div>
    </header>
    <main>${body}</main>
  `;
}

render(html`<${App} />`, document.getElementById('app'));
