/**
 * MQTT 3.1.1 topic names and topic filters as pure functions: validation,
 * matching (section 4.7) and filter containment, the basis of the broker's
 * deny-by-default policy.
 *
 * Containment answers "is every topic name that filter F can match also
 * matched by filter R?". A subscription is granted only when that holds for
 * one allow rule, so `#`, `+` and `$`-topics cannot widen a grant.
 */

/** Longest topic the policy accepts, in UTF-16 units (MQTT allows 65535 bytes; we keep the limit tighter). */
export const MAX_TOPIC_LENGTH = 1024;
export const MAX_TOPIC_LEVELS = 32;

export function splitLevels(topic: string): string[] {
  return topic.split('/');
}

/** A valid topic *name* (PUBLISH): non-empty, no wildcards, no NUL, bounded. */
export function isValidTopicName(topic: string): boolean {
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > MAX_TOPIC_LENGTH) return false;
  if (topic.includes('\u0000') || topic.includes('+') || topic.includes('#')) return false;
  return splitLevels(topic).length <= MAX_TOPIC_LEVELS;
}

/** A valid topic *filter* (SUBSCRIBE): `+` fills a whole level, `#` only as the whole last level. */
export function isValidTopicFilter(filter: string): boolean {
  if (typeof filter !== 'string' || filter.length === 0 || filter.length > MAX_TOPIC_LENGTH) return false;
  if (filter.includes('\u0000')) return false;
  const levels = splitLevels(filter);
  if (levels.length > MAX_TOPIC_LEVELS) return false;
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return false;
    if (level.includes('+') && level !== '+') return false;
  }
  return true;
}

/** True when the first level is a wildcard: such filters never match `$`-topics [MQTT-4.7.2-1]. */
function startsWithWildcard(levels: string[]): boolean {
  return levels[0] === '+' || levels[0] === '#';
}

/** Does `filter` match topic name `topic`? Both assumed valid. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = splitLevels(filter);
  const t = splitLevels(topic);
  if (topic.startsWith('$') && startsWithWildcard(f)) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i]!;
    if (level === '#') return true; // also matches the parent level: `a/#` matches `a`
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/**
 * Is every topic name matched by `inner` also matched by `outer`? Both must be
 * valid filters. Exact (sound and complete) for single filters; checked
 * against brute-force enumeration in the tests.
 */
export function filterContains(outer: string, inner: string): boolean {
  const r = splitLevels(outer);
  const f = splitLevels(inner);
  // `$` rule: a wildcard-first outer filter matches no `$`-topic, so it cannot
  // contain an inner filter whose first level is a literal starting with `$`.
  if (startsWithWildcard(r) && !startsWithWildcard(f) && f[0]!.startsWith('$')) return false;
  // Conversely a literal-first outer filter never contains a wildcard-first
  // inner one (the inner matches arbitrary first levels); handled below.
  for (let i = 0; ; i++) {
    const rl = r[i];
    const fl = f[i];
    if (rl === '#') return true;
    if (fl === undefined) return rl === undefined;
    if (rl === undefined) return false;
    if (fl === '#') {
      // Inner matches every suffix from here on, including the empty one (the
      // parent level) unless that parent would be the empty topic name, which
      // is invalid: at level 0, and at level 1 after an empty first level
      // (`/#` cannot match ""). Where the parent cannot occur, `+/#` covers
      // the same names as `#`.
      const parentImpossible = i === 0 || (i === 1 && f[0] === '');
      return parentImpossible && rl === '+' && r.length === i + 2 && r[i + 1] === '#';
    }
    if (fl === '+') {
      if (rl !== '+') return false;
      continue;
    }
    if (rl !== '+' && rl !== fl) return false;
  }
}

/**
 * Could `filter` match some topic under `prefix/#`, i.e. do the two overlap?
 * Used to keep every subscription away from reserved trees such as `$mqsec`.
 */
export function filterOverlapsTree(filter: string, root: string): boolean {
  const f = splitLevels(filter);
  const r = splitLevels(root);
  if (root.startsWith('$') && startsWithWildcard(f)) return false;
  for (let i = 0; i < r.length; i++) {
    const fl = f[i];
    if (fl === undefined) return false;
    if (fl === '#') return true;
    if (fl !== '+' && fl !== r[i]) return false;
  }
  return true;
}

/** Is topic name `topic` inside the tree `root` (the root itself or below it)? */
export function topicInTree(topic: string, root: string): boolean {
  return topic === root || topic.startsWith(root + '/');
}

/** Do two valid filters match at least one common topic name? (`a/#` also matches `a`.) */
export function filtersOverlap(a: string, b: string): boolean {
  const x = splitLevels(a);
  const y = splitLevels(b);
  if ((a.startsWith('$') && startsWithWildcard(y)) || (b.startsWith('$') && startsWithWildcard(x))) return false;
  for (let i = 0; ; i++) {
    const p = x[i];
    const q = y[i];
    if (p === '#' || q === '#') return true;
    if (p === undefined || q === undefined) return p === q;
    if (p !== '+' && q !== '+' && p !== q) return false;
  }
}
