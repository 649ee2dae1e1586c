/**
 * A handshake-rate client process (bench/handshake/rate.ts): builds the
 * methods it is given, prepares them, and on `go` runs one dial-close loop
 * per method until the time is up. Talks to the benchmark over Node's IPC
 * channel only.
 */
import type { HandshakeMethod } from './measure.js';
import { mqsecPhase1Method, mqsecPhase2Method } from './mqsec.js';
import { plainMqttMethod } from './plain.js';
import type { RateSpec, WireCredentials, WorkerReply, WorkerRequest } from './rate.js';
import * as tlsMethods from './tls.js';

function credentials(w: WireCredentials): tlsMethods.TlsCredentials {
  return { pem: w.pem, deviceId: w.deviceId, password: w.password, pskIdentity: w.pskIdentity, psk: Buffer.from(w.pskHex, 'hex') };
}

/** Methods are cached by spec, so a device's session (counter, ticket) lives on across rounds. */
const built = new Map<string, HandshakeMethod>();

function methodOf(spec: RateSpec): HandshakeMethod {
  const key = JSON.stringify(spec);
  let m = built.get(key);
  if (m) return m;
  switch (spec.kind) {
    case 'plain':
      m = plainMqttMethod(spec.port, { clientId: spec.clientId, username: spec.username, password: spec.password });
      break;
    case 'tls12_mutual_cert':
      m = tlsMethods.tls12MutualCertMethod(spec.port, credentials(spec.creds), spec.clientId);
      break;
    case 'tls_resumption':
      m = tlsMethods.tlsResumptionMethod(spec.port, credentials(spec.creds), 'TLSv1.2', spec.clientId);
      break;
    case 'tls13_psk':
      m = tlsMethods.tls13PskMethod(spec.port, credentials(spec.creds), spec.clientId);
      break;
    case 'tls12_psk':
      m = tlsMethods.tls12PskMethod(spec.port, credentials(spec.creds), spec.clientId);
      break;
    case 'mqsec_phase1':
      m = mqsecPhase1Method(spec.port, { id: spec.device.id, key: new Uint8Array(Buffer.from(spec.device.keyHex, 'hex')) });
      break;
    case 'mqsec_phase2':
      m = mqsecPhase2Method(spec.port, { id: spec.device.id, key: new Uint8Array(Buffer.from(spec.device.keyHex, 'hex')) });
      break;
  }
  built.set(key, m);
  return m;
}

let current: HandshakeMethod[] = [];

/** A dial that hangs (a server that never answers) counts as failed instead of stalling the loop. */
const DIAL_TIMEOUT_MS = 5000;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

async function loops(methods: HandshakeMethod[], durationMs: number): Promise<{ completed: number; failed: number; firstError?: string }> {
  let completed = 0;
  let failed = 0;
  let firstError: string | undefined;
  const deadline = performance.now() + durationMs;
  const loop = async (method: HandshakeMethod) => {
    while (performance.now() < deadline) {
      try {
        const d = await withTimeout(method.dial(method.port), DIAL_TIMEOUT_MS);
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
  return { completed, failed, firstError };
}

const reply = (m: WorkerReply) => process.send!(m);

process.on('message', (req: WorkerRequest) => {
  void (async () => {
    if (req.type === 'prepare') {
      try {
        current = req.specs.map(methodOf);
        for (const m of current) if (m.prepare) await m.prepare();
        reply({ type: 'prepared', id: req.id });
      } catch (e) {
        reply({ type: 'prepared', id: req.id, error: String((e as Error).message ?? e) });
      }
    } else {
      const r = await loops(current, req.durationMs);
      reply({ type: 'done', id: req.id, ...r });
    }
  })();
});
process.on('disconnect', () => process.exit(0));
