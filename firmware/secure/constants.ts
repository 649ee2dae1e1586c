/**
 * Protocol constants (docs/protocol.md §2). One place, shared by the device,
 * the broker and the tests.
 */
export const PROTOCOL_VERSION = 1;

/** Header byte = version << 4 | message type (§2.2). */
export const MSG_KX1 = 0x11;
export const MSG_KX2 = 0x12;
export const MSG_KX3 = 0x13;
export const MSG_RESUME = 0x14;

/** The one topic carrying KX2 and KX3 (§5.3). The broker knows the device from the connection. */
export const KX_TOPIC = '$mqsec/kx';
/** Reserved to the protocol: never routed by the broker (§2.4). */
export const RESERVED_PREFIX = '$mqsec/';
/** First character of the text form of a password (§3). Not in the base64url alphabet. */
export const TEXT_MARKER = '~';

export const TAG_LENGTH = 16;
export const SID_LENGTH = 8;
export const DEVICE_KEY_LENGTH = 32;
export const DEV_ID_MAX_BYTES = 23;
/** Device counter range (§2.3): varint of at most 5 bytes keeps the phase-2 CONNECT <= 64 B. */
export const COUNTER_MAX = 0xffffffff;
/** Envelope sequence numbers per connection per direction (§8.3): varint <= 3 bytes keeps overhead <= 20 B. */
export const SEQ_LIMIT = 0x200000;

/** Default envelope replay window (§8.4). */
export const DEFAULT_REPLAY_WINDOW = 64;
/** Longest binary password accepted before any parsing (§9.1); KX1 is at most 55 B. */
export const DEFAULT_MAX_PASSWORD_BYTES = 128;
