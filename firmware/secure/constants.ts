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
/** Broker confirmation of a phase-2 connection, carrying the broker nonce (§6.4). */
export const MSG_RESUME_CONFIRM = 0x17;
/** Broker answer to a KX1 whose MAC verified but whose counter was used: the counter to jump past (§5.5). */
export const MSG_COUNTER_HINT = 0x18;

/** The one topic carrying KX2, KX3, the resume confirmation and the counter hint (§2.4). The broker knows the device from the connection. */
export const KX_TOPIC = '$mqsec/kx';
/** Reserved to the protocol: never routed by the broker (§2.4). */
export const RESERVED_PREFIX = '$mqsec/';
/** First character of the text form of a password (§3). Not in the base64url alphabet. */
export const TEXT_MARKER = '~';

export const TAG_LENGTH = 16;
/** Ticket id (§4.3): selects one of a device's few tickets; 4 bytes keep phase 2 <= 100 B (§13). */
export const SID_LENGTH = 4;
/** Broker nonce of a phase-2 connection (§6.4): fresh per accepted RESUME, mixed into the traffic keys. */
export const BROKER_NONCE_LENGTH = 6;
/**
 * Counter values one ticket serves (§6.5): chainStart .. chainStart + 1023
 * (32 counter blocks of 32). Bounds what a flash dump of the ticket exposes;
 * past it the device runs phase 1 (fresh X25519) and the broker refuses the
 * old ticket (EXPIRED).
 */
export const TICKET_COUNTER_SPAN = 1024;
export const DEVICE_KEY_LENGTH = 32;
export const DEV_ID_MAX_BYTES = 23;
/** Device counter range (§2.3): varint of at most 5 bytes keeps phase 2 <= 100 B (§13). */
export const COUNTER_MAX = 0xffffffff;
/** Envelope sequence numbers per connection per direction (§8.3): varint <= 3 bytes keeps overhead <= 20 B. */
export const SEQ_LIMIT = 0x200000;

/** Default envelope replay window (§8.4). */
export const DEFAULT_REPLAY_WINDOW = 64;
/** Longest binary password accepted before any parsing (§9.1); KX1 is at most 55 B. */
export const DEFAULT_MAX_PASSWORD_BYTES = 128;
