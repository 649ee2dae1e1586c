/**
 * Host-side helpers for the Moddable build (used by `mqsec device-desktop`
 * and `mqsec hil`): find an installed Moddable SDK, turn a device config JSON
 * (`mqsec device add ID --json`) into the firmware's `mqsec/device-config`
 * module, run mcconfig, and start/stop processes by PID.
 *
 * Nothing here downloads or builds the SDK: install it as its documentation
 * says (docs/firmware.md) and point MODDABLE at it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDeviceConfig, type DeviceConfig } from '../firmware/app/device-config.js';
import { constantTimeEqual, fromHex } from '../firmware/core/bytes.js';
import { splitPrincipalKey } from '../broker/registry/principal-keys.js';
import { SqliteRegistry } from '../broker/registry/registry.js';

export const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const APP_MANIFEST = join(REPO_ROOT, 'manifest.json');
/** File name (without .js) the manifest maps to `mqsec/device-config` under $(MQSEC_CONFIG_DIR). */
export const CONFIG_MODULE_NAME = 'mqsec-device-config';

export interface Sdk {
  moddable: string;
  mcconfig: string;
  /** Desktop simulator binary (lin), when built. */
  mcsim?: string;
}

function which(cmd: string, env: NodeJS.ProcessEnv): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { env, encoding: 'utf8' });
  const p = r.stdout?.trim();
  return r.status === 0 && p ? p : undefined;
}

/** The installed SDK, or a one-line reason why there is none (for a "skipped: ..." message). */
export function findSdk(env: NodeJS.ProcessEnv = process.env): Sdk | { missing: string } {
  const moddable = env.MODDABLE;
  if (!moddable) return { missing: 'MODDABLE is not set (no Moddable SDK installed; see docs/firmware.md)' };
  if (!existsSync(join(moddable, 'tools', 'mcconfig'))) return { missing: `MODDABLE=${moddable} does not look like a Moddable SDK checkout` };
  const binDir = join(moddable, 'build', 'bin', 'lin', 'release');
  const mcconfig = existsSync(join(binDir, 'mcconfig')) ? join(binDir, 'mcconfig') : which('mcconfig', env);
  if (!mcconfig) return { missing: `mcconfig not built (expected ${join(binDir, 'mcconfig')}; see docs/firmware.md)` };
  const mcsimPath = [join(binDir, 'mcsim'), join(moddable, 'build', 'bin', 'lin', 'debug', 'mcsim')].find((p) => existsSync(p)) ?? which('mcsim', env);
  return mcsimPath ? { moddable, mcconfig, mcsim: mcsimPath } : { moddable, mcconfig };
}

export function isSdk(x: Sdk | { missing: string }): x is Sdk {
  return (x as Sdk).mcconfig !== undefined;
}

/**
 * True for a broker address only the build host itself can reach: loopback
 * (127.0.0.0/8, ::1, localhost) or unspecified (0.0.0.0, ::). Fine for the
 * simulator and the desktop target, never right for a board on the network.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::1' || h === '0.0.0.0' || h === '::' || h === '0:0:0:0:0:0:0:1';
}

/**
 * Whether the key in a device config is the one the registry accepts now.
 * A config left from before `mqsec device rotate`, or for a revoked or removed
 * device, builds firmware that can never log in. Compared in constant time.
 */
export async function checkConfigAgainstRegistry(config: DeviceConfig, dataDir: string): Promise<{ ok: true } | { ok: false; reason: string }> {
  const registry = SqliteRegistry.open(dataDir);
  try {
    const d = await registry.getDevice(config.id);
    if (!d) return { ok: false, reason: `device "${config.id}" is not in the registry in ${dataDir} (removed, or another registry)` };
    if (d.status !== 'active') return { ok: false, reason: `device "${config.id}" is revoked: \`mqsec device rotate ${config.id}\` issues a new key and config` };
    // the registry keeps K_auth only (docs/protocol.md §14.2): compare what the config's key derives
    const current = await registry.handshakeKeys(config.id);
    const given = fromHex(config.key);
    const derived = splitPrincipalKey(given, config.id);
    const same = current !== undefined && constantTimeEqual(current.authKey, derived.handshake.subarray(0, 32));
    current?.authKey.fill(0);
    current?.pskKey.fill(0);
    derived.handshake.fill(0);
    derived.keyService.fill(0);
    given.fill(0);
    if (!same) return { ok: false, reason: `the key in this config is not the one the registry accepts for "${config.id}" (key v${d.keyVersion}): it was rotated; use the config \`mqsec device rotate\` wrote` };
    return { ok: true };
  } finally {
    await registry.close();
  }
}

/** Reads and validates a device config JSON file, with optional overrides. */
export function loadDeviceConfig(path: string, overrides: { host?: string; port?: number; ssid?: string; wifiPassword?: string } = {}): DeviceConfig {
  const raw = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  const merged: Record<string, unknown> = { ...raw };
  const broker = { ...((raw.broker as Record<string, unknown>) ?? { host: raw.host, port: raw.port }) };
  if (overrides.host !== undefined) broker.host = overrides.host;
  if (overrides.port !== undefined) broker.port = overrides.port;
  merged.broker = broker;
  if (overrides.ssid !== undefined) merged.wifi = { ssid: overrides.ssid, ...(overrides.wifiPassword ? { password: overrides.wifiPassword } : {}) };
  return parseDeviceConfig(merged);
}

/**
 * Writes `<dir>/mqsec-device-config.js`, the module the manifest maps to
 * `mqsec/device-config`. It holds the device key: mode 0600, in a directory
 * outside version control (the default build directory is git-ignored).
 */
export function writeDeviceConfigModule(config: DeviceConfig, dir: string): string {
  const checked = parseDeviceConfig(config);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${CONFIG_MODULE_NAME}.js`);
  const body =
    '// Generated by mqsec (tools/moddable.ts) from a device config file. Contains the device key: do not commit.\n' +
    `export default Object.freeze(${JSON.stringify(checked)});\n`;
  writeFileSync(file, body, { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

export interface BuildOptions {
  sdk: Sdk;
  /** mcconfig platform: lin, esp32, esp32/esp32s3, esp32/esp32c3. */
  platform: string;
  outDir: string;
  configDir: string;
  /** Deploy (flash) after building: passes `-t deploy`; UPLOAD_PORT selects the serial port. */
  deploy?: boolean;
  uploadPort?: string;
  /** Instrumented release build (`-i`): the firmware then reports XS heap use on the console. */
  instrument?: boolean;
  /** Extra manifest config, e.g. { file: { root: dir } } for a private preference file. */
  extraConfig?: Record<string, unknown>;
  /** Only generate the makefile (no `-m`): for the host-only link check. */
  makefileOnly?: boolean;
  /** Extra environment for mcconfig. */
  env?: NodeJS.ProcessEnv;
  onLine?: (line: string) => void;
}

/**
 * Builds the app with mcconfig (release, `-m` to run make). A small wrapper
 * manifest in outDir includes the repository manifest and sets the config
 * directory, so nothing in the repository changes per build.
 */
export async function buildApp(o: BuildOptions): Promise<{ code: number; appDir: string; env: NodeJS.ProcessEnv }> {
  mkdirSync(o.outDir, { recursive: true });
  const wrapper = join(o.outDir, 'manifest.json');
  writeFileSync(
    wrapper,
    JSON.stringify(
      {
        build: { MQSEC_CONFIG_DIR: o.configDir },
        include: [APP_MANIFEST],
        ...(o.extraConfig ? { config: o.extraConfig } : {}),
      },
      null,
      2,
    ),
  );
  // The SDK's makefiles call its tools (xsc, xsl, ...) and the `tsc` found on PATH
  // by name: put the SDK's bin directory and the project's own TypeScript first.
  const path = [dirname(o.sdk.mcconfig), join(REPO_ROOT, 'node_modules', '.bin'), process.env.PATH ?? ''].join(delimiter);
  const env: NodeJS.ProcessEnv = { ...process.env, ...o.env, PATH: path, MODDABLE: o.sdk.moddable, MQSEC_CONFIG_DIR: o.configDir };
  if (o.uploadPort) env.UPLOAD_PORT = o.uploadPort;
  const flags = [...(o.makefileOnly ? [] : ['-m']), ...(o.instrument ? ['-i'] : [])];
  const mcconfig = (target: string) => run(o.sdk.mcconfig, [...flags, '-p', o.platform, '-o', o.outDir, '-t', target, wrapper], { cwd: o.outDir, env, onLine: o.onLine });
  // The SDK's `deploy` target only flashes what `build` made ("Please build before deploy").
  let code = await mcconfig('build');
  if (code === 0 && o.deploy) code = await mcconfig('deploy');
  const plat = o.platform.split('/')[0];
  return { code, appDir: join(o.outDir, 'bin', plat, 'mc', o.instrument ? 'instrument' : 'release'), env };
}

export function run(cmd: string, args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv; onLine?: (line: string) => void }): Promise<number> {
  return new Promise((resolvePromise) => {
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = (b: Buffer) => {
      for (const l of b.toString('utf8').split('\n')) if (l.trim()) o.onLine?.(l);
    };
    child.stdout.on('data', lines);
    child.stderr.on('data', lines);
    child.on('error', () => resolvePromise(127));
    child.on('close', (code) => resolvePromise(code ?? 1));
  });
}

/**
 * The figures the firmware prints on its console ("mqsec selftest ok ...",
 * "mqsec phase N ok ... ms", "mqsec heap slots=... chunks=..."), as report
 * lines; the desktop run and the hardware-in-the-loop check both print them.
 */
export function deviceFigures(lines: readonly string[]): string[] {
  const out: string[] = [];
  const selftest = lines.find((l) => l.startsWith('mqsec selftest ok '));
  if (selftest) out.push(`crypto self-test (one X25519, SHA-256, HMAC, HKDF, AEAD) passed in ${selftest.slice('mqsec selftest ok '.length)}`);
  const phases = lines.filter((l) => /^mqsec phase [12] ok/.test(l)).map((l) => l.slice('mqsec '.length));
  if (phases.length) out.push(`device-observed handshakes (TCP connect to session ready): ${phases.join(', ')}`);
  const heap = heapReadings(lines);
  if (heap.length) {
    const first = (after: HeapReading['after']) => heap.find((h) => h.after === after);
    const show = (h: HeapReading | undefined) => (h ? `slots=${h.slots} chunks=${h.chunks}` : 'none');
    const most = (k: 'slots' | 'chunks') => Math.max(...heap.map((h) => h[k]));
    out.push(
      `device JS heap: at boot ${show(first('boot'))}, after phase 1 and a reading ${show(first('phase 1'))}, ` +
        `after phase 2 ${show(first('phase 2'))}, last ${show(heap[heap.length - 1])}, highest slots=${most('slots')} chunks=${most('chunks')} ` +
        `(bytes used, ${heap.length} readings, XS instrumentation)`,
    );
  }
  return out;
}

/** Slot and chunk heap figures of the desktop host's instrumentation rows between two milestones. */
export interface InstrumentSpan {
  after: 'boot' | 'phase 1' | 'phase 2';
  rows: number;
  slotUsed: [number, number];
  chunkUsed: [number, number];
  /** Largest heap the XS machine had reserved (it grows a heap only when a GC cannot free enough). */
  slotAvailable: number;
  chunkAvailable: number;
}

/**
 * The desktop host (-i builds) prints "instruments key: <names>" once and
 * then "instruments: <values>" about once a second; grouped here by the last
 * "mqsec phase N ok" line before each row (rows before any handshake are
 * 'boot'). Used bytes swing with garbage-collection timing, so each span
 * gives the range; the reserved sizes show whether the heap ever grew.
 */
export function instrumentSpans(lines: readonly string[]): InstrumentSpan[] {
  const keyLine = lines.find((l) => l.startsWith('instruments key: '));
  if (!keyLine) return [];
  const keys = keyLine.slice('instruments key: '.length).split(',');
  const col = (name: string) => keys.indexOf(name);
  const [su, sa, cu, ca] = [col('Slot used'), col('Slot available'), col('Chunk used'), col('Chunk available')];
  if ([su, sa, cu, ca].some((i) => i < 0)) return [];
  const spans: InstrumentSpan[] = [];
  let after: InstrumentSpan['after'] = 'boot';
  for (const l of lines) {
    if (l.startsWith('mqsec phase 1 ok')) after = 'phase 1';
    else if (l.startsWith('mqsec phase 2 ok')) after = 'phase 2';
    else if (l.startsWith('instruments: ')) {
      const v = l.slice('instruments: '.length).split(',').map(Number);
      if (v.length !== keys.length || v.some((x) => !Number.isFinite(x))) continue;
      if (v[su] === 0 || v[cu] === 0) continue; // the host's first row, before the machine runs
      let s = spans[spans.length - 1];
      if (!s || s.after !== after) spans.push((s = { after, rows: 0, slotUsed: [v[su], v[su]], chunkUsed: [v[cu], v[cu]], slotAvailable: 0, chunkAvailable: 0 }));
      s.rows++;
      s.slotUsed = [Math.min(s.slotUsed[0], v[su]), Math.max(s.slotUsed[1], v[su])];
      s.chunkUsed = [Math.min(s.chunkUsed[0], v[cu]), Math.max(s.chunkUsed[1], v[cu])];
      s.slotAvailable = Math.max(s.slotAvailable, v[sa]);
      s.chunkAvailable = Math.max(s.chunkAvailable, v[ca]);
    }
  }
  return spans;
}

/** Report lines for instrumentSpans: one per span. */
export function instrumentFigures(lines: readonly string[]): string[] {
  const label = { boot: 'at boot (self-test, before connecting)', 'phase 1': 'after phase 1 (readings)', 'phase 2': 'after the broker restart and phase 2 (readings)' };
  const range = ([a, b]: [number, number]) => (a === b ? `${a}` : `${a}-${b}`);
  return instrumentSpans(lines).map(
    (s) =>
      `device heap ${label[s.after]}: slot used ${range(s.slotUsed)} B, chunk used ${range(s.chunkUsed)} B, ` +
      `reserved ${s.slotAvailable} B slots + ${s.chunkAvailable} B chunks (${s.rows} instrumentation rows, 64-bit host: 32-byte slots)`,
  );
}

/** One "mqsec heap slots=S chunks=C" console line, with the last milestone before it. */
export interface HeapReading {
  slots: number;
  chunks: number;
  /** 'boot' before any handshake, else the last handshake the device reported before this line. */
  after: 'boot' | 'phase 1' | 'phase 2';
}

/**
 * The firmware's heap lines (main.ts traceHeap: at boot, then whenever the
 * node waits or goes to sleep after its readings) in order, each tagged with
 * the last "mqsec phase N ok" line before it.
 */
export function heapReadings(lines: readonly string[]): HeapReading[] {
  const out: HeapReading[] = [];
  let after: HeapReading['after'] = 'boot';
  for (const l of lines) {
    if (l.startsWith('mqsec phase 1 ok')) after = 'phase 1';
    else if (l.startsWith('mqsec phase 2 ok')) after = 'phase 2';
    else if (l.startsWith('mqsec heap ')) {
      const m = /^mqsec heap slots=(\d+) chunks=(\d+)/.exec(l);
      if (m) out.push({ slots: Number(m[1]), chunks: Number(m[2]), after });
    }
  }
  return out;
}

/** A long-running child whose output is read line by line, stopped by its PID. */
export interface Watched {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first line matching `re`; rejects after `ms`, or at once if the process has ended. */
  waitFor(re: RegExp, ms: number): Promise<string>;
  stop(): Promise<void>;
  /** Sends `signal` to the child's process group and waits for the child to exit. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

export function watch(cmd: string, args: string[], env: NodeJS.ProcessEnv, onLine?: (l: string) => void): Watched {
  // detached: own process group, so stop() ends the child and its children (xvfb-run -> Xvfb, mcsim) by PID.
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  let ended: Error | undefined;
  let partial = '';
  const onData = (b: Buffer) => {
    partial += b.toString('utf8');
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) {
      lines.push(l);
      onLine?.(l);
      for (const w of waiters.slice()) if (w.re.test(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  // A crashed simulator should fail the check now, with the reason, not after the wait's timeout.
  child.once('exit', (code, signal) => {
    const last = lines.filter((l) => l.trim()).slice(-1)[0];
    ended = new Error(`${cmd} exited (${signal ?? `code ${code}`})${last ? `; last output: ${last.trim()}` : ''}`);
    for (const w of waiters.splice(0)) w.reject(ended);
  });
  return {
    child,
    lines,
    waitFor(re, ms) {
      const seen = lines.find((l) => re.test(l));
      if (seen) return Promise.resolve(seen);
      if (ended) return Promise.reject(ended);
      return new Promise((res, rej) => {
        const t = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${re}`)), ms);
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(t);
            res(l);
          },
          reject: (e) => {
            clearTimeout(t);
            rej(e);
          },
        });
      });
    },
    async kill(signal) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      try {
        process.kill(-child.pid, signal);
      } catch {
        return;
      }
      await exited;
    },
    async stop() {
      if (child.exitCode !== null || child.pid === undefined) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        return;
      }
      const t = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // gone
        }
      }, 3000);
      await exited;
      clearTimeout(t);
    },
  };
}
