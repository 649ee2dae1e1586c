/**
 * Runs firmware modules inside the real Moddable XS engine (the xsnap worker
 * built by @agoric/xsnap from the Moddable XS sources) so every firmware
 * module is tested under XS as well as under Node.
 *
 *   const xs = await startXs(new URL('./entries/codec.entry.ts', import.meta.url));
 *   const r = await xs.call('roundTrip', bytes);
 *   await xs.close();
 *
 * The entry file is bundled with esbuild into one classic script (the way the
 * device build ships it: no Node APIs, no globals but what XS has).
 */
import '@endo/init/pre-remoting.js';
import { fileURLToPath } from 'node:url';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { build } from 'esbuild';
import { encodeMessage, decodeMessage, serializeError } from './wire.js';

const g = globalThis as any;
if (typeof g.harden !== 'function') {
  // xsnap's API module calls harden() at import; a real deep freeze of own data properties
  // is enough for it (the full SES lockdown would freeze Node built-ins and break vi.spyOn).
  const seen = new WeakSet<object>();
  const deepFreeze = <T>(o: T): T => {
    if ((typeof o !== 'object' && typeof o !== 'function') || o === null || seen.has(o as object)) return o;
    seen.add(o as object);
    Object.freeze(o);
    for (const k of Reflect.ownKeys(o as object)) {
      const d = Object.getOwnPropertyDescriptor(o as object, k);
      if (d && 'value' in d) deepFreeze(d.value);
    }
    return o;
  };
  g.harden = deepFreeze;
}

export interface XsWorker {
  /** Calls a function the entry registered with exposeToHost; Uint8Arrays round-trip. */
  call<T = any>(name: string, ...args: unknown[]): Promise<T>;
  close(): Promise<void>;
  /** Bytes of the bundle evaluated in XS. */
  bundleBytes: number;
}

export interface StartXsOptions {
  /** Extra synchronous-from-XS host functions (guest: hostCall(name, ...args)). */
  hostFunctions?: Record<string, (...args: any[]) => unknown>;
  minify?: boolean;
  /** Collect print() output instead of inheriting stdout. */
  onPrint?: (line: string) => void;
}

const bundleCache = new Map<string, string>();

/** Bundles a TS entry for XS with the options checked in xs-testing notes (see docs/firmware.md). */
export async function bundleForXs(entry: string | URL, minify = false): Promise<string> {
  const file = typeof entry === 'string' ? entry : fileURLToPath(entry);
  const key = `${file}:${minify}`;
  const cached = bundleCache.get(key);
  if (cached) return cached;
  const result = await build({
    entryPoints: [file],
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'neutral',
    mainFields: ['module', 'main'],
    target: 'es2022',
    minify,
    // XS 13.3: `new C()` inside C's own static initialiser throws when C has instance fields.
    supported: { 'class-static-field': false, 'class-static-blocks': false },
    logLevel: 'silent',
  });
  const text = result.outputFiles[0].text;
  bundleCache.set(key, text);
  return text;
}

let xsnapModule: typeof import('@agoric/xsnap') | undefined;

export async function startXs(entry: string | URL, options: StartXsOptions = {}): Promise<XsWorker> {
  xsnapModule ??= await import('@agoric/xsnap');
  const bundle = await bundleForXs(entry, options.minify ?? false);
  const hostFunctions: Record<string, (...args: any[]) => unknown> = {
    random: (n: number) => {
      const b = new Uint8Array(n);
      randomFillSync(b);
      return b;
    },
    ...options.hostFunctions,
  };
  const worker = await xsnapModule.xsnap({
    os: os.type(),
    spawn,
    fs: { ...fs, ...fsp } as any,
    name: 'mqsec-xs-test',
    meteringLimit: 0,
    stdout: options.onPrint ? 'pipe' : 'inherit',
    stderr: 'inherit',
    handleCommand: async (request: Uint8Array) => {
      try {
        const { name, args } = decodeMessage(request) as { name: string; args: unknown[] };
        const fn = hostFunctions[name];
        if (!fn) throw new Error(`no host function ${name}`);
        return encodeMessage({ value: await fn(...args) });
      } catch (e) {
        return encodeMessage(serializeError(e));
      }
    },
  } as any);
  await worker.isReady();
  await worker.evaluate(bundle);

  async function send(name: string, args: unknown[]): Promise<any> {
    const res = await worker.issueCommand(encodeMessage({ name, args }));
    return decodeMessage(res.reply);
  }

  function raise(err: { name: string; code?: string; message: string }): never {
    const e = new Error(err.message) as Error & { code?: string; xsName?: string };
    e.code = err.code;
    e.xsName = err.name;
    throw e;
  }

  return {
    bundleBytes: bundle.length,
    async call<T>(name: string, ...args: unknown[]): Promise<T> {
      let reply = await send(name, args);
      for (let i = 0; reply && reply.$pending !== undefined; i++) {
        // XS drains its job queue after each command; a still-pending call waits on host I/O.
        if (i > 10_000) throw new Error(`XS call ${name} never settled`);
        if (i > 2) await new Promise((r) => setTimeout(r, 1));
        reply = await send('__poll', [reply.$pending]);
      }
      if (reply && reply.$error) raise(reply.$error);
      return reply.value as T;
    },
    async close() {
      await worker.close().catch(() => worker.terminate());
    },
  };
}
