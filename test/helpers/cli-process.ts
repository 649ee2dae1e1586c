/**
 * The `mqsec` command as an operator runs it: `node cli/bin.mjs ...` in its
 * own process, with stdout/stderr collected and the exit code awaited.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';

export const CLI_BIN = join(process.cwd(), 'cli', 'bin.mjs');

export interface CliProcess {
  child: ChildProcess;
  out(): string;
  err(): string;
  /** Exit code, or null when killed by a signal. */
  exited: Promise<number | null>;
}

export function startCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; bin?: string; stdin?: string } = {}): CliProcess {
  const child = spawn(process.execPath, [opts.bin ?? CLI_BIN, ...args], {
    stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    cwd: opts.cwd,
    env: opts.env ?? process.env,
  });
  if (opts.stdin !== undefined) child.stdin!.end(opts.stdin);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => out, err: () => err, exited };
}

/** True when nothing listens on 127.0.0.1:port (a listener can be opened there). */
export function portIsFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

/** Holds a port with a plain listener (something else already running there). */
export function occupyPort(port = 0, host = '127.0.0.1'): Promise<{ port: number; close(): Promise<void> }> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(port, host, () => {
      const bound = (s.address() as net.AddressInfo).port;
      resolve({ port: bound, close: () => new Promise<void>((r) => s.close(() => r())) });
    });
  });
}
