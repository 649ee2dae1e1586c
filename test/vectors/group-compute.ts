/**
 * Recomputes the group-key test vectors (docs/protocol.md §14.9) from their
 * inputs with the pure functions of firmware/secure/group.ts only.
 * Platform-free: the same code runs under Node and inside the XS engine.
 */
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import { utf8Encode } from '../../firmware/core/utf8.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import { trafficKeys } from '../../firmware/secure/key-schedule.js';
import {
  ChannelSender,
  GROUP_READER,
  GROUP_WRITER,
  buildGroupKeyRequest,
  deliveryKeys,
  deriveKeyServiceKey,
  encodeGroupDelivery,
  groupSenderKeys,
  sealGroupDelivery,
  sealGroupEnvelope,
} from '../../firmware/secure/group.js';

export interface GroupVectorInputs {
  memberId: string;
  principalKey: string;
  groupFilter: string;
  groupKey: string;
  epoch: number;
  writers: string[];
  slot: number;
  seq: number;
  topic: string;
  plaintext: string;
  trafficSecret: string;
  /** channel counter of the wrapped PUBLISH (the sender wraps cseq + 1 PUBLISHes, the last is the vector) */
  cseq: number;
  memberNonce: string;
  serviceNonce: string;
  seqBase: number;
  seqLimit: number;
  dseq: number;
}

export function computeGroupVectors(suite: CryptoSuite, i: GroupVectorInputs): Record<string, string> {
  const ks = deriveKeyServiceKey(suite, fromHex(i.principalKey), i.memberId);
  const snd = groupSenderKeys(suite, fromHex(i.groupKey), i.groupFilter, i.epoch, i.slot);
  const genv = sealGroupEnvelope(suite, snd, i.slot, i.epoch, i.seq, i.topic, utf8Encode(i.plaintext));
  const t = trafficKeys(suite, fromHex(i.trafficSecret));
  const ch = new ChannelSender(suite, t.channelKey.slice());
  let wrapped: Uint8Array = new Uint8Array(0);
  for (let c = 0; c <= i.cseq; c++) wrapped = ch.wrap(i.topic, genv);
  const req = buildGroupKeyRequest(suite, ks, i.memberId, fromHex(i.memberNonce));
  const body = encodeGroupDelivery({
    seqBase: i.seqBase,
    seqLimit: i.seqLimit,
    groups: [
      { filter: i.groupFilter, flags: GROUP_READER | GROUP_WRITER, epoch: i.epoch, groupKey: fromHex(i.groupKey), writers: i.writers },
      { filter: 'gone/#', flags: 0, epoch: 0, groupKey: new Uint8Array(0), writers: [] },
    ],
  });
  const dk = deliveryKeys(suite, ks, i.memberId, fromHex(i.memberNonce), fromHex(i.serviceNonce));
  const del = sealGroupDelivery(suite, dk, fromHex(i.serviceNonce), i.dseq, i.memberId, body);
  return {
    keyServiceKey: toHex(ks),
    senderKey: toHex(snd.key),
    senderIv: toHex(snd.iv),
    groupEnvelope: toHex(genv),
    channelKey: toHex(t.channelKey),
    channelPayload: toHex(wrapped),
    keyRequest: toHex(req),
    deliveryKey: toHex(dk.key),
    deliveryIv: toHex(dk.iv),
    deliveryBody: toHex(body),
    keyDelivery: toHex(del),
  };
}
