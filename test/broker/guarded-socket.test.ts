/**
 * The slow-consumer bound of one connection can be raised (the key service
 * link is sent the whole policy in one frame, broker/keyservice-link.ts):
 * a peer that stops reading is cut off at the bound, and not once the bound
 * of that one connection was raised above what is queued.
 */
import { describe, it, expect } from 'vitest';
import net from 'node:net';
import { GuardedSocket, type RejectReason } from '../../broker/limits/guarded-socket.js';

async function stalledPair(bound: number, raiseTo?: number) {
  const rejects: RejectReason[] = [];
  let guarded!: GuardedSocket;
  const server = net.createServer((s) => {
    guarded = new GuardedSocket(s, { maxPacketSize: 1024, packetTimeoutMs: 60_000, maxOutgoingBytes: bound, onReject: (r) => rejects.push(r) });
    if (raiseTo !== undefined) guarded.raiseOutgoingBound(raiseTo);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  peer.pause(); // reads nothing: everything written piles up
  await new Promise<void>((r) => peer.once('connect', () => r()));
  while (!guarded) await new Promise((r) => setTimeout(r, 5));
  const chunk = Buffer.alloc(256 * 1024, 1);
  for (let i = 0; i < 64 && rejects.length === 0 && !guarded.destroyed; i++) {
    guarded.write(chunk);
    await new Promise((r) => setImmediate(r));
  }
  peer.destroy();
  guarded.destroy();
  server.close();
  return rejects;
}

describe('GuardedSocket outgoing bound', () => {
  it('a peer that stops reading is cut off at the bound (16 MiB written, bound 1 MiB)', async () => {
    expect(await stalledPair(1024 * 1024)).toEqual(['slow-consumer']);
  });
  it('raised for one connection (to 64 MiB), the same 16 MiB stay queued', async () => {
    expect(await stalledPair(1024 * 1024, 64 * 1024 * 1024)).toEqual([]);
  });
});
