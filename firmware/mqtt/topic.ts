/**
 * Topic name and topic filter rules of MQTT 3.1.1 section 4.7. Shared by the
 * encoder (refuse to send what a peer must reject) and the decoder (refuse
 * what a peer must not send).
 */
import { fail } from '../core/errors.js';

/** A PUBLISH topic: at least one character, no wildcards [MQTT-3.3.2-2], [MQTT-4.7.3-1]. */
export function checkTopicName(topic: string): void {
  if (typeof topic !== 'string') fail('MALFORMED', 'topic name must be a string');
  if (topic.length === 0) fail('PROTOCOL_VIOLATION', 'empty topic name');
  if (topic.indexOf('+') >= 0 || topic.indexOf('#') >= 0) fail('PROTOCOL_VIOLATION', 'wildcard in topic name');
}

/**
 * A SUBSCRIBE/UNSUBSCRIBE filter: non-empty; '+' fills a whole level; '#'
 * fills a whole level and is the last one [MQTT-4.7.1-2], [MQTT-4.7.1-3].
 */
export function checkTopicFilter(filter: string): void {
  if (typeof filter !== 'string') fail('MALFORMED', 'topic filter must be a string');
  if (filter.length === 0) fail('PROTOCOL_VIOLATION', 'empty topic filter');
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.indexOf('#') >= 0 && (level !== '#' || i !== levels.length - 1)) {
      fail('PROTOCOL_VIOLATION', "'#' must be a whole last level");
    }
    if (level.indexOf('+') >= 0 && level !== '+') fail('PROTOCOL_VIOLATION', "'+' must be a whole level");
  }
}

/**
 * Does `filter` match `topic`? Section 4.7: wildcards at the first level do
 * not match topics starting with '$' [MQTT-4.7.2-1].
 */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.charCodeAt(0) === 0x24 /* $ */ && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}
