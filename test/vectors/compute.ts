/**
 * Recomputes the protocol test vectors (docs/protocol.md §12) from their
 * inputs with the pure functions of firmware/secure only. Platform-free so the
 * same code runs under Node and inside the XS engine.
 */
import { fromHex, toHex } from '../../firmware/core/bytes.js';
import type { CryptoSuite } from '../../firmware/crypto/suite.js';
import {
  chainAdvance,
  chainNext,
  counterHintTag,
  deriveDeviceKeys,
  derivePhase1Secrets,
  kx1Tag,
  kx2Tag,
  kx3Tag,
  resumeConfirmTag,
  resumeTag,
  resumeTrafficSecret,
  trafficKeys,
  transcriptHash,
} from '../../firmware/secure/key-schedule.js';
import {
  buildCounterHint,
  buildCounterHintBody,
  buildKx1,
  buildKx1Body,
  buildKx2,
  buildKx2Body,
  buildKx3,
  buildResume,
  buildResumeBody,
  buildResumeConfirm,
  buildResumeConfirmBody,
  toTextForm,
} from '../../firmware/secure/messages.js';
import { sealEnvelope } from '../../firmware/secure/envelope.js';
import { utf8Encode } from '../../firmware/core/utf8.js';

export interface VectorInputs {
  devId: string;
  deviceKey: string;
  deviceEphemeralPrivate: string;
  serverEphemeralPrivate: string;
  kx1Counter: number;
  resumeCounter: number;
  /** N_s of the phase-2 connection (§6.4). */
  brokerNonce: string;
  /** Highest counter the broker holds when the same KX1 arrives again (§5.5). */
  hintCounter: number;
  topic: string;
  plaintext: string;
}

/** Suites whose dhKeyPair draws its private key from this fixed value. */
export type SuiteFactory = (fixedPrivate: Uint8Array) => CryptoSuite;

export function computeVectors(makeSuite: SuiteFactory, i: VectorInputs): Record<string, string> {
  const dev = makeSuite(fromHex(i.deviceEphemeralPrivate));
  const srv = makeSuite(fromHex(i.serverEphemeralPrivate));
  const keys = deriveDeviceKeys(dev, fromHex(i.deviceKey), i.devId);
  const xd = dev.dhKeyPair();
  const kx1Body = buildKx1Body(dev.id, i.kx1Counter, xd.publicKey);
  const kx1 = buildKx1(kx1Body, kx1Tag(dev, keys.authKey, i.devId, kx1Body));
  const ys = srv.dhKeyPair();
  const z = srv.dh(ys.privateKey, xd.publicKey);
  const zDevice = dev.dh(xd.privateKey, ys.publicKey);
  if (toHex(z) !== toHex(zDevice)) throw new Error('DH mismatch');
  const kx2Body = buildKx2Body(ys.publicKey);
  const th = transcriptHash(srv, i.devId, kx1, kx2Body);
  const s = derivePhase1Secrets(srv, keys.pskKey, z, th);
  const kx2 = buildKx2(kx2Body, kx2Tag(srv, s.confirmServerKey, th));
  const kx3 = buildKx3(kx3Tag(dev, s.confirmDeviceKey, th));
  const t1 = trafficKeys(dev, s.trafficSecret);
  const epoch1 = i.kx1Counter & 0xff;
  const env1 = sealEnvelope(dev, t1.deviceToBrokerKey, t1.deviceToBrokerIv, epoch1, 0, i.topic, utf8Encode(i.plaintext));
  const envDown = sealEnvelope(srv, t1.brokerToDeviceKey, t1.brokerToDeviceIv, epoch1, 1, i.topic, utf8Encode(i.plaintext));
  // Phase 2 with counter resumeCounter (> kx1Counter): chain from index kx1Counter + 1.
  const sc = chainAdvance(dev, i.kx1Counter + 1, s.chainKey, i.resumeCounter);
  const resumeBody = buildResumeBody(s.sid, i.resumeCounter);
  const resume = buildResume(resumeBody, resumeTag(dev, s.ticketAuthKey, i.devId, resumeBody));
  const ns = fromHex(i.brokerNonce);
  const t2Secret = resumeTrafficSecret(srv, sc, ns);
  const confirmBody = buildResumeConfirmBody(ns);
  const confirm = buildResumeConfirm(confirmBody, resumeConfirmTag(srv, t2Secret, confirmBody));
  const t2 = trafficKeys(dev, t2Secret);
  const hintBody = buildCounterHintBody(i.hintCounter);
  const hint = buildCounterHint(hintBody, counterHintTag(srv, keys.authKey, i.devId, kx1, hintBody));
  const epoch2 = i.resumeCounter & 0xff;
  const env2 = sealEnvelope(dev, t2.deviceToBrokerKey, t2.deviceToBrokerIv, epoch2, 0, i.topic, utf8Encode(i.plaintext));
  return {
    authKey: toHex(keys.authKey),
    pskKey: toHex(keys.pskKey),
    deviceEphemeralPublic: toHex(xd.publicKey),
    kx1: toHex(kx1),
    kx1Text: toTextForm(kx1),
    serverEphemeralPublic: toHex(ys.publicKey),
    sharedSecret: toHex(z),
    kx2: toHex(kx2),
    transcriptHash: toHex(th),
    confirmServerKey: toHex(s.confirmServerKey),
    confirmDeviceKey: toHex(s.confirmDeviceKey),
    sid: toHex(s.sid),
    ticketAuthKey: toHex(s.ticketAuthKey),
    chainKeyStart: toHex(s.chainKey),
    chainKeyStartNext: toHex(chainNext(dev, s.chainKey)),
    trafficSecret1: toHex(s.trafficSecret),
    kx3: toHex(kx3),
    phase1DeviceToBrokerKey: toHex(t1.deviceToBrokerKey),
    phase1DeviceToBrokerIv: toHex(t1.deviceToBrokerIv),
    phase1BrokerToDeviceKey: toHex(t1.brokerToDeviceKey),
    phase1BrokerToDeviceIv: toHex(t1.brokerToDeviceIv),
    phase1EnvelopeUp: toHex(env1),
    phase1EnvelopeDownSeq1: toHex(envDown),
    chainKeyAtResume: toHex(sc),
    resume: toHex(resume),
    resumeText: toTextForm(resume),
    trafficSecret2: toHex(t2Secret),
    resumeConfirm: toHex(confirm),
    counterHint: toHex(hint),
    phase2DeviceToBrokerKey: toHex(t2.deviceToBrokerKey),
    phase2DeviceToBrokerIv: toHex(t2.deviceToBrokerIv),
    phase2BrokerToDeviceKey: toHex(t2.brokerToDeviceKey),
    phase2BrokerToDeviceIv: toHex(t2.brokerToDeviceIv),
    phase2EnvelopeUp: toHex(env2),
  };
}
