/**
 * The device side of end-to-end topic keys (docs/protocol.md §14) with the
 * real SensorNode, SecureMqttLink, glue (SecureMqttClient + GroupKeyring) and
 * DeviceSecureSession against an in-memory broker that does what the mqsec
 * broker does for §14 (ServerHandshake, channel MAC check, a key service made
 * of the firmware's DeliverySender) and an app member with its own keyring.
 *
 * Platform-free and deterministic (manual clock, seeded randomness): each
 * scenario returns a JSON-able summary that the Node test asserts on and the
 * XS test requires to be identical inside the XS engine.
 */
import { MqsecError, asMqsecError } from '../../firmware/core/errors.js';
import type { Random } from '../../firmware/core/platform.js';
import { utf8Decode, utf8Encode } from '../../firmware/core/utf8.js';
import { createNobleSuite } from '../../firmware/crypto/noble.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { topicMatches } from '../../firmware/mqtt/topic.js';
import { SecureMqttLink, type ConnectableMqttClient, type GlueHooks } from '../../firmware/app/secure-link.js';
import { SecureMqttClient } from '../../firmware/app/secure-mqtt.js';
import { SensorNode, type NodeState } from '../../firmware/app/sensor-node.js';
import { DeviceSecureSession } from '../../firmware/secure/device.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';
import { ServerHandshake, type PendingPhase1, type ServerSession } from '../../firmware/secure/server.js';
import { MemoryTicketStore } from '../../firmware/secure/ticket-store.js';
import {
  CHANNEL_TRAILER_LENGTH,
  DeliverySender,
  GK_TOPIC,
  GROUP_KEY_LENGTH,
  GROUP_READER,
  GROUP_WRITER,
  GroupKeyring,
  deriveKeyServiceKey,
  parseGroupEnvelope,
  type GroupGrant,
} from '../../firmware/secure/group.js';
import { FakeNetwork, FakeSensor, FakeSleep, ManualTimer, MapStorage, seededRandom } from './fakes.js';

export const DEV = 'dev-0001';
export const APP = 'ops';
const READINGS = `sensors/${DEV}/#`;
const COMMANDS = `cmd/${DEV}/#`;

interface Group {
  filter: string;
  writers: string[];
  readers: string[];
  epoch: number;
  key: Uint8Array;
}

/** What happens to the device's next PUBLISH on an end-to-end topic. */
type Fault = 'none' | 'lose-before-broker' | 'lose-puback';

/**
 * In-memory broker with the §14 parts of the mqsec broker: the channel MAC is
 * checked and stripped (connection closed on failure), the group envelope is
 * handed to the app member untouched, and a key service answers GKREQs and
 * pushes re-keys. Publisher sequence ranges are handed out per request
 * (`seqBlock`), monotonically, as the key service does (§14.4).
 */
export class E2eLoopbackBroker {
  readonly suite: CryptoSuite;
  readonly server: ServerHandshake;
  readonly groups: Group[];
  readonly counts = { phase1: 0, phase2: 0, keyRequests: 0, pushes: 0, channelRefused: 0, forwarded: 0, hop: 0, connections: 0 };
  /** What the app opened: `topic=text@epoch`. */
  readonly appReadings: string[] = [];
  /** The app's receiver-check refusals (typed codes). */
  readonly appDropped: string[] = [];
  /** Device PUBLISH payload sizes on e2e topics (group envelope + channel trailer). */
  readonly wireSizes: number[] = [];
  /** Group envelopes as the broker forwarded them (for replay attempts). */
  readonly forwardedEnvelopes: { topic: string; genv: Uint8Array }[] = [];
  fault: Fault = 'none';
  /** Pushes to the device are lost (the device misses a re-key). */
  losePushesToDevice = false;
  /** Answers to a device's later requests on one connection (for its next sequence range, §14.4) are lost. */
  loseLaterAnswers = false;
  readonly app: GroupKeyring;
  private readonly ksKeys = new Map<string, Uint8Array>();
  private readonly answers = new Map<string, DeliverySender>();
  /** The range handed out with each member's current answer (pushes repeat it, §14.6). */
  private readonly ranges = new Map<string, { seqBase: number; seqLimit: number }>();
  private readonly seqNext = new Map<string, number>();
  private deviceIn: ((topic: string, payload: Uint8Array) => void) | undefined;

  constructor(
    private readonly keys: Map<string, Uint8Array>,
    random: Random,
    readonly seqBlock = 4096,
    groups: 'device-groups' | 'none' = 'device-groups',
  ) {
    this.suite = createNobleSuite(random);
    this.server = new ServerHandshake({
      suite: this.suite,
      clock: { now: () => 1_700_000_000_000 },
      lookupDevice: (id: string) => {
        const k = keys.get(id);
        return k ? { deviceKey: k, status: 'active' } : undefined;
      },
      ticketStore: new MemoryTicketStore(),
    });
    this.groups =
      groups === 'none'
        ? []
        : [
            { filter: READINGS, writers: [DEV], readers: [APP], epoch: 1, key: this.suite.randomBytes(GROUP_KEY_LENGTH) },
            { filter: COMMANDS, writers: [APP], readers: [DEV], epoch: 1, key: this.suite.randomBytes(GROUP_KEY_LENGTH) },
          ];
    this.app = new GroupKeyring({ suite: this.suite, id: APP, keyServiceKey: this.ksKey(APP) });
    this.app.acceptDelivery(this.answer(APP, this.app.request()));
  }

  private ksKey(id: string): Uint8Array {
    let k = this.ksKeys.get(id);
    if (!k) {
      k = deriveKeyServiceKey(this.suite, this.keys.get(id)!, id);
      this.ksKeys.set(id, k);
    }
    return k;
  }

  private grants(id: string, filters?: string[]): GroupGrant[] {
    return this.groups
      .filter((g) => !filters || filters.includes(g.filter))
      .filter((g) => g.readers.includes(id) || g.writers.includes(id))
      .map((g) => ({
        filter: g.filter,
        flags: (g.readers.includes(id) ? GROUP_READER : 0) | (g.writers.includes(id) ? GROUP_WRITER : 0),
        epoch: g.epoch,
        groupKey: g.key.slice(),
        writers: g.writers,
      }));
  }

  private range(id: string): { seqBase: number; seqLimit: number } {
    if (!this.groups.some((g) => g.writers.includes(id))) return { seqBase: 0, seqLimit: 0 };
    const base = this.seqNext.get(id) ?? 0;
    this.seqNext.set(id, base + this.seqBlock);
    return { seqBase: base, seqLimit: base + this.seqBlock };
  }

  /** Key service: a verified GKREQ answered with every group of the member and a fresh range. */
  private answer(id: string, request: Uint8Array): Uint8Array {
    this.counts.keyRequests++;
    this.answers.get(id)?.destroy();
    const sender = DeliverySender.answer(this.suite, this.ksKey(id), id, request);
    this.answers.set(id, sender);
    const r = this.range(id);
    this.ranges.set(id, r);
    return sender.seal({ seqBase: r.seqBase, seqLimit: r.seqLimit, groups: this.grants(id) });
  }

  private groupOf(topic: string): Group | undefined {
    return this.groups.find((g) => topicMatches(g.filter, topic));
  }

  /** §14.3: a new epoch for `filter`, pushed to every connected member at once. */
  rekey(filter: string): number {
    const g = this.groups.find((x) => x.filter === filter)!;
    g.key.fill(0);
    g.key = this.suite.randomBytes(GROUP_KEY_LENGTH);
    g.epoch++;
    for (const [id, sender] of this.answers) {
      const r = this.ranges.get(id)!;
      const push = sender.seal({ seqBase: r.seqBase, seqLimit: r.seqLimit, groups: this.grants(id, [g.filter]) });
      this.counts.pushes++;
      if (id === APP) this.app.acceptDelivery(push);
      else if (!this.losePushesToDevice) this.deviceIn?.(GK_TOPIC, push);
    }
    return g.epoch;
  }

  /** The app member publishes a command end to end (the broker forwards the envelope as is). */
  command(name: string, text: string): Uint8Array {
    const topic = `cmd/${DEV}/${name}`;
    const genv = this.app.seal(topic, utf8Encode(text));
    this.deliverToDevice(topic, genv);
    return genv;
  }

  deliverToDevice(topic: string, payload: Uint8Array): void {
    this.deviceIn?.(topic, payload);
  }

  client(hooks: GlueHooks): ConnectableMqttClient {
    const broker = this;
    let closed = false;
    let pending: PendingPhase1 | undefined;
    let session: ServerSession | undefined;
    let devId = '';
    let requests = 0;
    const close = () => {
      if (closed) return;
      closed = true;
      if (broker.deviceIn === deliver) broker.deviceIn = undefined;
      broker.answers.get(devId)?.destroy();
      broker.answers.delete(devId);
      hooks.onClose();
    };
    const deliver = (topic: string, payload: Uint8Array) => {
      if (!closed) hooks.onMessage({ topic, payload });
    };
    return {
      async start() {
        const c = await hooks.credentials();
        devId = c.clientId;
        broker.counts.connections++;
        const r = await broker.server.acceptConnect(c.clientId, c.username, c.password);
        hooks.onConnect({ returnCode: 0 });
        broker.deviceIn = deliver;
        if (r.kind === 'phase1') pending = r.pending;
        else if (r.kind === 'phase2') {
          session = r.session;
          broker.counts.phase2++;
        } else return close();
        hooks.onMessage({ topic: r.reply.topic, payload: r.reply.payload });
      },
      async publish(topic: string, payload: Uint8Array) {
        if (closed) throw new MqsecError('NOT_CONNECTED', 'closed');
        if (topic === KX_TOPIC) {
          session = await broker.server.completePhase1(pending!, payload);
          broker.counts.phase1++;
          return;
        }
        if (topic === GK_TOPIC) {
          requests++;
          if (requests > 1 && broker.loseLaterAnswers) return;
          const answer = broker.answer(devId, payload);
          Promise.resolve().then(() => deliver(GK_TOPIC, answer));
          return;
        }
        const g = broker.groupOf(topic);
        if (!g) {
          broker.counts.hop++;
          broker.appReadings.push(`${topic}=${utf8Decode(session!.open(topic, payload))}@hop`);
          return;
        }
        if (broker.fault === 'lose-before-broker') {
          broker.fault = 'none';
          close();
          throw new MqsecError('CONNECTION_CLOSED', 'dropped');
        }
        broker.wireSizes.push(payload.length);
        let genv: Uint8Array;
        try {
          genv = session!.unwrapChannel(topic, payload); // §14.5, no AEAD
        } catch (e) {
          broker.counts.channelRefused++;
          close();
          throw asMqsecError(e);
        }
        broker.counts.forwarded++;
        broker.forwardedEnvelopes.push({ topic, genv: genv.slice() });
        try {
          const m = broker.app.open(topic, genv);
          broker.appReadings.push(`${topic}=${utf8Decode(m.plaintext)}@${m.epoch}`);
        } catch (e) {
          broker.appDropped.push(asMqsecError(e).code);
        }
        if (broker.fault === 'lose-puback') {
          broker.fault = 'none';
          close();
          throw new MqsecError('CONNECTION_CLOSED', 'dropped before PUBACK');
        }
      },
      async subscribe() {
        return [1];
      },
      async disconnect() {
        close();
      },
    };
  }
}

interface Rig {
  timer: ManualTimer;
  node: SensorNode;
  glue: () => SecureMqttClient;
  link: SecureMqttLink;
  states: string[];
  done: Promise<void>;
}

function startNode(broker: E2eLoopbackBroker, key: Uint8Array, random: Random, storage = new MapStorage(), kinds = ['temperature']): Rig {
  const suite = createNobleSuite(random);
  const session = new DeviceSecureSession({ suite, devId: DEV, deviceKey: key, storage });
  const keyring = new GroupKeyring({ suite, id: DEV, keyServiceKey: deriveKeyServiceKey(suite, key, DEV) });
  let glue: SecureMqttClient | undefined;
  const link = new SecureMqttLink({
    createGlue: (cb) => (glue = new SecureMqttClient({ session, keyring, ...cb })),
    createClient: (hooks) => broker.client(hooks),
  });
  const timer = new ManualTimer();
  const states: string[] = [];
  const node = new SensorNode({
    devId: DEV,
    link,
    network: new FakeNetwork(),
    sensor: new FakeSensor(kinds),
    sleep: new FakeSleep(false),
    storage,
    timer,
    random,
    defaults: { intervalS: 10, sleepMode: 'wait' },
    listenMs: 500,
    stepTimeoutMs: 5000,
    retry: { attempts: 4, baseMs: 500, maxMs: 4000 },
    giveUpSleepMs: 600_000,
    onState: (s: NodeState, d?: string) => states.push(d ? `${s}:${d}` : s),
  });
  return { timer, node, glue: () => glue!, link, states, done: node.start() };
}

function keysFor(): Map<string, Uint8Array> {
  return new Map([
    [DEV, new Uint8Array(32).fill(0x31)],
    [APP, new Uint8Array(32).fill(0x32)],
  ]);
}

const nOf = (reading: string) => JSON.parse(reading.slice(reading.indexOf('=') + 1, reading.lastIndexOf('@'))).n as number;

/**
 * Readings sealed end to end and opened by the app; commands from the app
 * opened by the device; a forged and a replayed command refused with typed
 * codes; a re-key push applied (the next readings under the new epoch); a
 * command under an epoch whose push the device missed makes it ask again.
 */
export async function readingsAndCommands() {
  const keys = keysFor();
  const broker = new E2eLoopbackBroker(keys, seededRandom(0x0e2e0001));
  const r = startNode(broker, keys.get(DEV)!, seededRandom(0x0e2e0002));
  await r.timer.runUntil(() => r.node.state === 'waiting', 10_000, 10);
  const glue = r.glue();
  const first = {
    keyRequests: broker.counts.keyRequests,
    readings: broker.appReadings.slice(),
    modes: { reading: r.link.modeOf(`sensors/${DEV}/temperature`), command: r.link.modeOf(`cmd/${DEV}/interval`), other: r.link.modeOf(`status/${DEV}`) },
    wireSizes: broker.wireSizes.slice(),
  };
  // a command end to end
  const cmd = broker.command('interval', '20');
  await r.timer.advance(10);
  const afterCommand = { intervalS: r.node.currentSettings.intervalS, commands: r.node.stats.commands };
  // the same envelope again (a replay by whoever recorded it) and a forged one
  broker.deliverToDevice(`cmd/${DEV}/interval`, cmd);
  const forged = broker.app.seal(`cmd/${DEV}/interval`, utf8Encode('30'));
  forged[forged.length - 1] ^= 1;
  broker.deliverToDevice(`cmd/${DEV}/interval`, forged);
  // an envelope moved to another topic of the group
  const moved = broker.app.seal(`cmd/${DEV}/interval`, utf8Encode('40'));
  broker.deliverToDevice(`cmd/${DEV}/sleep`, moved);
  await r.timer.advance(10);
  const attacks = { intervalS: r.node.currentSettings.intervalS, commands: r.node.stats.commands, e2eDropped: glue.stats.e2eDropped };
  // re-key of the readings group: pushed, applied, the next readings use it
  const epoch = broker.rekey(READINGS);
  await r.timer.advance(20_000);
  await r.timer.runUntil(() => r.node.state === 'waiting', 10_000, 10);
  const afterRekey = broker.appReadings.slice(first.readings.length);
  // the device misses the commands group's re-key: the next command makes it ask again
  broker.losePushesToDevice = true;
  broker.rekey(COMMANDS);
  broker.losePushesToDevice = false;
  const requestsBefore = broker.counts.keyRequests;
  broker.command('interval', '25'); // under an epoch the device lacks: dropped, keys asked for again
  await r.timer.advance(10);
  broker.command('interval', '26');
  await r.timer.advance(10);
  const missedPush = { requests: broker.counts.keyRequests - requestsBefore, intervalS: r.node.currentSettings.intervalS, e2eDropped: glue.stats.e2eDropped };
  await r.node.stop();
  await r.done;
  return {
    first,
    afterCommand,
    attacks,
    epoch,
    afterRekey,
    missedPush,
    appDropped: broker.appDropped,
    counts: broker.counts,
    glue: glue.stats,
    hopReadings: broker.counts.hop,
  };
}

/**
 * QoS 1 across connection losses: a reading lost before the broker is resent
 * on the next connection with the same group envelope and a new channel
 * trailer; a reading whose PUBACK was lost arrives twice at the broker and the
 * app's replay window drops the copy. Nothing lost, nothing doubled.
 */
export async function resendAcrossDrops() {
  const keys = keysFor();
  const broker = new E2eLoopbackBroker(keys, seededRandom(0x0e2e0011));
  const r = startNode(broker, keys.get(DEV)!, seededRandom(0x0e2e0012));
  await r.timer.runUntil(() => r.node.state === 'waiting', 10_000, 10);
  broker.fault = 'lose-before-broker';
  await r.timer.advance(10_000);
  await r.timer.runUntil(() => r.node.state === 'waiting' && r.link.unacknowledged() === 0, 30_000, 10);
  broker.fault = 'lose-puback';
  await r.timer.advance(10_000);
  await r.timer.runUntil(() => r.node.state === 'waiting' && r.link.unacknowledged() === 0, 30_000, 10);
  await r.timer.advance(10_000);
  await r.timer.runUntil(() => r.node.state === 'waiting', 10_000, 10);
  await r.node.stop();
  await r.done;
  const ns = broker.appReadings.map(nOf);
  // the two copies of the reading whose PUBACK was lost: one envelope, two different trailers
  const envs = broker.forwardedEnvelopes.map((e) => Array.from(e.genv).join(','));
  return {
    published: r.node.stats.published,
    opened: ns,
    distinct: new Set(ns).size,
    appDropped: broker.appDropped,
    forwarded: broker.counts.forwarded,
    sameEnvelopeTwice: envs.length - new Set(envs).size,
    channelRefused: broker.counts.channelRefused,
    connections: broker.counts.connections,
    phase2: broker.counts.phase2,
    outboxDropped: r.link.outbox.dropped,
  };
}

/**
 * §14.4: at three quarters of its sequence range the device asks for the next
 * one on the same connection and goes on sealing: a node that stays connected
 * never runs out and never reconnects for sequence numbers.
 */
export async function rangeRenewed() {
  const keys = keysFor();
  const broker = new E2eLoopbackBroker(keys, seededRandom(0x0e2e0051), 4);
  const r = startNode(broker, keys.get(DEV)!, seededRandom(0x0e2e0052), new MapStorage(), ['temperature', 'humidity']);
  for (let i = 0; i < 6; i++) {
    await r.timer.runUntil(() => r.node.state === 'waiting', 30_000, 10);
    await r.timer.advance(10_000);
  }
  await r.timer.runUntil(() => r.node.state === 'waiting' && r.link.unacknowledged() === 0, 30_000, 10);
  await r.node.stop();
  await r.done;
  const seqs = broker.forwardedEnvelopes.map((e) => parseGroupEnvelope(e.genv).seq);
  return {
    published: r.node.stats.published,
    opened: broker.appReadings.length,
    distinctSeqs: new Set(seqs).size,
    keyRequests: broker.counts.keyRequests,
    connections: broker.counts.connections,
    failures: r.node.stats.failures,
  };
}

/**
 * A connection's publisher sequence range used up (§14.4) because the answer
 * with the next one was lost: sealing fails with NONCE_EXHAUSTED, the reading
 * is kept, the node reconnects at once for a new range, and the reading goes
 * out under it. Sequence numbers never repeat.
 */
export async function rangeExhausted() {
  const keys = keysFor();
  const broker = new E2eLoopbackBroker(keys, seededRandom(0x0e2e0021), 3);
  broker.loseLaterAnswers = true;
  const r = startNode(broker, keys.get(DEV)!, seededRandom(0x0e2e0022), new MapStorage(), ['temperature', 'humidity']);
  for (let i = 0; i < 4; i++) {
    await r.timer.runUntil(() => r.node.state === 'waiting', 30_000, 10);
    await r.timer.advance(10_000);
  }
  await r.timer.runUntil(() => r.node.state === 'waiting' && r.link.unacknowledged() === 0, 30_000, 10);
  await r.node.stop();
  await r.done;
  const seqs = broker.forwardedEnvelopes.map((e) => parseGroupEnvelope(e.genv).seq);
  return {
    published: r.node.stats.published,
    opened: broker.appReadings.length,
    distinctReadings: new Set(broker.appReadings.map(nOf)).size,
    seqs,
    keyRequests: broker.counts.keyRequests,
    connections: broker.counts.connections,
    failures: r.node.stats.failures,
    backoffs: r.states.filter((s) => s.startsWith('backoff')).length,
  };
}

/**
 * A reading lost with its connection while its group moved on by two epochs
 * (the device missed both pushes): the envelope's epoch is gone for every
 * reader, so the device seals it afresh under the current epoch from the
 * plaintext its outbox kept. Nothing lost.
 */
export async function resealAfterTwoRekeys() {
  const keys = keysFor();
  const broker = new E2eLoopbackBroker(keys, seededRandom(0x0e2e0061));
  const r = startNode(broker, keys.get(DEV)!, seededRandom(0x0e2e0062));
  await r.timer.runUntil(() => r.node.state === 'waiting', 10_000, 10);
  broker.fault = 'lose-before-broker';
  await r.timer.advance(10_000);
  await r.timer.runUntil(() => r.node.state === 'backoff' || r.node.state === 'connecting', 10_000, 10);
  broker.rekey(READINGS);
  broker.rekey(READINGS);
  await r.timer.runUntil(() => r.node.state === 'waiting' && r.link.unacknowledged() === 0, 30_000, 10);
  await r.node.stop();
  await r.done;
  return {
    opened: broker.appReadings.map((x) => `${nOf(x)}${x.slice(x.lastIndexOf('@'))}`),
    appDropped: broker.appDropped,
    channelRefused: broker.counts.channelRefused,
    outboxDropped: r.link.outbox.dropped,
  };
}

/** A device that is in no group (the policy has no e2e rule for it) learns that from the delivery and stays hop by hop. */
export async function noGroupsMeansHop() {
  const keys = keysFor();
  const broker = new E2eLoopbackBroker(keys, seededRandom(0x0e2e0031), 4096, 'none');
  const r = startNode(broker, keys.get(DEV)!, seededRandom(0x0e2e0032));
  await r.timer.runUntil(() => r.node.state === 'waiting', 10_000, 10);
  await r.node.stop();
  await r.done;
  return {
    keyRequests: broker.counts.keyRequests,
    hop: broker.counts.hop,
    forwarded: broker.counts.forwarded,
    mode: r.link.modeOf(`sensors/${DEV}/temperature`),
    readings: broker.appReadings.map((x) => x.slice(x.lastIndexOf('@'))),
  };
}

/** Channel trailer bytes and group-envelope overhead for one reading of `size` bytes (§14.8). */
export function overheadFor(size: number) {
  const keys = keysFor();
  const broker = new E2eLoopbackBroker(keys, seededRandom(0x0e2e0041));
  const suite = broker.suite;
  const ring = new GroupKeyring({ suite, id: DEV, keyServiceKey: deriveKeyServiceKey(suite, keys.get(DEV)!, DEV) });
  const sender = DeliverySender.answer(suite, deriveKeyServiceKey(suite, keys.get(DEV)!, DEV), DEV, ring.request());
  ring.acceptDelivery(sender.seal({ seqBase: 0, seqLimit: 4096, groups: [{ filter: READINGS, flags: GROUP_WRITER, epoch: 1, groupKey: new Uint8Array(32).fill(7), writers: [DEV] }] }));
  const genv = ring.seal(`sensors/${DEV}/t`, new Uint8Array(size));
  return { genv: genv.length - size, trailer: CHANNEL_TRAILER_LENGTH };
}

export const e2eScenarios = { readingsAndCommands, resendAcrossDrops, rangeRenewed, rangeExhausted, resealAfterTwoRekeys, noGroupsMeansHop };
