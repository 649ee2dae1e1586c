/**
 * The operator console in a real headless Chromium (Debian's, driven by
 * playwright-core) against a real broker with a small simulated fleet (the
 * host simulator's nodes running the firmware modules): log in, the
 * overview's counters equal the broker's metrics, provision a device from the
 * page and run it in the simulator with the config file the page downloaded,
 * revoke it from the page and see it drop within a second, and a wrong
 * password and cross-site POSTs refused. A screenshot of each page is saved
 * under a temp dir and checked not to be blank.
 *
 * MQSEC_CONSOLE_SCREENSHOT=docs/console-overview.png also writes the overview
 * screenshot there (the README's picture; the page shows no secret).
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../../tools/chromium.js';
import type { RunningBroker } from '../../broker/server.js';
import { runFleet, type FleetResult } from '../../host-sim/fleet/fleet.js';
import { tryConnect } from '../../host-sim/fleet/attackers.js';
import { encodePacket } from '../../firmware/mqtt/codec.js';
import { loadDeviceConfigs } from '../../cli/commands/sim.js';
import { tempDir, testBroker, waitFor } from '../broker/helpers.js';

const ADMIN = 'operator';
const ADMIN_PW = 'console test password';

const shots = mkdtempSync(join(tmpdir(), 'mqsec-console-shots-'));
let dir: ReturnType<typeof tempDir>;
let broker: RunningBroker;
let base: string;
let browser: Browser;
let page: Page;
/** A blank tab that decodes screenshots to check they are not blank. */
let probe: Page;
const fleets: { stop: () => void; done: Promise<FleetResult> }[] = [];
let attacker: Server;

function startFleet(opts: Partial<Parameters<typeof runFleet>[0]>): void {
  let stop!: () => void;
  const stopSignal = new Promise<void>((r) => (stop = r));
  const done = runFleet({
    devices: 0,
    durationS: 3600,
    broker: { host: broker.host, port: broker.port, dataDir: dir.path },
    sleepMode: 'wait',
    rate: 0.2, // a reading every few seconds across the fleet: quiet seconds in which counters can be compared
    attackers: 0,
    workers: 0,
    quiesceS: 1,
    stopSignal,
    ...opts,
  });
  fleets.push({ stop, done });
}

/** The screenshot is a real picture: the page was drawn (many colours), not a blank or single-colour frame. */
async function shoot(name: string): Promise<Buffer> {
  const png = await page.screenshot({ fullPage: true });
  writeFileSync(join(shots, `${name}.png`), png);
  {
    const colours = await probe.evaluate(async (b64) => {
      // runs in the page (DOM types are not in this project's compilation)
      const { Image, document } = globalThis as unknown as { Image: new () => any; document: any }; // eslint-disable-line @typescript-eslint/no-explicit-any
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width;
      c.height = img.height;
      const g = c.getContext('2d')!;
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const seen = new Set<number>();
      for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i]! << 16) | (d[i + 1]! << 8) | d[i + 2]!);
      return seen.size;
    }, png.toString('base64'));
    expect(colours, `${name} screenshot has content`).toBeGreaterThan(20);
  }
  return png;
}

beforeAll(async () => {
  dir = tempDir('mqsec-console-browser-');
  broker = await testBroker(dir.path, { console: { port: 0 } });
  base = broker.console!.url;
  await broker.registry.addAccount(ADMIN, 'admin', ADMIN_PW);
  startFleet({ devices: 4, deviceIdPrefix: 'fleet' });
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  probe = await browser.newPage();
  await waitFor(() => broker.context.liveDevices.size === 4, 30_000, 'the simulated fleet online');
}, 60_000);

afterAll(async () => {
  for (const f of fleets) f.stop();
  await Promise.allSettled(fleets.map((f) => f.done));
  await browser?.close();
  attacker?.close();
  await broker?.stop();
  dir?.remove();
}, 60_000);

describe('operator console in Chromium', () => {
  it('refuses a wrong password', async () => {
    await page.goto(base);
    await page.getByTestId('login-name').fill(ADMIN);
    await page.getByTestId('login-password').fill('not the password');
    await page.getByTestId('login-submit').click();
    await expect.poll(() => page.getByTestId('login-error').textContent()).toContain('wrong account name or password');
    expect(await page.context().cookies()).toEqual([]);
    await shoot('login');
  });

  it('logs in (the Secure session cookie is kept on loopback HTTP) and shows the overview', async () => {
    await page.getByTestId('login-password').fill(ADMIN_PW);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('overview-cards').waitFor();
    const cookies = await page.context().cookies();
    expect(cookies).toHaveLength(1);
    expect(cookies[0]).toMatchObject({ name: 'mqsec_console', httpOnly: true, secure: true, sameSite: 'Strict' });
    expect(await page.evaluate('document.cookie')).toBe(''); // HttpOnly: not readable by the page's scripts
    await expect.poll(() => page.getByTestId('live').getAttribute('class')).toContain('on');
  });

  it("the overview's counters equal the broker's metrics, live", async () => {
    // one refused login of a known class, so the refusals table has a row to match
    const downgrade = encodePacket({ type: 'connect', protocolLevel: 4, clientId: 'fleet-0001', cleanSession: true, keepalive: 30, username: 'fleet-0001', password: new TextEncoder().encode('guess') } as never);
    expect(await tryConnect(broker.host, broker.port, downgrade)).toBe(false);
    const m = broker.metrics;
    const total = async (id: string) => Number(await page.getByTestId(id).getAttribute('data-total'));
    const fromPage = async () => ({
      connected: Number((await page.getByTestId('connected').locator('.value').textContent())!.replace(/,/g, '')),
      phase1: await total('phase1'),
      phase2: await total('phase2'),
      in: await total('msgs-in'),
      out: await total('msgs-out'),
      downgrade: Number(await page.locator('tr[data-class="login:DOWNGRADE"] td:last-child').textContent()),
    });
    const fromBroker = async () => ({
      connected: await m.value('mqsec_device_sessions'),
      phase1: await m.value('mqsec_auth_total', { kind: 'phase1', result: 'ok' }),
      phase2: await m.value('mqsec_auth_total', { kind: 'phase2', result: 'ok' }),
      in: await m.value('mqsec_messages_total'),
      out: await m.value('mqsec_deliveries_total'),
      downgrade: await m.value('mqsec_login_refusals_total', { class: 'DOWNGRADE' }),
    });
    // the page follows the broker's 1 s samples: wait for a sample taken after the last change
    let last: unknown;
    await expect
      .poll(async () => {
        const [p, b] = [await fromPage(), await fromBroker()];
        last = { page: p, broker: b };
        return JSON.stringify(p) === JSON.stringify(b);
      }, { timeout: 15_000, interval: 250 })
      .toBe(true);
    const { page: p } = last as { page: Awaited<ReturnType<typeof fromPage>> };
    expect(p.connected).toBe(4);
    expect(p.phase1).toBeGreaterThanOrEqual(4);
    expect(p.downgrade).toBe(1);
    expect(await page.locator('[data-testid^="chart-"] canvas').count()).toBe(4);
    const png = await shoot('overview');
    const readmeShot = process.env.MQSEC_CONSOLE_SCREENSHOT;
    if (readmeShot) writeFileSync(readmeShot, png);
  });

  it('devices page: the fleet online, search and state filter', async () => {
    await page.goto(`${base}#/devices`);
    await expect.poll(() => page.locator('tr[data-device^="fleet-"][data-state="online"]').count()).toBe(4);
    await page.getByTestId('device-search').fill('fleet-0002');
    await expect.poll(() => page.locator('tr[data-device]').count()).toBe(1);
    await page.getByTestId('device-search').fill('');
    await page.getByTestId('device-state-filter').selectOption('revoked');
    await expect.poll(() => page.locator('tr[data-device]').count()).toBe(0);
    await page.getByTestId('device-state-filter').selectOption('');
    await expect.poll(() => page.locator('tr[data-device]').count()).toBe(4);
    await shoot('devices');
  });

  let configFile = '';
  it('provisions a device: key and config shown once, config downloaded', async () => {
    await page.goto(`${base}#/provision`);
    await page.getByTestId('provision-id').fill('console-dev');
    await page.getByTestId('provision-submit').click();
    const key = (await page.getByTestId('device-key').textContent())!;
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    const download = page.waitForEvent('download');
    await page.getByTestId('download-config').click();
    configFile = join(shots, 'downloaded-config.json');
    await (await download).saveAs(configFile);
    const config = JSON.parse(readFileSync(configFile, 'utf8'));
    expect(config).toEqual({ id: 'console-dev', key, broker: { host: broker.host, port: broker.port } });
    await page.getByTestId('forget-key').click();
    expect(await page.getByTestId('key-once').count()).toBe(0);
    expect(await page.content()).not.toContain(key);
    // the device's page never shows it again
    await page.goto(`${base}#/devices/console-dev`);
    await page.getByTestId('device-detail').waitFor();
    expect(await page.content()).not.toContain(key);
    await shoot('provision');
  });

  it('the downloaded config runs in the simulator; revoking from the page drops it within 1 s', async () => {
    startFleet({ provisioned: loadDeviceConfigs([configFile]) });
    await waitFor(() => broker.context.liveDevices.has('console-dev'), 20_000, 'console-dev online');
    await expect.poll(() => page.getByTestId('current-session').textContent(), { timeout: 5000 }).toContain('phase 1');
    await shoot('device');
    await page.getByTestId('revoke').click();
    await page.getByTestId('confirm-input').fill('console-dev');
    // Timed inside the page from the click to the revoked state on screen (no test-driver latency in it),
    // and on the broker from just before the click to the device's session being gone.
    const clickedAt = Date.now();
    const shownAfterMs = page.evaluate(`new Promise((resolve) => {
      const t0 = performance.now();
      const seen = () => document.querySelector('h2 .state.revoked') && (obs.disconnect(), resolve(performance.now() - t0));
      const obs = new MutationObserver(seen);
      obs.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
      document.querySelector('[data-testid="confirm-button"]').click();
    })`) as Promise<number>;
    await waitFor(() => !broker.context.liveDevices.has('console-dev'), 2000, 'console-dev dropped');
    const droppedAfterMs = Date.now() - clickedAt;
    expect(await shownAfterMs).toBeLessThan(1000);
    expect(droppedAfterMs).toBeLessThan(1000);
    expect(await page.getByTestId('current-session').textContent()).toBe('none');
    expect((await broker.registry.listAudit({ kind: 'console.device.revoke', subject: 'console-dev' }))[0]).toMatchObject({ detail: `by ${ADMIN}` });
  });

  it('rules and health pages', async () => {
    await page.goto(`${base}#/rules`);
    await page.getByTestId('rules').waitFor();
    expect(await page.getByTestId('rules').textContent()).toContain('sensors/%u/#');
    await shoot('rules');
    await page.goto(`${base}#/health`);
    await page.getByTestId('health').waitFor();
    expect(await page.locator(`tr[data-node="${broker.host}:${broker.port}"]`).count()).toBe(1);
    await shoot('health');
  });

  it('a cross-site POST carrying the session cookie is refused by the CSRF defence', async () => {
    // Another origin on the same site (same loopback address, other port): SameSite=Strict still sends
    // the cookie, so only the Origin / CSRF-token checks stand between this page and a revoke.
    const target = `${base}api/devices/fleet-0003/revoke`;
    attacker = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<!doctype html><form id="f" method="POST" action="${target}" enctype="text/plain">
        <input name='{"confirm":"fleet-0003","x":"' value='"}'></form>
        <script>fetch(${JSON.stringify(target)}, { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'content-type': 'text/plain' }, body: '{"confirm":"fleet-0003"}' })
          .finally(() => document.getElementById('f').submit());</script>`);
    });
    await new Promise<void>((r) => attacker.listen(0, '127.0.0.1', () => r()));
    const refusedBefore = (await broker.registry.listAudit({ kind: 'console.refused', subject: ADMIN })).length;
    const evil = await page.context().newPage();
    const submitted = evil.waitForURL(target, { timeout: 10_000 });
    await evil.goto(`http://127.0.0.1:${(attacker.address() as { port: number }).port}/`);
    await submitted;
    expect(await evil.content()).toContain('cross-'); // the console's refusal (cross-site / cross-origin request)
    await evil.close();
    await waitFor(async () => (await broker.registry.listAudit({ kind: 'console.refused', subject: ADMIN })).length >= refusedBefore + 2, 5000, 'both attempts refused and audited');
    expect((await broker.registry.getDevice('fleet-0003'))!.status).toBe('active');
    expect(broker.context.liveDevices.has('fleet-0003')).toBe(true);
  });

  it('screenshots of every page are on disk', () => {
    for (const name of ['login', 'overview', 'devices', 'provision', 'device', 'rules', 'health']) expect(existsSync(join(shots, `${name}.png`)), name).toBe(true);
  });
});
