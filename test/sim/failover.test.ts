/**
 * The simulated devices' node failover (host-sim/fleet/failover.ts), over a
 * fake transport whose "dead" nodes refuse at once.
 */
import { describe, expect, it } from 'vitest';
import { MqsecError } from '../../firmware/core/errors.js';
import type { Endpoint, Transport, TransportEvents } from '../../firmware/core/platform.js';
import { FailoverTransport } from '../../host-sim/fleet/failover.js';

const nodes: Endpoint[] = [1, 2, 3].map((i) => ({ host: '127.0.0.1', port: 1000 + i }));

function fakeNet(dead: Set<number>): Transport & { dialed: number[] } {
  const dialed: number[] = [];
  return {
    dialed,
    connect(ep: Endpoint, ev: TransportEvents) {
      dialed.push(ep.port);
      queueMicrotask(() => (dead.has(ep.port) ? ev.onClose(new MqsecError('CONNECTION_CLOSED', 'refused')) : ev.onConnect()));
      return { write: () => {}, close: () => ev.onClose() };
    },
  };
}

function dial(t: Transport): Promise<'up' | 'failed'> {
  return new Promise((resolve) => t.connect({ host: 'ignored', port: 1 }, { onConnect: () => resolve('up'), onData: () => {}, onClose: (e) => resolve(e ? 'failed' : 'up') }));
}

describe('FailoverTransport', () => {
  it('starts on its home node (round robin by index), moves on within the same connect when it is down, and stays there', async () => {
    const dead = new Set([1002]);
    const net = fakeNet(dead);
    let t = 0;
    const f = new FailoverTransport(net, nodes, 4, undefined, 30_000, () => t); // index 4 -> home node 2 (1002)
    expect(await dial(f)).toBe('up');
    expect(net.dialed).toEqual([1002, 1003]);
    dead.delete(1002); // home is back, but not yet tried again
    t = 10_000;
    expect(await dial(f)).toBe('up');
    expect(net.dialed.at(-1)).toBe(1003);
    t = 31_000; // homeRetryMs after the move: home first again
    expect(await dial(f)).toBe('up');
    expect(net.dialed.at(-1)).toBe(1002);
  });

  it('every node down: one failed connect after trying each once; the next one goes on after the last node tried', async () => {
    const net = fakeNet(new Set([1001, 1002, 1003]));
    const f = new FailoverTransport(net, nodes, 0, undefined, 30_000, () => 0);
    expect(await dial(f)).toBe('failed');
    expect(net.dialed).toEqual([1001, 1002, 1003]);
    expect(await dial(f)).toBe('failed');
    expect(net.dialed.slice(3)).toEqual([1001, 1002, 1003]);
  });
});
