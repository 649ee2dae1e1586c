/**
 * MQTT 3.1.1 control packets as plain typed objects (OASIS MQTT Version 3.1.1,
 * section 3). Field names follow mqtt-packet where it makes sense, so host-side
 * code can compare the two codecs field by field; binary fields are
 * Uint8Array, never strings or Buffers.
 */

export type QoS = 0 | 1 | 2;

/** Packet type numbers of the fixed header (section 2.2.1). */
export const PacketType = Object.freeze({
  connect: 1,
  connack: 2,
  publish: 3,
  puback: 4,
  pubrec: 5,
  pubrel: 6,
  pubcomp: 7,
  subscribe: 8,
  suback: 9,
  unsubscribe: 10,
  unsuback: 11,
  pingreq: 12,
  pingresp: 13,
  disconnect: 14,
} as const);

export type PacketTypeName = keyof typeof PacketType;

export interface Will {
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
}

export interface ConnectPacket {
  type: 'connect';
  clientId: string;
  cleanSession: boolean;
  /** Seconds; 0 disables keepalive. */
  keepalive: number;
  username?: string;
  /** Binary: mqsec carries its KX1 / resume tokens here. */
  password?: Uint8Array;
  will?: Will;
}

/** CONNACK return codes (section 3.2.2.3). */
export const ConnackReturnCode = Object.freeze({
  accepted: 0,
  unacceptableProtocolVersion: 1,
  identifierRejected: 2,
  serverUnavailable: 3,
  badUsernameOrPassword: 4,
  notAuthorized: 5,
} as const);

export interface ConnackPacket {
  type: 'connack';
  sessionPresent: boolean;
  /** 0 accepted, 1..5 refused (see ConnackReturnCode). */
  returnCode: number;
}

export interface PublishPacket {
  type: 'publish';
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  dup: boolean;
  retain: boolean;
  /** Present exactly when qos > 0. */
  messageId?: number;
}

/** The four acknowledgements that carry only a packet identifier. */
export interface PubackPacket {
  type: 'puback';
  messageId: number;
}
export interface PubrecPacket {
  type: 'pubrec';
  messageId: number;
}
export interface PubrelPacket {
  type: 'pubrel';
  messageId: number;
}
export interface PubcompPacket {
  type: 'pubcomp';
  messageId: number;
}

export interface Subscription {
  topic: string;
  qos: QoS;
}

export interface SubscribePacket {
  type: 'subscribe';
  messageId: number;
  subscriptions: Subscription[];
}

/** SUBACK return code for a refused subscription. */
export const SUBACK_FAILURE = 0x80;

export interface SubackPacket {
  type: 'suback';
  messageId: number;
  /** One per requested filter: the granted QoS 0..2, or 0x80 (failure). */
  granted: number[];
}

export interface UnsubscribePacket {
  type: 'unsubscribe';
  messageId: number;
  unsubscriptions: string[];
}

export interface UnsubackPacket {
  type: 'unsuback';
  messageId: number;
}

export interface PingreqPacket {
  type: 'pingreq';
}
export interface PingrespPacket {
  type: 'pingresp';
}
export interface DisconnectPacket {
  type: 'disconnect';
}

export type MqttPacket =
  | ConnectPacket
  | ConnackPacket
  | PublishPacket
  | PubackPacket
  | PubrecPacket
  | PubrelPacket
  | PubcompPacket
  | SubscribePacket
  | SubackPacket
  | UnsubscribePacket
  | UnsubackPacket
  | PingreqPacket
  | PingrespPacket
  | DisconnectPacket;

/** Largest string or binary field: a 16-bit length prefix (section 1.5.3). */
export const MAX_FIELD_LENGTH = 0xffff;
