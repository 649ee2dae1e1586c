/**
 * The broker configuration README "Use your existing broker" gives is the one
 * the stock-broker tests run: every line the test harnesses put in
 * mosquitto.conf and rabbitmq.conf (apart from where they listen) is in the
 * README's blocks, and the commands it shows are flags `mqsec` accepts.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { dynsecConfigLines } from '../helpers/mosquitto-dynsec.js';
import { rabbitConfigLines, rabbitPlugins } from '../helpers/rabbitmq.js';
import { buildProgram } from '../../cli/main.js';
import { readAppConfig } from '../../sdk/config.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const section = readme.slice(readme.indexOf('## Use your existing broker'), readme.indexOf('\n## ', readme.indexOf('## Use your existing broker') + 5));
const blocks = [...section.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1]);
const lines = (b: string) => b.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));

describe('README: use your existing broker', () => {
  it('has the Mosquitto lines the tests run with', () => {
    const conf = blocks.find((b) => b.includes('plugin_opt_config_file'))!;
    expect(conf).toBeDefined();
    const want = dynsecConfigLines('/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so', '/etc/mosquitto/dynamic-security.json');
    for (const l of want) expect(lines(conf)).toContain(l);
    expect(lines(conf)).toContain('allow_anonymous false');
  });

  it('has the RabbitMQ lines the tests run with', () => {
    const conf = blocks.find((b) => b.includes('auth_backends.1 = http'))!;
    expect(conf).toBeDefined();
    const want = rabbitConfigLines(1883, { baseUrl: 'http://127.0.0.1:8089/auth', managementPort: 15672 }).map((l) => l.replace('127.0.0.1:1883', '1883'));
    for (const l of want) expect(lines(conf)).toContain(l);
    expect(section).toContain(rabbitPlugins(true));
  });

  it('shows keyservice commands with flags mqsec accepts', () => {
    const cmds = blocks.flatMap((b) => b.replace(/\\\n\s*/g, ' ').split('\n')).filter((l) => l.startsWith('mqsec keyservice'));
    expect(cmds.length).toBe(2);
    const program = buildProgram({ out: () => {}, err: () => {} } as never);
    const ks = program.commands.find((c) => c.name() === 'keyservice')!;
    const known = new Set(ks.options.map((o) => o.long));
    for (const c of cmds) for (const flag of c.match(/--[a-z-]+/g) ?? []) expect(known.has(flag), flag).toBe(true);
    expect(cmds.map((c) => /--flavour (\S+)/.exec(c)?.[1])).toEqual(['mosquitto-dynsec', 'http-auth']);
  });

  it('shows an app add with flags mqsec accepts and an app config the SDK reads as a stock one', () => {
    const add = blocks.flatMap((b) => b.split('\n')).find((l) => l.startsWith('mqsec app add'))!;
    expect(add).toContain('--broker-flavour stock');
    const program = buildProgram({ out: () => {}, err: () => {} } as never);
    const appAdd = program.commands.find((c) => c.name() === 'app')!.commands.find((c) => c.name() === 'add')!;
    const known = new Set(appAdd.options.map((o) => o.long));
    for (const flag of add.match(/--[a-z-]+/g) ?? []) expect(known.has(flag), flag).toBe(true);
    const json = blocks.find((b) => b.includes('"flavour": "stock"'))!;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mqsec-readme-'));
    try {
      const file = path.join(dir, 'app-config-backend.json');
      writeFileSync(file, json.replace('<64 hex digits, shown once>', '00'.repeat(32)));
      expect(readAppConfig(file)).toMatchObject({ id: 'backend', url: 'mqtt://192.0.2.10:1883', flavour: 'stock' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
