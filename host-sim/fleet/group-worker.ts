/**
 * Worker-thread entry of a device group (started through
 * group-worker-boot.mjs, which registers the TypeScript loader first). It runs
 * the very same DeviceGroup as the main thread does for small fleets; events
 * are batched to the main thread, which owns the verifier and the statistics.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { DeviceGroup, type GroupEvents } from './device-group.js';
import { BATCH_INTERVAL_MS, MAX_CAPTURES_PER_BATCH, type EventBatch, type GroupWorkerData, type MainToWorker, type WorkerToMain } from './group-protocol.js';

const port = parentPort;
if (!port) throw new Error('group-worker.ts must run in a worker thread');
const data = workerData as GroupWorkerData;
const post = (m: WorkerToMain) => port.postMessage(m);

const emptyBatch = (): EventBatch => ({ t: 'batch', sent: [], uncertain: [], ready: [], errors: {}, drops: 0, powerCuts: 0, captures: [], commands: [], connected: 0 });
let batch = emptyBatch();
let pending = false;
let lastConnected = -1;

const events: GroupEvents = {
  sent: (topic, payload) => void (batch.sent.push([topic, payload]), (pending = true)),
  uncertain: (topic, payload) => void (batch.uncertain.push([topic, payload]), (pending = true)),
  ready: (devId, phase, ms, after) => void (batch.ready.push([devId, phase, ms, after]), (pending = true)),
  error: (_devId, code) => void ((batch.errors[code ?? '?'] = (batch.errors[code ?? '?'] ?? 0) + 1), (pending = true)),
  drop: () => void (batch.drops++, (pending = true)),
  powerCut: () => void (batch.powerCuts++, (pending = true)),
  command: (devId, name, value) => void (batch.commands.push([devId, name, value]), (pending = true)),
  capture: (connect) => {
    if (batch.captures.length < MAX_CAPTURES_PER_BATCH) batch.captures.push(connect);
  },
};

const logger = data.logLevel && data.logLevel !== 'silent' ? pino({ level: data.logLevel }, pino.destination(2)) : undefined;
const group = new DeviceGroup(data.config, events, threadId, logger);

/** Sends what accumulated (and the connected count when it changed). */
function sendBatch(): void {
  const connected = group.connectedCount();
  if (!pending && connected === lastConnected && batch.captures.length === 0) return;
  batch.connected = connected;
  lastConnected = connected;
  const out = batch;
  batch = emptyBatch();
  pending = false;
  post(out);
}

const ticker = setInterval(sendBatch, BATCH_INTERVAL_MS);

port.on('message', (m: MainToWorker) => {
  try {
    switch (m.t) {
      case 'start':
        group.start();
        break;
      case 'faults':
        group.setFaults(m.faults);
        break;
      case 'quiesce':
        group.quiesce();
        break;
      case 'wake':
        group.wakeAll();
        break;
      case 'flush':
        sendBatch();
        post({ t: 'flushed', id: m.id });
        break;
      case 'stop':
        void group.stop().then(() => {
          clearInterval(ticker);
          sendBatch();
          post({ t: 'stopped' });
          port.close();
        });
        break;
    }
  } catch (e) {
    post({ t: 'fatal', message: e instanceof Error ? e.message : String(e) });
  }
});

post({ t: 'loaded', threadId });
