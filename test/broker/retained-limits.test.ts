/**
 * Retained-message limits (issue: one account filling the broker's memory with
 * retained messages) against a running broker: per-account count and bytes,
 * the global limit across accounts, clearing, replacing, and the bookkeeping
 * rebuilt from a durable store at start. The genuine device and app keep
 * exchanging readings and commands throughout.
 */
import { afterEach, describe, expect, it } from 'vitest';
import memoryPersistence from 'aedes-persistence';
import type { RunningBroker } from '../../broker/server.js';
import type { BrokerLimits } from '../../broker/limits/config.js';
import { TestApp, TestDevice, tempDir, testBroker, waitFor } from './helpers.js';

let dir: ReturnType<typeof tempDir> | undefined;
let broker: RunningBroker | undefined;
const open: { end(): Promise<void> }[] = [];

afterEach(async () => {
  for (const c of open.splice(0)) await c.end().catch(() => undefined);
  await broker?.stop();
  dir?.remove();
  broker = undefined;
  dir = undefined;
});

/** A broker with the given retained limits, the genuine device g1, its app (backend) and two more app accounts. */
async function setUp(limits: Partial<BrokerLimits>, persistence?: unknown) {
  dir ??= tempDir();
  broker = await testBroker(dir.path, { limits, persistence });
  const b = broker;
  for (const name of ['backend', 'acct1', 'acct2']) if (!(await b.registry.getAccount(name))) await b.registry.addAccount(name, 'app', `${name}-password`);
  if (!(await b.registry.getAccount('root'))) await b.registry.addAccount('root', 'admin', 'root-password');
  const key = await b.registry.getDevice('g1') ? undefined : (await b.registry.addDevice('g1', 'sensor')).key;
  const app = await TestApp.connect(b, 'backend', 'backend-password');
  open.push(app);
  await app.subscribe('sensors/#');
  const account = async (name: string) => {
    const a = await TestApp.connect(b, name, `${name}-password`);
    open.push(a);
    return a;
  };
  let n = 0;
  const device = key && new TestDevice(b, 'g1', key);
  if (device) {
    expect((await device.connect()).ok).toBe(true);
    await device.subscribe('cmd/g1/#');
    open.push(device);
  }
  /** One reading device -> app and one command app -> device, both delivered. */
  const exchange = async () => {
    if (!device) return;
    const tag = `r${++n}`;
    await device.publish('sensors/g1/t', tag);
    await app.client.publishAsync('cmd/g1/set', `c-${tag}`, { qos: 1 });
    await waitFor(() => app.received.some((m) => m.payload === tag), 5000, `reading ${tag}`);
    await waitFor(() => device.received.some((m) => m.payload === `c-${tag}`), 5000, `command c-${tag}`);
  };
  /** What a new subscriber to `filter` gets as retained messages (topic -> payload length). */
  const retainedNow = async (filter = 'cmd/#') => {
    const late = await TestApp.connect(b, 'root', 'root-password', `root/${Math.random().toString(16).slice(2, 8)}`);
    await late.subscribe(filter);
    await new Promise((r) => setTimeout(r, 150));
    await late.end();
    return Object.fromEntries(late.received.map((m) => [m.topic, m.payload.length]));
  };
  const refused = () => broker!.metrics.value('mqsec_drops_total', { reason: 'retained-limit' });
  return { app, account, exchange, retainedNow, refused };
}

const retain = (a: TestApp, topic: string, size: number) => a.client.publishAsync(topic, 'x'.repeat(size), { qos: 1, retain: true });

describe('retained-message limits', () => {
  it('an account hits its count limit: the extra message is not stored (still routed live), audited; clearing one frees a slot', async () => {
    const t = await setUp({ retainedPerAccount: 3 });
    const a = await t.account('acct1');
    const live = await TestApp.connect(broker!, 'root', 'root-password', 'root/live');
    open.push(live);
    await live.subscribe('cmd/acct1/#'); // subscribed before: gets it live
    for (const i of [1, 2, 3]) await retain(a, `cmd/acct1/${i}`, 10);
    await t.exchange();
    await retain(a, 'cmd/acct1/4', 10);
    await waitFor(() => live.received.some((m) => m.topic === 'cmd/acct1/4'), 5000, 'refused retain routed live');
    expect(Object.keys(await t.retainedNow()).sort()).toEqual(['cmd/acct1/1', 'cmd/acct1/2', 'cmd/acct1/3']);
    expect(await t.refused()).toBe(1);
    const rows = await broker!.registry.listAudit({ kind: 'publish.retained-refused', subject: 'acct1' });
    expect(rows.map((r) => r.detail)).toEqual(['owner-count: cmd/acct1/4']);
    await retain(a, 'cmd/acct1/2', 50); // replacing a stored topic adds no message
    await t.exchange();
    await retain(a, 'cmd/acct1/1', 0); // empty payload: cleared
    await retain(a, 'cmd/acct1/4', 10);
    expect(await t.retainedNow()).toEqual({ 'cmd/acct1/2': 50, 'cmd/acct1/3': 10, 'cmd/acct1/4': 10 });
    expect(await t.refused()).toBe(1);
    await t.exchange();
  });

  it('an account hits its bytes limit; a replacement is charged only the difference; clearing frees the bytes', async () => {
    // cost = topic + payload: 'cmd/acct1/a' is 11 bytes
    const t = await setUp({ retainedBytesPerAccount: 1000 });
    const a = await t.account('acct1');
    await retain(a, 'cmd/acct1/a', 600);
    await retain(a, 'cmd/acct1/b', 600); // 611 + 611 > 1000: refused
    await t.exchange();
    expect(await t.retainedNow()).toEqual({ 'cmd/acct1/a': 600 });
    await retain(a, 'cmd/acct1/a', 989); // 1000: exactly the limit, the old 611 freed
    await retain(a, 'cmd/acct1/b', 1); // one byte more than the limit
    expect(await t.retainedNow()).toEqual({ 'cmd/acct1/a': 989 });
    expect(await t.refused()).toBe(2);
    expect((await broker!.registry.listAudit({ kind: 'publish.retained-refused', subject: 'acct1' })).map((r) => r.detail?.split(':')[0])).toEqual(['owner-bytes', 'owner-bytes']);
    await retain(a, 'cmd/acct1/a', 0);
    await retain(a, 'cmd/acct1/b', 600);
    expect(await t.retainedNow()).toEqual({ 'cmd/acct1/b': 600 });
    await t.exchange();
  });

  it('the global limit holds across two accounts, each within its own', async () => {
    const t = await setUp({ retainedPerAccount: 3, retainedTotal: 4, retainedBytesTotal: 10_000 });
    const a = await t.account('acct1');
    const b = await t.account('acct2');
    for (const i of [1, 2, 3]) await retain(a, `cmd/acct1/${i}`, 10);
    await retain(b, 'cmd/acct2/1', 10);
    await retain(b, 'cmd/acct2/2', 10); // acct2 has 1 of 3, but the broker holds 4 of 4
    await t.exchange();
    expect(Object.keys(await t.retainedNow()).sort()).toEqual(['cmd/acct1/1', 'cmd/acct1/2', 'cmd/acct1/3', 'cmd/acct2/1']);
    expect((await broker!.registry.listAudit({ kind: 'publish.retained-refused', subject: 'acct2' })).map((r) => r.detail)).toEqual(['total-count: cmd/acct2/2']);
    await retain(a, 'cmd/acct1/3', 0); // acct1 clears one: acct2 may store
    await retain(b, 'cmd/acct2/2', 10);
    expect(Object.keys(await t.retainedNow()).sort()).toEqual(['cmd/acct1/1', 'cmd/acct1/2', 'cmd/acct2/1', 'cmd/acct2/2']);
    // bytes too: 8,000 more would pass acct2's own 1 MiB but not the broker's 10,000
    await retain(b, 'cmd/acct2/2', 8000);
    await retain(b, 'cmd/acct2/1', 2000);
    expect(await t.retainedNow()).toMatchObject({ 'cmd/acct2/2': 8000, 'cmd/acct2/1': 10 });
    expect((await broker!.registry.listAudit({ kind: 'publish.retained-refused', subject: 'acct2' }))[0]!.detail).toBe('total-bytes: cmd/acct2/1');
    await t.exchange();
  });

  it('retained messages kept by a durable store count again after a restart', async () => {
    const persistence = memoryPersistence();
    let t = await setUp({ retainedTotal: 3 }, persistence);
    const a = await t.account('acct1');
    for (const i of [1, 2, 3]) await retain(a, `cmd/acct1/${i}`, 10);
    await t.exchange();
    for (const c of open.splice(0)) await c.end();
    await broker!.stop();
    t = await setUp({ retainedTotal: 3 }, persistence);
    const b = await t.account('acct2');
    await retain(b, 'cmd/acct2/1', 10); // the three from before the restart fill the broker
    expect(Object.keys(await t.retainedNow()).sort()).toEqual(['cmd/acct1/1', 'cmd/acct1/2', 'cmd/acct1/3']);
    expect(await t.refused()).toBe(1);
    await retain(b, 'cmd/acct1/1', 0); // any publisher allowed on the topic may clear it
    await retain(b, 'cmd/acct2/1', 10);
    expect(Object.keys(await t.retainedNow()).sort()).toEqual(['cmd/acct1/2', 'cmd/acct1/3', 'cmd/acct2/1']);
  });
});
