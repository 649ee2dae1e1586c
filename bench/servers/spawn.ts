/** Starts a broker child process (bench/servers/child.ts) and stops it by PID. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface ChildBroker {
  pid: number;
  port: number;
  /** CPU time (user+system) the child has used so far, in ms; read from /proc on Linux. */
  cpuMs(): number | undefined;
  stop(): Promise<void>;
}

/**
 * Servers the benchmark started and has not stopped yet. If the benchmark
 * process ends early (an error, Ctrl-C, a timeout), they are killed on the
 * way out so no broker outlives the run.
 */
const liveChildren = new Set<number>();
let exitHookInstalled = false;

export function trackChild(pid: number): void {
  liveChildren.add(pid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const p of liveChildren) {
      try {
        process.kill(p, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  });
}

export function untrackChild(pid: number): void {
  liveChildren.delete(pid);
}

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'child.ts');

export interface ChildOptions {
  env?: NodeJS.ProcessEnv;
  /** Extra Node flags, e.g. ['--cpu-prof'] to profile the broker. */
  nodeArgs?: string[];
}

export function startChildBroker(kind: string, args: string[] = [], opts: ChildOptions = {}): Promise<ChildBroker> {
  const env = opts.env ?? {};
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), '--import', 'tsx', CHILD, kind, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  trackChild(child.pid!);
  child.once('exit', () => untrackChild(child.pid!));
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${kind} broker did not start: ${stderr.trim()}`));
    }, 30_000);
    child.stdout!.on('data', (d) => {
      out += String(d);
      const m = /READY (\d+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.stdout!.removeAllListeners('data');
      child.stdout!.resume();
      resolve({
        pid: child.pid!,
        port: Number(m[1]),
        cpuMs: () => procCpuMs(child.pid!),
        stop: async () => {
          if (child.exitCode === null) {
            process.kill(child.pid!, 'SIGTERM');
            await exited;
          }
        },
      });
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${kind} broker exited with ${code}: ${stderr.trim()}`));
    });
  });
}

/** utime+stime of a process from /proc/<pid>/stat (Linux; USER_HZ is 100 on every mainstream kernel), in ms. */
export function procCpuMs(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1000) / 100;
  } catch {
    return undefined;
  }
}
