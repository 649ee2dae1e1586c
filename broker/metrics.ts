/**
 * Prometheus metrics (prom-client). One Registry per broker instance so
 * several brokers in one process (tests, the simulator) do not collide.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry as PromRegistry } from 'prom-client';
import { listenOn } from './listen.js';

export class BrokerMetrics {
  readonly registry = new PromRegistry();
  readonly connects = new Counter({ name: 'mqsec_connects_total', help: 'CONNECT packets received', registers: [this.registry] });
  readonly auth = new Counter({
    name: 'mqsec_auth_total',
    help: 'Authentication outcomes by kind (phase1, phase2, account) and result (ok, fail)',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  });
  readonly messages = new Counter({
    name: 'mqsec_messages_total',
    help: 'Application PUBLISH packets accepted from clients',
    registers: [this.registry],
  });
  readonly delivered = new Counter({
    name: 'mqsec_deliveries_total',
    help: 'Application PUBLISH packets forwarded to subscribers (after policy and re-sealing)',
    registers: [this.registry],
  });
  readonly refusals = new Counter({
    name: 'mqsec_login_refusals_total',
    help: 'Refused logins by class: the handshake error code (REPLAY, BAD_MAC, DOWNGRADE, ...), BAD_PASSWORD or RATE_LIMITED',
    labelNames: ['class'] as const,
    registers: [this.registry],
  });
  readonly keyServiceLinked = new Gauge({
    name: 'mqsec_keyservice_linked',
    help: 'An external key service is linked (1) or not (0); absent with the embedded one',
    registers: [this.registry],
  });
  readonly drops = new Counter({
    name: 'mqsec_drops_total',
    help: 'Messages dropped by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly rejects = new Counter({
    name: 'mqsec_connection_rejects_total',
    help: 'Connections closed by the pre-parse limits, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly passwordChecks = new Counter({
    name: 'mqsec_password_checks_total',
    help: 'scrypt password verifications (one per password login, real or dummy, whether the name exists or not)',
    registers: [this.registry],
  });
  readonly pending = new Gauge({ name: 'mqsec_pending_sessions', help: 'Phase-1 sessions awaiting KX3', registers: [this.registry] });
  readonly sessions = new Gauge({ name: 'mqsec_device_sessions', help: 'Authenticated device sessions', registers: [this.registry] });
  readonly registryOps = new Counter({
    name: 'mqsec_registry_ops_total',
    help: 'Registry operations of the handshake by op (device_key lookup, get_counter, advance_counter, get_ticket, put_ticket, delete_ticket, ...)',
    labelNames: ['op'] as const,
    registers: [this.registry],
  });
  readonly clusterUp = new Gauge({
    name: 'mqsec_cluster_store_up',
    help: 'Cluster node: 1 while every connection to the shared Redis is ready (logins accepted), 0 while it is not',
    registers: [this.registry],
  });
  readonly revocations = new Counter({
    name: 'mqsec_revocation_disconnects_total',
    help: 'Live sessions closed because of revocation, rotation or a changed account',
    registers: [this.registry],
  });

  /** Current value of a counter (tests and the bench read it without scraping). */
  async value(name: string, labels: Record<string, string> = {}): Promise<number> {
    const m = await this.registry.getSingleMetric(name)?.get();
    if (!m) return 0;
    const hit = m.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x));
    return hit ? hit.value : 0;
  }

  /** Serves GET /metrics on host:port; resolves with the bound port (a clear ListenError if it cannot). */
  async serve(host: string, port: number): Promise<{ server: Server; port: number }> {
    const server = createServer(async (req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': this.registry.contentType });
      res.end(await this.registry.metrics());
    });
    return { server, port: await listenOn(server, port, host, 'metrics') };
  }
}
