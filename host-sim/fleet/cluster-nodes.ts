/**
 * Broker nodes the simulator runs itself (`mqsec sim --nodes N --cluster
 * redis://...`): each is an `mqsec broker --cluster` process of its own on a
 * fixed loopback port, sharing the run's registry directory, so the run can
 * kill one (`--kill-node N@T`: SIGKILL, no goodbye) and start it again on the
 * same port, where it rejoins the cluster.
 *
 * Cluster nodes never run the embedded key service (§14.12: each would draw
 * its own group keys): the nodes run with --keyservice external, and the
 * principals the run provisions get their K_ks in the key service directory
 * beside the registry (`simKeyServiceDir`), where `mqsec keyservice` would
 * read it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { SqliteRegistry } from '../../broker/registry/registry.js';
import { SqliteKeyServiceStore } from '../../broker/keyservice/store.js';

const CLI_BIN = fileURLToPath(new URL('../../cli/bin.mjs', import.meta.url));

export interface SimNode {
  id: string;
  host: string;
  port: number;
  pid(): number | undefined;
  /** kill -9 (no drain, no grace written, sockets reset by the kernel). */
  kill(): Promise<void>;
  /** Starts the node again on its port; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Clean stop (SIGTERM). */
  stop(): Promise<void>;
  /** Node CPU time used so far (user + system, ms), summed over its incarnations, from /proc. */
  cpuMs(): number;
}

/** The key service data directory of nodes sharing the registry in `dataDir`. */
export function simKeyServiceDir(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}-keyservice`;
}

/** The nodes' shared registry, for provisioning: K_ks goes to `keyServiceDir`. `close` closes both. */
export function openClusterRegistry(dataDir: string, keyServiceDir = simKeyServiceDir(dataDir)): SqliteRegistry & { closeAll(): Promise<void> } {
  const ks = SqliteKeyServiceStore.open(keyServiceDir);
  const r = SqliteRegistry.open(dataDir, { memberKeys: ks });
  return Object.assign(r, { closeAll: async () => (await r.close(), await ks.close()) });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, alive: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`broker node on port ${port} exited at start`);
    if (Date.now() > deadline) throw new Error(`broker node on port ${port} did not open within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** CPU time (ms) of a live process from /proc/<pid>/stat (Linux); 0 when unavailable. */
async function procCpuMs(pid: number | undefined): Promise<number> {
  if (!pid) return 0;
  try {
    const { readFileSync } = await import('node:fs');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, USER_HZ = 100
  } catch {
    return 0;
  }
}

/**
 * `extraArgs` go on the nodes' command lines (visible to every local user);
 * `env` is added to their environment: the place for secrets (PGPASSWORD).
 */
export async function startSimNodes(o: { count: number; redisUrl: string; dataDir: string; logLevel?: string; extraArgs?: string[]; env?: Record<string, string> }): Promise<SimNode[]> {
  const nodes: SimNode[] = [];
  for (let i = 1; i <= o.count; i++) {
    const port = await freePort();
    const id = `node${i}`;
    let child: ChildProcess | undefined;
    let exited: Promise<void> = Promise.resolve();
    let cpuDone = 0;
    let lastCpu = 0;
    let sampler: ReturnType<typeof setInterval> | undefined;
    const node: SimNode = {
      id,
      host: '127.0.0.1',
      port,
      pid: () => child?.pid,
      async start() {
        const c = spawn(
          process.execPath,
          [CLI_BIN, 'broker', '--cluster', o.redisUrl, '--node-id', id, '--data', o.dataDir, '--port', String(port), '--host', '127.0.0.1', '--keyservice', 'external', '--log-level', o.logLevel ?? 'warn', ...(o.extraArgs ?? [])],
          { stdio: ['ignore', 'ignore', o.logLevel && o.logLevel !== 'silent' ? 'inherit' : 'ignore'], env: o.env ? { ...process.env, ...o.env } : process.env },
        );
        let alive = true;
        exited = new Promise<void>((r) => c.once('exit', () => ((alive = false), r())));
        child = c;
        lastCpu = 0;
        // a killed process's CPU time cannot be read afterwards: sample it while it runs
        sampler = setInterval(() => void procCpuMs(c.pid).then((ms) => (lastCpu = Math.max(lastCpu, ms))), 1000);
        sampler.unref();
        await waitForPort(port, () => alive, 30_000);
      },
      async kill() {
        if (!child) return;
        lastCpu = Math.max(lastCpu, await procCpuMs(child.pid));
        child.kill('SIGKILL');
        await exited;
        clearInterval(sampler);
        cpuDone += lastCpu;
        lastCpu = 0;
        child = undefined;
      },
      async stop() {
        if (!child) return;
        lastCpu = Math.max(lastCpu, await procCpuMs(child.pid));
        child.kill('SIGTERM');
        const t = setTimeout(() => child?.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
        clearInterval(sampler);
        cpuDone += lastCpu;
        lastCpu = 0;
        child = undefined;
      },
      cpuMs: () => cpuDone + lastCpu,
    };
    nodes.push(node);
  }
  try {
    await Promise.all(nodes.map((n) => n.start()));
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  }
  return nodes;
}
