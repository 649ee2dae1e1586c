/**
 * How the key service learns of connections on stock Mosquitto
 * (docs/protocol.md §15.4): the broker's own log, published on
 * `$SYS/broker/log/<level>` when mosquitto.conf says `log_dest topic`.
 * Pure parser of the Mosquitto 2.0 lines it needs (src/handle_connect.c,
 * src/loop.c, src/handle_subscribe.c of 2.0.11, pinned against the
 * installed broker by test/stock/mosquitto-log.test.ts); anything else (and
 * any line longer than a log line can be) is ignored. A broker whose log
 * gives none of these lines is refused at start (MosquittoKeyService.start).
 */

export type LogEvent =
  | { kind: 'connect'; clientId: string; username?: string }
  | { kind: 'disconnect'; clientId: string; reason: string }
  | { kind: 'subscribe'; clientId: string; qos: number; filter: string };

const MAX_LINE = 1024;
// "1796189431: New client connected from 127.0.0.1:59370 as d1 (p2, c0, k60, u'boot@d1')."
const CONNECT = /^\d+: New client connected from \S+ as (\S+) \(p\d+, c\d, k\d+(?:, u'([^']*)')?\)\.$/;
// "1796189431: Client d1 disconnected." / "disconnected due to ..." / "disconnected, not authorised." /
// "disconnected: <strerror>." / "closed its connection." / "has exceeded timeout, disconnecting." /
// "been disconnected by administrative action." (all notice). "already connected, closing old connection." is
// logged at level error ($SYS/broker/log/E, not subscribed): the new connection's own line is what counts (§15.3).
const CLIENT = /^\d+: Client (\S+) (disconnected|closed its connection|has exceeded timeout|been disconnected by administrative action|already connected, closing old connection)/;
// src/loop.c, any other reason: "Bad socket read/write on client d1: <reason>"
const BAD_SOCKET = /^\d+: Bad socket read\/write on client (\S+): /;
// topic $SYS/broker/log/M/subscribe: "1796189431: d1 1 mqsec/down/d1"
const SUBSCRIBE = /^\d+: (\S+) (\d) (\S+)$/;

/** A line from `$SYS/broker/log/N` (notice). */
export function parseNoticeLine(line: string): LogEvent | undefined {
  if (line.length > MAX_LINE) return undefined;
  const text = line.trimEnd();
  let m = CONNECT.exec(text);
  if (m) return m[2] === undefined ? { kind: 'connect', clientId: m[1] } : { kind: 'connect', clientId: m[1], username: m[2] };
  m = CLIENT.exec(text);
  if (m) return { kind: 'disconnect', clientId: m[1], reason: m[2] };
  m = BAD_SOCKET.exec(text);
  if (m) return { kind: 'disconnect', clientId: m[1], reason: 'socket error' };
  return undefined;
}

/** A line from `$SYS/broker/log/M/subscribe`. */
export function parseSubscribeLine(line: string): LogEvent | undefined {
  if (line.length > MAX_LINE) return undefined;
  const m = SUBSCRIBE.exec(line.trimEnd());
  if (!m) return undefined;
  return { kind: 'subscribe', clientId: m[1], qos: Number(m[2]), filter: m[3] };
}
