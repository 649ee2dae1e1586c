/**
 * Debian's headless Chromium, driven by playwright-core (which never downloads
 * a browser of its own): the executable and the flags a closed network needs
 * (no background connections, updates, sync or QUIC; no sandbox, as CI runs as root).
 */
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM_PATH = process.env.MQSEC_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
}
