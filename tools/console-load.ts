/**
 * How long the operator console's overview takes to load in headless
 * Chromium, against a running broker (e.g. with `mqsec sim --devices 1000`
 * connected to it):
 *
 *   MQSEC_CONSOLE_PASSWORD=... npx tsx tools/console-load.ts --url http://127.0.0.1:8080/ --user admin --expect 1000
 *
 * Logs in once, then per round opens the overview in a fresh tab and times
 * navigation start -> the connected-devices card shows at least --expect and
 * the four charts are drawn (what an operator waits for); the same for the
 * devices page (its table filled). Prints one JSON line with every round and
 * the median. The password is read from the environment, never from a flag.
 */
import { Command } from 'commander';
import { launchChromium } from './chromium.js';

async function main(argv: string[]): Promise<void> {
  const o = new Command('console-load')
    .requiredOption('--url <url>', 'console URL as the broker printed it')
    .requiredOption('--user <name>', 'admin account')
    .option('--expect <n>', 'connected devices the overview must show', (v) => Number(v), 1)
    .option('--rounds <n>', 'page loads per page', (v) => Number(v), 5)
    .parse(argv)
    .opts<{ url: string; user: string; expect: number; rounds: number }>();
  const password = process.env.MQSEC_CONSOLE_PASSWORD;
  if (!password) throw new Error('set MQSEC_CONSOLE_PASSWORD');
  const browser = await launchChromium();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const login = await context.newPage();
    await login.goto(o.url);
    await login.getByTestId('login-name').fill(o.user);
    await login.getByTestId('login-password').fill(password);
    await login.getByTestId('login-submit').click();
    await login.getByTestId('overview-cards').waitFor();
    await login.close();
    const overview: number[] = [];
    const devices: number[] = [];
    for (let r = 0; r < o.rounds; r++) {
      const page = await context.newPage();
      const t0 = Date.now();
      await page.goto(`${o.url}#/overview`);
      await page.waitForFunction(
        (n) => {
          const document = (globalThis as unknown as { document: { querySelector(s: string): { textContent: string | null } | null; querySelectorAll(s: string): { length: number } } }).document;
          const v = document.querySelector('[data-testid="connected"] .value')?.textContent?.replace(/,/g, '');
          return Number(v) >= n && document.querySelectorAll('[data-testid^="chart-"] canvas').length === 4;
        },
        o.expect,
        { timeout: 60_000, polling: 'raf' },
      );
      overview.push(Date.now() - t0);
      const t1 = Date.now();
      await page.goto(`${o.url}#/devices`);
      await page.waitForFunction(
        (n) => (globalThis as unknown as { document: { querySelectorAll(s: string): { length: number } } }).document.querySelectorAll('tr[data-device]').length >= Math.min(n, 500),
        o.expect,
        { timeout: 60_000, polling: 'raf' },
      );
      devices.push(Date.now() - t1);
      await page.close();
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(JSON.stringify({ expect: o.expect, overview_ms: overview, overview_median_ms: median(overview), devices_ms: devices, devices_median_ms: median(devices) }));
  } finally {
    await browser.close();
  }
}

main(process.argv).catch((e) => {
  console.error(`console-load: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
