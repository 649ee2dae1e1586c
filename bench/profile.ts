/**
 * CPU profile of a broker process under one benchmark workload, to find
 * where its time per handshake or per message goes:
 *
 *   npx tsx bench/profile.ts <workload> [seconds] [--broker=mqsec|aedes-plain]
 *
 * workload: phase1 | phase2 | plain-connect | qos0-app | qos1-app | qos0-device | qos0-e2e | qos1-e2e
 *
 * The broker runs in its own process, profiled by V8 during the measured
 * window only (bench/servers/child.ts, MQSEC_PROFILE_OUT); the load comes
 * from the same clients as `mqsec bench` (rate workers in their own
 * processes, or the throughput load generator). Prints the broker's CPU per
 * operation (from /proc) and the functions with the most self time, grouped
 * by source file as well, so a before/after comparison is one command.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { E2E_ROLES, provisionMqsecBroker } from './servers/mqsec.js';
import { e2eFactory } from './throughput/e2e.js';
import { startChildBroker } from './servers/spawn.js';
import { RateClientPool, splitLoops, type RateSpec } from './handshake/rate.js';
import { runThroughput } from './throughput/load.js';
import { mqsecFactory, mqsecTopic } from './throughput/mqsec.js';
import { mqttJsFactory } from './throughput/mqttjs.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function and per file, in percent of all samples (idle excluded). */
export function summariseProfile(p: CpuProfile, top = 25): { functions: Array<[string, number]>; files: Array<[string, number]>; callers: Map<string, Array<[string, number]>>; busyShare: number } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n: ProfileNode) => {
    const url = n.callFrame.url.replace(/^file:\/\//, '').replace(process.cwd() + '/', '').replace(/.*node_modules\//, 'node_modules/');
    return `${n.callFrame.functionName || '(anonymous)'} ${url}:${n.callFrame.lineNumber + 1}`;
  };
  /** Callers (up to 3 frames up) of native functions, where self time alone says little. */
  const callerTime = new Map<string, Map<string, number>>();
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  let total = 0;
  let idle = 0;
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  for (const [id, t] of self) {
    const n = byId.get(id)!;
    const name = n.callFrame.functionName || '(anonymous)';
    const parentLabel = parent.has(id) ? label(byId.get(parent.get(id)!)!) : '';
    // '(idle)', and the inspector's own dispatch of the profiler session, are not the broker's work
    if (name === '(idle)' || (name === 'dispatch' && parentLabel.startsWith('post node:inspector'))) {
      idle += t;
      continue;
    }
    total += t;
    const url = n.callFrame.url.replace(/^file:\/\//, '').replace(process.cwd() + '/', '');
    const short = url.replace(/.*node_modules\//, 'node_modules/');
    const key = `${name} ${short}:${n.callFrame.lineNumber + 1}`;
    fn.set(key, (fn.get(key) ?? 0) + t);
    if (!short) {
      const chain: string[] = [];
      for (let q = parent.get(id), k = 0; q !== undefined && k < 3; q = parent.get(q), k++) chain.push(label(byId.get(q)!));
      const m = callerTime.get(key) ?? new Map<string, number>();
      m.set(chain.join(' < '), (m.get(chain.join(' < ')) ?? 0) + t);
      callerTime.set(key, m);
    }
    const f = short ? short.replace(/^(node_modules\/(@[^/]+\/)?[^/]+)\/.*/, '$1') : name.startsWith('(') ? name : '(native)';
    file.set(f, (file.get(f) ?? 0) + t);
  }
  const pct = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => [k, Math.round((v / total) * 1000) / 10] as [string, number]);
  const callers = new Map<string, Array<[string, number]>>();
  for (const [k, m] of callerTime) callers.set(k, [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([c, v]) => [c, Math.round((v / total) * 1000) / 10]));
  return { functions: pct(fn), files: pct(file), callers, busyShare: Math.round((total / (total + idle)) * 1000) / 10 };
}

async function main() {
  const workload = process.argv[2] ?? 'phase2';
  const seconds = Number(process.argv[3] ?? 8);
  const brokerKind = process.argv.find((a) => a.startsWith('--broker='))?.slice(9) ?? (workload === 'plain-connect' ? 'aedes-plain' : 'mqsec');
  const profDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqsec-prof-'));
  const loops = 8;
  const pairs = 10;
  const ids = [
    ...Array.from({ length: loops }, (_, i) => `p-${i}`),
    ...Array.from({ length: 2 * pairs }, (_, i) => `tput-${i}`),
    ...Array.from({ length: pairs }, (_, i) => ({ id: `e2epub-${i}`, role: E2E_ROLES.pairsWriter.name })),
    ...Array.from({ length: pairs }, (_, i) => ({ id: `e2esub-${i}`, role: E2E_ROLES.pairsReader.name })),
  ];
  const setup = await provisionMqsecBroker(ids);
  const profFile = path.join(profDir, 'broker.cpuprofile');
  const broker = await startChildBroker(brokerKind, brokerKind === 'mqsec' ? [setup.dataDir] : [], { env: { MQSEC_PROFILE_OUT: profFile } });
  const startProfiler = () => process.kill(broker.pid, 'SIGUSR2');
  const dev = (id: string) => setup.devices.find((d) => d.id === id)!;
  let ops = 0;
  let cpuMs = 0;
  try {
    if (workload === 'phase1' || workload === 'phase2' || workload === 'plain-connect') {
      const pool = await RateClientPool.start(2);
      try {
        const specs: RateSpec[] = Array.from({ length: loops }, (_, i) =>
          workload === 'plain-connect'
            ? { kind: 'plain', port: broker.port, clientId: `plain-${i}` }
            : { kind: workload === 'phase1' ? 'mqsec_phase1' : 'mqsec_phase2', port: broker.port, device: { id: `p-${i}`, keyHex: Buffer.from(dev(`p-${i}`).key).toString('hex') } },
        );
        const r = await pool.measure(splitLoops(specs, 2), seconds * 1000, broker.pid, startProfiler);
        ops = r.completed;
        cpuMs = (r.brokerCpuMsPerHandshake ?? 0) * r.completed;
        console.log(`${workload}: ${r.completed} handshakes, ${r.perSecond}/s, broker CPU ${r.brokerCpuMsPerHandshake} ms/handshake, failed ${r.failed} ${r.firstError ?? ''}`);
      } finally {
        await pool.stop();
      }
    } else {
      const qos = workload.startsWith('qos1') ? 1 : 0;
      const devices = Array.from({ length: 2 * pairs }, (_, i) => dev(`tput-${i}`));
      const url = `mqtt://127.0.0.1:${broker.port}`;
      const e2e = workload.endsWith('e2e');
      const factory =
        brokerKind === 'aedes-plain'
          ? mqttJsFactory(url)
          : e2e
            ? e2eFactory(url, Array.from({ length: pairs }, (_, i) => dev(`e2epub-${i}`)), Array.from({ length: pairs }, (_, i) => dev(`e2esub-${i}`)))
            : mqsecFactory({ url, devices, pairs, subscribers: workload.endsWith('device') ? 'device' : 'app', app: setup.app });
      const topicFor = brokerKind === 'aedes-plain' ? undefined : e2e ? (i: number) => `e2e/e2epub-${i}/bench` : mqsecTopic(devices);
      const r = await runThroughput(factory, { pairs, qos, payloadBytes: 64, warmupMs: 1000, durationMs: seconds * 1000, window: 64, brokerPid: broker.pid, topicFor, onMeasureStart: startProfiler });
      ops = r.delivered;
      cpuMs = (r.brokerCpuUsPerMessage ?? 0) * r.delivered / 1000;
      console.log(`${workload}: ${r.msgsPerSecond} msgs/s, broker CPU ${r.brokerCpuUsPerMessage} µs/msg (${r.brokerCpuCores} cores), client ${r.clientCpuCores} cores`);
    }
  } finally {
    await broker.stop();
    setup.cleanup();
  }
  if (!fs.existsSync(profFile)) throw new Error('no profile written');
  const prof = JSON.parse(fs.readFileSync(profFile, 'utf8')) as CpuProfile;
  fs.rmSync(profDir, { recursive: true, force: true });
  const s = summariseProfile(prof);
  console.log(`operations ${ops}, broker CPU ${Math.round(cpuMs)} ms over the whole run; broker busy ${s.busyShare}% of the measured window`);
  console.log('\nself time by file (% of busy):');
  for (const [k, v] of s.files) console.log(`${String(v).padStart(6)}  ${k}`);
  console.log('\nself time by function (% of busy):');
  for (const [k, v] of s.functions) {
    console.log(`${String(v).padStart(6)}  ${k}`);
    if (v >= 2) for (const [c, cv] of s.callers.get(k) ?? []) console.log(`${''.padStart(10)}${cv}% from ${c}`);
  }
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  await main();
  process.exit(0);
}
