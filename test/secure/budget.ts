/**
 * Counts the real MQTT bytes of a connect with the firmware MQTT 3.1.1 codec
 * (fixed header and length prefixes included), for the byte budgets of
 * docs/protocol.md §13.
 */
import { encodeConnack, encodeConnect, encodePublish } from '../../firmware/mqtt/codec.js';
import { KX_TOPIC } from '../../firmware/secure/constants.js';

export const KEEPALIVE = 60;

export function connectBytes(clientId: string, username: string, password: Uint8Array): number {
  return encodeConnect({ type: 'connect', clientId, cleanSession: true, keepalive: KEEPALIVE, username, password }).length;
}
export function connackBytes(): number {
  return encodeConnack({ type: 'connack', sessionPresent: false, returnCode: 0 }).length;
}
export function kxPublishBytes(payload: Uint8Array): number {
  return encodePublish({ type: 'publish', topic: KX_TOPIC, payload, qos: 0, dup: false, retain: false }).length;
}
