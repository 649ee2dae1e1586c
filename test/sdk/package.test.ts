/**
 * `import { connectApp } from 'mqsec'` in a user's own Node project, for
 * real: the repository is packed (`npm pack`, which also generates the
 * declarations), the tarball installed from npm's cache with `--offline`
 * into an empty project outside the repository, and that project
 * - type-checks a TypeScript file against the installed declarations
 *   (strict, NodeNext; a misuse marked @ts-expect-error proves the types are
 *   not `any`),
 * - runs a plain .mjs script that connects to a real mqsec broker as an app
 *   principal, subscribes, and prints the reading a device seals end to end,
 * - exports exactly what sdk/index.ts exports.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as sdk from '../../sdk/index.js';
import { connectApp, type MqsecApp } from '../../sdk/index.js';
import { toHex } from '../../firmware/core/bytes.js';
import type { RunningBroker } from '../../broker/server.js';
import { tempDir, testBroker, waitFor } from '../broker/helpers.js';

const run = promisify(execFile);
const ROOT = process.cwd();
const work = tempDir('mqsec-sdk-pkg-');
const project = join(work.path, 'user-app');
let broker: RunningBroker;
let appKey = '';
let devKey: Uint8Array;
let dev: MqsecApp | undefined;

beforeAll(async () => {
  const packed = await run('npm', ['pack', '--json', '--pack-destination', work.path], { cwd: ROOT, maxBuffer: 16 << 20 });
  const tarball = join(work.path, (JSON.parse(packed.stdout) as { filename: string }[])[0].filename);
  mkdirSync(project, { recursive: true });
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'user-app', version: '1.0.0', private: true, type: 'module' }));
  // --offline: everything from npm's cache, nothing from the network; no install scripts (nothing the SDK needs builds)
  await run('npm', ['install', '--offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball], { cwd: project, maxBuffer: 16 << 20 });

  broker = await testBroker(join(work.path, 'data'), { revisionPollMs: 50 });
  const r = broker.registry;
  await r.addRule('sensor', 'publish', 'sensors/%u/#', 'e2e');
  devKey = (await r.addDevice('dev1', 'sensor')).key;
  const k = (await r.addDevice('backend', 'app')).key;
  appKey = toHex(k);
  k.fill(0);
  await broker.syncRegistry();
}, 600_000);

afterAll(async () => {
  await dev?.end().catch(() => {});
  await broker?.stop();
  work.remove();
});

describe("the SDK as a package: import { connectApp } from 'mqsec'", () => {
  it('a strict TypeScript project type-checks against the installed declarations', async () => {
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules', '@types')],
        },
        files: ['check.ts'],
      }),
    );
    writeFileSync(
      join(project, 'check.ts'),
      [
        "import { connectApp, MqsecError, FileStorage, readAppConfig, type MessageInfo } from 'mqsec';",
        "const app = await connectApp({ url: 'mqtt://127.0.0.1:1883', id: 'backend', key: '00'.repeat(32), storage: new FileStorage('state') });",
        "app.on('message', (topic: string, payload: Buffer, info: MessageInfo) => console.log(topic, payload.length, info.publisher));",
        "app.on('dropped', (_topic, e) => { const code: string = e.code; console.log(code, e instanceof MqsecError); });",
        "await app.publish('cmd/dev1/x', 'on', { qos: 1 });",
        '// @ts-expect-error the payload is bytes or text, not a number',
        "await app.publish('cmd/dev1/x', 42);",
        "const c: { id: string; url: string } = readAppConfig('app.json');",
        'console.log(c.id);',
        'await app.end();',
      ].join('\n'),
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = await run(process.execPath, [tsc, '-p', project], { cwd: project }).catch((e: { stdout: string; code: number }) => e);
    expect('code' in r ? r.stdout : '').toBe('');
  }, 60_000);

  it('a plain Node script in that project connects to a real broker as an app principal and receives a reading sealed end to end', async () => {
    writeFileSync(
      join(project, 'reader.mjs'),
      [
        "import * as mqsec from 'mqsec';",
        'console.log(JSON.stringify({ exports: Object.keys(mqsec).sort() }));',
        'const app = await mqsec.connectApp({ url: process.env.MQSEC_URL, id: process.env.MQSEC_ID, key: process.env.MQSEC_KEY });',
        "app.on('message', async (topic, payload, info) => {",
        '  console.log(JSON.stringify({ topic, text: payload.toString(), mode: info.mode, publisher: info.publisher }));',
        '  await app.end();',
        '});',
        "await app.subscribe('sensors/#');",
        "console.log(JSON.stringify({ ready: app.groups().map((g) => g.filter) }));",
      ].join('\n'),
    );
    const child = spawn(process.execPath, ['reader.mjs'], {
      cwd: project,
      env: { ...process.env, MQSEC_URL: `mqtt://127.0.0.1:${broker.port}`, MQSEC_ID: 'backend', MQSEC_KEY: appKey },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await waitFor(() => out.includes('"ready"'), 60_000, `installed SDK online (stderr: ${err})`);
      const lines = () => out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines()[0]).toEqual({ exports: Object.keys(sdk).sort() });
      expect(lines()[1]).toEqual({ ready: ['sensors/dev1/#'] });
      dev = await connectApp({ url: `mqtt://127.0.0.1:${broker.port}`, id: 'dev1', key: devKey });
      await dev.publish('sensors/dev1/temp', '21.5', { qos: 1 });
      expect(await exited).toBe(0); // it ends itself after the first reading
      expect(lines()[2]).toEqual({ topic: 'sensors/dev1/temp', text: '21.5', mode: 'e2e', publisher: 'dev1' });
    } finally {
      child.kill();
    }
  }, 120_000);
});
