/**
 * Handshake rate: one client loop per given method (each with its own
 * client id / device, as concurrent devices would be) connects to one broker process
 * for a fixed time, each loop dialling (the method's full handshake up to
 * ready), closing, and dialling again. Reported: completed handshakes per
 * second, plus the broker process's CPU time per handshake when its PID is
 * known (the client side shares the machine, so CPU per connect is the
 * fairer figure on a small box).
 */
import { procCpuMs } from '../servers/spawn.js';
import type { HandshakeMethod } from './measure.js';

export interface RateOptions {
  durationMs: number;
  /** PID of the broker process, to read its CPU time. */
  brokerPid?: number;
}

export interface RateResult {
  perSecond: number;
  completed: number;
  failed: number;
  /** Broker CPU ms per completed handshake, if measurable. */
  brokerCpuMsPerHandshake?: number;
  firstError?: string;
}

export async function measureHandshakeRate(methods: HandshakeMethod[], o: RateOptions): Promise<RateResult> {
  for (const m of methods) if (m.prepare) await m.prepare();
  let completed = 0;
  let failed = 0;
  let firstError: string | undefined;
  const cpu0 = o.brokerPid === undefined ? undefined : procCpuMs(o.brokerPid);
  const t0 = performance.now();
  const deadline = t0 + o.durationMs;
  const loop = async (method: HandshakeMethod) => {
    while (performance.now() < deadline) {
      try {
        const d = await method.dial(method.port);
        completed++;
        d.close();
      } catch (e) {
        failed++;
        firstError ??= String((e as Error).message ?? e);
        // a refusing broker must not turn this into a busy loop
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  };
  await Promise.all(methods.map(loop));
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = o.brokerPid === undefined ? undefined : procCpuMs(o.brokerPid);
  const res: RateResult = { perSecond: Math.round(completed / seconds), completed, failed };
  if (cpu0 !== undefined && cpu1 !== undefined && completed > 0) res.brokerCpuMsPerHandshake = Math.round(((cpu1 - cpu0) / completed) * 1000) / 1000;
  if (firstError) res.firstError = firstError;
  return res;
}
