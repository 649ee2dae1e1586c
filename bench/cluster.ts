/**
 * What one cluster node costs, for the capacity projection in
 * docs/operations.md "Scaling":
 *
 *   npx tsx bench/cluster.ts [--devices 300] [--messages 5] [--json]
 *
 * Starts a redis-server (free port, temp dir) and one `mqsec broker --cluster`
 * process, then, with N mqsec devices (firmware DeviceSecureSession over
 * MQTT.js) and one persistent QoS 1 backend on that node, measures in turn:
 *
 * - phase 1 of every device, then every device staying connected: node CPU
 *   per phase-1 handshake, node memory (RSS) per live device session;
 * - M QoS 1 readings per device, each delivered to the backend: node CPU and
 *   Redis commands per reading;
 * - every device reconnecting by phase 2: node CPU and Redis commands per
 *   phase-2 handshake;
 * - registry operations per handshake and per reading (TicketStore calls,
 *   counted inside the node by its `mqsec_registry_ops_total` metric).
 *
 * Node CPU from /proc/<pid>/stat, Redis commands from INFO commandstats
 * (the deltas of each phase), so the node's own background work (heartbeats,
 * polls) is included, as in production.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { Redis } from 'ioredis';
import { DeviceSecureSession } from '../firmware/secure/index.js';
import { MemoryStorage } from '../firmware/core/memory-storage.js';
import { createNodeCryptoSuite } from '../platform-node/crypto-suite.js';
import { openClusterRegistry, startSimNodes } from '../host-sim/fleet/cluster-nodes.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const N = arg('devices', 300);
const M = arg('messages', 5);
const JSON_OUT = process.argv.includes('--json');
/** Seconds of the 1-node vs 3-node throughput comparison (0: skip it). */
const TP_S = arg('throughput-seconds', 20);
const TP_DEVICES = arg('throughput-devices', 60);
const log = (s: string) => (JSON_OUT ? process.stderr.write(s + '\n') : process.stdout.write(s + '\n'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function procStat(pid: number): { cpuMs: number; rssKb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = /VmRSS:\s+(\d+)/.exec(status);
  return { cpuMs: ((Number(f[11]) + Number(f[12])) * 1000) / 100, rssKb: rss ? Number(rss[1]) : 0 };
}

async function redisCalls(r: Redis): Promise<number> {
  const info = await r.info('commandstats');
  let n = 0;
  for (const m of info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)) if (m[1] !== 'info') n += Number(m[2]);
  return n;
}

async function scrape(port: number, name: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await res.text();
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith(name)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  return n;
}

let refusedBusy = 0;

class Dev {
  client!: MqttClient;
  session: DeviceSecureSession;
  constructor(readonly id: string, key: Uint8Array, private readonly port: number) {
    this.session = new DeviceSecureSession({ suite: createNodeCryptoSuite(), devId: id, deviceKey: key, storage: new MemoryStorage(), storageKey: 'mqsecstate' });
  }
  /** Connects; a CONNACK 3 (the broker's per-address phase-1 rate limit: every device here is 127.0.0.1) is retried as a device would. */
  async connect(): Promise<1 | 2> {
    for (let i = 0; ; i++) {
      try {
        return await this.connectOnce();
      } catch (e) {
        if ((e as { code?: number }).code !== 3 || i > 50) throw e;
        refusedBusy++;
        this.client.end(true);
        await sleep(250);
      }
    }
  }
  private async connectOnce(): Promise<1 | 2> {
    const creds = await this.session.connectCredentials();
    this.client = mqtt.connect({ host: '127.0.0.1', port: this.port, clientId: creds.clientId, username: creds.username, password: Buffer.from(creds.password) as unknown as string, protocolVersion: 4, clean: true, keepalive: 60, reconnectPeriod: 0 });
    return new Promise((resolve, reject) => {
      this.client.on('connect', () => void this.session.onConnack(0));
      this.client.on('error', reject);
      this.client.on('close', () => this.session.onConnectionLost());
      this.client.on('message', async (topic, payload) => {
        const r = await this.session.handleIncoming(topic, new Uint8Array(payload));
        if (r.kind === 'handshake') {
          this.client.publish(r.reply.topic, Buffer.from(r.reply.payload), { qos: 0 });
          resolve(1);
        } else if (r.kind === 'confirmed') resolve(2);
      });
    });
  }
  publish(n: number): Promise<unknown> {
    const topic = `sensors/${this.id}/t`;
    return this.client.publishAsync(topic, Buffer.from(this.session.seal(topic, new TextEncoder().encode(JSON.stringify({ n, v: 21.5 })))), { qos: 1 });
  }
  end(): Promise<void> {
    return this.client.endAsync();
  }
}

async function pool<T>(items: T[], width: number, f: (x: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (i < items.length) await f(items[i++]!);
  }));
}

/**
 * Throughput of `count` nodes on this machine: TP_DEVICES devices spread round
 * robin over the nodes, each publishing QoS 1 readings back to back (next one
 * when the PUBACK arrived) for TP_S seconds, one persistent backend on node 1.
 * Readings delivered to the backend per second, and each node's CPU.
 */
async function throughput(count: number, redisUrl: string, dir: string, round: number): Promise<{ nodes: number; readings_per_s: number; node_cpu_s: Record<string, number>; node_cpu_per_reading_ms: number }> {
  const dataDir = path.join(dir, `tp-${round}`);
  const reg = openClusterRegistry(dataDir);
  const keys: { id: string; key: Uint8Array }[] = [];
  for (let i = 0; i < TP_DEVICES; i++) keys.push({ id: `tp${count}-${i}`, key: (await reg.addDevice(`tp${count}-${i}`, 'sensor')).key });
  await reg.addAccount('backend', 'app', 'backend-password');
  await reg.closeAll();
  const nodes = await startSimNodes({ count, redisUrl, dataDir });
  try {
    let received = 0;
    const backend = mqtt.connect({ host: '127.0.0.1', port: nodes[0]!.port, clientId: `backend/tp${round}`, username: 'backend', password: 'backend-password', clean: false, protocolVersion: 4, reconnectPeriod: 0 });
    await new Promise((r) => backend.once('connect', r));
    backend.on('message', () => received++);
    await backend.subscribeAsync('sensors/#', { qos: 1 });
    const devs = keys.map((k, i) => new Dev(k.id, k.key, nodes[i % count]!.port));
    await pool(devs, 16, (d) => d.connect());
    await sleep(1000);
    const cpu0 = nodes.map((n) => procStat(n.pid()!).cpuMs);
    const r0 = received;
    const t0 = performance.now();
    const until = Date.now() + TP_S * 1000;
    await Promise.all(devs.map(async (d) => {
      for (let i = 0; Date.now() < until; i++) await d.publish(i);
    }));
    const seconds = (performance.now() - t0) / 1000;
    const got = received - r0;
    const cpu = nodes.map((n, i) => procStat(n.pid()!).cpuMs - cpu0[i]!);
    await pool(devs, 32, (d) => d.end());
    backend.end();
    return {
      nodes: count,
      readings_per_s: Math.round(got / seconds),
      node_cpu_s: Object.fromEntries(nodes.map((n, i) => [n.id, +(cpu[i]! / 1000).toFixed(1)])),
      node_cpu_per_reading_ms: +(cpu.reduce((a, b) => a + b, 0) / Math.max(1, got)).toFixed(3),
    };
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mqsec-bench-cluster-'));
  const redisPort = await freePort();
  const redisProc = spawn('/usr/bin/redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec'], { stdio: 'ignore' });
  const redisUrl = `redis://127.0.0.1:${redisPort}`;
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((r) => {
      const c = net.connect({ host: '127.0.0.1', port: redisPort }, () => (c.destroy(), r(true)));
      c.once('error', () => r(false));
    });
    if (up) break;
    if (i > 200) throw new Error('redis-server did not start');
    await sleep(50);
  }
  const redis = new Redis(redisUrl);
  const dataDir = path.join(dir, 'registry');
  const reg = openClusterRegistry(dataDir);
  const keys: { id: string; key: Uint8Array }[] = [];
  for (let i = 0; i < N; i++) {
    const id = `bench-${String(i).padStart(5, '0')}`;
    keys.push({ id, key: (await reg.addDevice(id, 'sensor')).key });
  }
  await reg.addAccount('backend', 'app', 'backend-password');
  await reg.closeAll();
  const metricsPort = await freePort();
  const [node] = await startSimNodes({ count: 1, redisUrl, dataDir, extraArgs: ['--metrics-port', String(metricsPort)] });
  const pid = node!.pid()!;
  try {
    let received = 0;
    const backend = mqtt.connect({ host: '127.0.0.1', port: node!.port, clientId: 'backend/bench', username: 'backend', password: 'backend-password', clean: false, protocolVersion: 4, reconnectPeriod: 0 });
    await new Promise((r) => backend.once('connect', r));
    backend.on('message', () => received++);
    await backend.subscribeAsync('sensors/#', { qos: 1 });
    await sleep(2000);
    const devs = keys.map((k) => new Dev(k.id, k.key, node!.port));
    const mark = async () => ({ ...procStat(pid), redisCpuMs: procStat(redisProc.pid!).cpuMs, redis: await redisCalls(redis), reg: await scrape(metricsPort, 'mqsec_registry_ops_total'), at: performance.now() });

    const redisMem = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
    const memBase = await redisMem();
    const base = await mark();
    await pool(devs, 16, (d) => d.connect());
    await sleep(1500); // tickets written (group commit), grace records, heartbeats settle
    const afterP1 = await mark();

    const total = N * M;
    await pool(devs, 16, async (d) => {
      for (let i = 0; i < M; i++) await d.publish(i);
    });
    while (received < total) await sleep(20);
    await sleep(500);
    const afterMsg = await mark();

    await pool(devs, 32, (d) => d.end());
    await sleep(1000);
    const beforeP2 = await mark();
    await pool(devs, 16, (d) => d.connect());
    await sleep(1500);
    const afterP2 = await mark();
    await pool(devs, 32, (d) => d.end());
    backend.end();

    const per = (a: typeof base, b: typeof base, n: number) => ({
      cpu_ms: +((b.cpuMs - a.cpuMs) / n).toFixed(3),
      redis_cmds: +((b.redis - a.redis) / n).toFixed(2),
      redis_cpu_ms: +((b.redisCpuMs - a.redisCpuMs) / n).toFixed(3),
      registry_ops: +((b.reg - a.reg) / n).toFixed(2),
    });
    const out = {
      devices: N,
      readings: total,
      node_rss_base_mb: +(base.rssKb / 1024).toFixed(1),
      rss_per_session_kb: +((afterP1.rssKb - base.rssKb) / N).toFixed(1),
      phase1: per(base, afterP1, N),
      reading: per(afterP1, afterMsg, total),
      phase2: per(beforeP2, afterP2, N),
      // what stays per device in Redis once the readings are delivered: its shared grace record (Aedes' queues are empty)
      redis_bytes_per_device: Math.round(((await redisMem()) - memBase) / N),
    };
    const tp = [];
    if (TP_S > 0) {
      await node!.stop();
      for (const [round, count] of [1, 3, 1, 3].entries()) tp.push(await throughput(count, redisUrl, dir, round)); // interleaved: the machine's load drifts
    }
    if (JSON_OUT) process.stdout.write(JSON.stringify({ ...out, throughput: tp }) + '\n');
    else {
      log(`one cluster node, ${N} devices, ${total} QoS 1 readings (to one persistent backend)`);
      log(`  node RSS at start ${out.node_rss_base_mb} MB; per live device session ${out.rss_per_session_kb} KB`);
      for (const k of ['phase1', 'reading', 'phase2'] as const) {
        log(`  per ${k.padEnd(7)}: node CPU ${out[k].cpu_ms} ms, Redis commands ${out[k].redis_cmds} (redis-server CPU ${out[k].redis_cpu_ms} ms), registry operations ${out[k].registry_ops}`);
      }
      log(`  Redis memory per device (after delivery): ${out.redis_bytes_per_device} B`);
      if (refusedBusy) log(`  (${refusedBusy} logins got CONNACK 3 from the per-address phase-1 rate limit and were retried)`);
      if (tp.length) log(`throughput, ${TP_DEVICES} devices publishing QoS 1 back to back for ${TP_S} s, backend on node1, same machine:`);
      for (const t of tp) log(`  ${t.nodes} node(s): ${t.readings_per_s} readings/s; node CPU s ${JSON.stringify(t.node_cpu_s)}; ${t.node_cpu_per_reading_ms} ms node CPU per reading`);
    }
  } finally {
    await node!.stop();
    redis.disconnect();
    redisProc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
