/**
 * `mqsec sub` and `mqsec pub`: the mosquitto_sub / mosquitto_pub habit for
 * people, as an app principal through the SDK (sdk/app.ts). Readings come out
 * in plaintext, whether their topic is end to end (opened with the group
 * key) or hop by hop (opened with the session key); `pub` seals the same way
 * `publish` of the SDK does. The app comes from its config file (written by
 * `mqsec app add --json`); the counter and phase-2 ticket are kept in a state
 * directory, so the next run resumes with phase 2.
 */
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { connectApp, type MqsecApp } from '../../sdk/app.js';
import { readAppConfig } from '../../sdk/config.js';
import { isMqsecError } from '../../firmware/core/errors.js';
import { FileStorage } from '../../platform-node/file-storage.js';
import { CliError, decimalNumber, wholeNumber, type CliIo, type CommandModule } from '../command.js';
import { defaultAppConfigPath } from './app.js';

interface AppOpts {
  config?: string;
  app?: string;
  url?: string;
  state?: string;
  keyTimeout: number;
}

function appOptions(c: Command): Command {
  return c
    .option('--config <file>', 'app config file (from `mqsec app add --json`)')
    .option('--app <name>', 'the app whose config is app-config-<name>.json here')
    .option('--url <url>', "broker URL (default: the config's broker)")
    .option('--state <dir>', 'directory for the counter and resumption ticket (default: .mqsec-state-<name> beside the config)')
    .option('--key-timeout <ms>', 'how long to wait for the group keys', wholeNumber('--key-timeout', 1, 600_000), 5000);
}

async function openApp(o: AppOpts): Promise<MqsecApp> {
  const path = o.config ?? (o.app ? defaultAppConfigPath(o.app) : undefined);
  if (!path) throw new CliError('give the app: --config <file> or --app <name>');
  let cfg;
  try {
    cfg = readAppConfig(path);
  } catch (e) {
    throw new CliError(isMqsecError(e) ? e.message.replace(/^MALFORMED: /, '') : String(e));
  }
  const storage = new FileStorage(o.state ?? join(dirname(path), `.mqsec-state-${cfg.id}`));
  try {
    // the config's broker.flavour says whether the broker is mqsec's or a stock one with the key service beside it (§15.1)
    return await connectApp({ url: o.url ?? cfg.url, id: cfg.id, key: cfg.key, flavour: cfg.flavour, storage, keyTimeoutMs: o.keyTimeout });
  } catch (e) {
    throw new CliError(`cannot connect as ${cfg.id}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Resolves on SIGINT/SIGTERM (and removes its handlers). */
function untilSignal(): { promise: Promise<void>; dispose(): void } {
  let done!: () => void;
  const promise = new Promise<void>((r) => (done = r));
  const on = () => done();
  process.once('SIGINT', on);
  process.once('SIGTERM', on);
  return { promise, dispose: () => (process.off('SIGINT', on), process.off('SIGTERM', on)) };
}

export const subCommand: CommandModule = {
  name: 'sub',
  register(program, io: CliIo) {
    appOptions(
      program
        .command('sub')
        .description('subscribe as an app principal and print the plaintext of each message (like mosquitto_sub)')
        .requiredOption('-t, --topic <filter>', 'topic filter (repeat for more)', (v: string, prev: string[]) => [...prev, v], [] as string[])
        .option('-v, --verbose', 'print "topic payload" instead of the payload alone')
        .option('--json', 'one JSON object per message: topic, payload, mode (e2e/hop), publisher, epoch')
        .option('-q, --qos <0|1>', 'subscription QoS', wholeNumber('--qos', 0, 1), 0)
        .option('-C, --count <n>', 'exit after this many messages', wholeNumber('--count', 1))
        .option('-W, --timeout <s>', 'exit (code 1) if not done after this many seconds', decimalNumber('--timeout', 0.001)),
    ).action(async (o: AppOpts & { topic: string[]; verbose?: boolean; json?: boolean; qos: number; count?: number; timeout?: number }) => {
      const app = await openApp(o);
      const signal = untilSignal();
      let got = 0;
      let timedOut = false;
      let finish!: () => void;
      const finished = new Promise<void>((r) => (finish = r));
      const timer = o.timeout !== undefined ? setTimeout(() => ((timedOut = true), finish()), o.timeout * 1000) : undefined;
      app.on('message', (topic, payload, info) => {
        if (o.count !== undefined && got >= o.count) return;
        got++;
        const text = payload.toString('utf8');
        if (o.json) io.out(JSON.stringify({ topic, payload: text, mode: info.mode, publisher: info.publisher, epoch: info.epoch, retain: info.retain }));
        else io.out(o.verbose ? `${topic} ${text}` : text);
        if (o.count !== undefined && got >= o.count) finish();
      });
      app.on('dropped', (topic, e) => io.err(`mqsec sub: dropped a message on ${topic}: ${e.code}`));
      app.on('offline', (e) => io.err(`mqsec sub: connection lost (${e.message}); reconnecting`));
      const closed = new Promise<string | undefined>((r) => app.on('close', (e) => r(e?.message)));
      try {
        for (const t of o.topic) {
          // RabbitMQ refuses by closing the connection instead of SUBACK 0x80 (docs/protocol.md §15.9)
          const granted = await app.subscribe(t, o.qos as 0 | 1).catch((e: unknown) => {
            if (isMqsecError(e, 'CONNECTION_CLOSED')) return 128;
            throw e;
          });
          if (granted === 128) throw new CliError(`subscription to ${t} refused by the broker`);
        }
        // on stderr, so stdout carries messages only (scripts wait for this line to know the subscriptions stand)
        io.err(`mqsec sub: ${app.id} online (phase ${app.phase}), subscribed to ${o.topic.join(' ')}`);
        const why = await Promise.race([finished.then(() => undefined), signal.promise.then(() => undefined), closed]);
        if (why) throw new CliError(`closed: ${why}`);
        if (timedOut) throw new CliError(`timed out after ${o.timeout} s with ${got} message(s)`);
      } finally {
        clearTimeout(timer);
        signal.dispose();
        await app.end();
      }
    });
  },
};

export const pubCommand: CommandModule = {
  name: 'pub',
  register(program, io: CliIo) {
    appOptions(
      program
        .command('pub')
        .description('publish one message as an app principal, sealed end to end or hop by hop as the topic requires (like mosquitto_pub)')
        .requiredOption('-t, --topic <topic>', 'topic')
        .option('-m, --message <text>', 'payload')
        .option('-s, --stdin-file', 'read the payload from stdin (all of it)')
        .option('-n, --null-message', 'empty payload')
        .option('-q, --qos <0|1>', 'QoS (1 waits for the broker to acknowledge)', wholeNumber('--qos', 0, 1), 1)
        .option('-r, --retain', 'retain the message'),
    ).action(async (o: AppOpts & { topic: string; message?: string; stdinFile?: boolean; nullMessage?: boolean; qos: number; retain?: boolean }) => {
      const sources = [o.message !== undefined, !!o.stdinFile, !!o.nullMessage].filter(Boolean).length;
      if (sources !== 1) throw new CliError('give exactly one payload: -m <text>, -s (stdin) or -n (empty)');
      const payload = o.stdinFile ? new Uint8Array(Buffer.from(await io.readStdin(), 'utf8')) : new TextEncoder().encode(o.message ?? '');
      const app = await openApp(o);
      try {
        await app.publish(o.topic, payload, { qos: o.qos as 0 | 1, retain: o.retain ?? false });
      } catch (e) {
        throw new CliError(`not published: ${e instanceof Error ? e.message : String(e)}`);
      } finally {
        payload.fill(0);
        await app.end();
      }
    });
  },
};
