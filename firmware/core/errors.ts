/**
 * Typed errors. Every failure that crosses a module boundary is an MqsecError
 * with a stable `code`, so callers (and tests) branch on codes, never on
 * message text, and a security failure never leaks which secret check failed
 * beyond its code.
 */
export type ErrorCode =
  // framing / parsing
  | 'MALFORMED'
  | 'OVERSIZE'
  | 'TRUNCATED'
  | 'UNKNOWN_TYPE'
  | 'INVALID_UTF8'
  | 'PROTOCOL_VIOLATION'
  // connection
  | 'TIMEOUT'
  | 'CONNECTION_CLOSED'
  | 'CONNECTION_REFUSED'
  | 'NOT_CONNECTED'
  | 'QUEUE_FULL'
  // security
  | 'BAD_VERSION'
  | 'BAD_SUITE'
  | 'BAD_MAC'
  | 'BAD_KEY'
  | 'REPLAY'
  | 'COUNTER_ROLLBACK'
  | 'UNKNOWN_SESSION'
  | 'EXPIRED'
  | 'REVOKED'
  | 'DOWNGRADE'
  | 'DECRYPT_FAILED'
  | 'BAD_STATE'
  | 'NONCE_EXHAUSTED'
  | 'RATE_LIMITED'
  | 'NOT_AUTHORIZED'
  // platform
  | 'STORAGE'
  | 'RANDOM'
  | 'INTERNAL';

export class MqsecError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.code = code;
    // Not `this.name = ...`: when modules are preloaded on Moddable (or under SES) Error.prototype is
    // frozen, and assigning over its read-only `name` throws (the "override mistake").
    Object.defineProperty(this, 'name', { value: 'MqsecError', writable: true, configurable: true, enumerable: false });
  }
}

export function fail(code: ErrorCode, message: string): never {
  throw new MqsecError(code, message);
}

export function isMqsecError(e: unknown, code?: ErrorCode): e is MqsecError {
  return e instanceof MqsecError && (code === undefined || e.code === code);
}

/** Wraps anything thrown into an MqsecError so event handlers never rethrow foreign errors. */
export function asMqsecError(e: unknown, fallback: ErrorCode = 'INTERNAL'): MqsecError {
  if (e instanceof MqsecError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new MqsecError(fallback, msg);
}
