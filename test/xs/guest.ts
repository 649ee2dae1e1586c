/**
 * The XS side of the test harness: runs inside the xsnap worker (real Moddable
 * XS engine). A test entry file imports `exposeToHost` and registers the
 * functions the Node test may call. Async functions are supported: the call
 * answers with a pending id and the host polls; XS drains its job queue
 * between commands.
 *
 * Also offers host services over the synchronous XS -> Node channel:
 * randomness (`hostRandom`), a `print`-backed console, and `hostCall` for
 * anything else the Node side registers.
 */
import { encodeMessage, decodeMessage, serializeError } from './wire.js';
import type { Random, Log } from '../../firmware/core/platform.js';

declare const print: (...args: unknown[]) => void;
declare const issueCommand: (msg: ArrayBuffer) => ArrayBuffer;

type Fn = (...args: any[]) => unknown;

const g = globalThis as any;
if (typeof g.console === 'undefined') {
  const out = (...args: unknown[]) => print(args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' '));
  g.console = { log: out, info: out, warn: out, error: out, debug: out };
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  const ab = new ArrayBuffer(b.length);
  new Uint8Array(ab).set(b);
  return ab;
}

/** Synchronous call to a Node-side host function registered with startXs({ hostFunctions }). */
export function hostCall(name: string, ...args: unknown[]): unknown {
  const reply = decodeMessage(new Uint8Array(issueCommand(toArrayBuffer(encodeMessage({ name, args }))))) as any;
  if (reply && reply.$error) throw new Error(`host ${name}: ${reply.$error.message}`);
  return reply?.value;
}

/** Randomness from the host's CSPRNG (XS has no crypto.getRandomValues). */
export const hostRandom: Random = {
  fill(bytes: Uint8Array) {
    bytes.set(hostCall('random', bytes.length) as Uint8Array);
  },
};

export const printLog: Log = {
  debug: () => {},
  info: (m, f) => print(`info ${m} ${f ? JSON.stringify(f) : ''}`),
  warn: (m, f) => print(`warn ${m} ${f ? JSON.stringify(f) : ''}`),
  error: (m, f) => print(`error ${m} ${f ? JSON.stringify(f) : ''}`),
};

const pending = new Map<number, { done: boolean; value?: unknown; error?: unknown }>();
let nextPending = 1;

export function exposeToHost(fns: Record<string, Fn>): void {
  g.handleCommand = (ab: ArrayBuffer): ArrayBuffer => {
    let reply: unknown;
    try {
      const { name, args } = decodeMessage(new Uint8Array(ab)) as { name: string; args: unknown[] };
      if (name === '__poll') {
        const id = args[0] as number;
        const p = pending.get(id);
        if (!p) reply = serializeError(new Error(`no pending call ${id}`));
        else if (!p.done) reply = { $pending: id };
        else {
          pending.delete(id);
          reply = p.error !== undefined ? serializeError(p.error) : { value: p.value };
        }
      } else {
        const fn = fns[name];
        if (!fn) throw new Error(`no guest function ${name}`);
        const value = fn(...args);
        if (value && typeof (value as Promise<unknown>).then === 'function') {
          const id = nextPending++;
          const slot: { done: boolean; value?: unknown; error?: unknown } = { done: false };
          pending.set(id, slot);
          (value as Promise<unknown>).then(
            (v) => {
              slot.done = true;
              slot.value = v;
            },
            (e) => {
              slot.done = true;
              slot.error = e ?? new Error('rejected');
            },
          );
          reply = { $pending: id };
        } else reply = { value };
      }
    } catch (e) {
      reply = serializeError(e);
    }
    return toArrayBuffer(encodeMessage(reply));
  };
}
