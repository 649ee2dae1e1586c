import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  filterContains,
  filterOverlapsTree,
  isValidTopicFilter,
  isValidTopicName,
  topicMatches,
} from '../../broker/policy/topics.js';
import {
  BUILTIN_ROLES,
  canPublish,
  canReceive,
  canSubscribe,
  expandRuleFilter,
  validateRuleFilter,
  type Principal,
  type Role,
} from '../../broker/policy/policy.js';

const role = (name: string): Role => BUILTIN_ROLES.find((r) => r.name === name)!;
const dev = (id: string): Principal => ({ id, kind: 'device', role: role('sensor') });
const app: Principal = { id: 'backend', kind: 'account', role: role('app') };
const admin: Principal = { id: 'root', kind: 'account', role: role('admin') };

// Small alphabets make exhaustive enumeration a complete decision procedure:
// `z` is a level that appears in no filter, so it stands for "any other level".
const LITERALS = ['a', 'b', '$s', ''];
const TOPIC_LEVELS = [...LITERALS, 'z'];
const FILTER_LEVELS = [...LITERALS, '+', '#'];

function allTopics(maxLevels: number): string[] {
  let out: string[][] = TOPIC_LEVELS.map((l) => [l]);
  const all = [...out];
  for (let n = 2; n <= maxLevels; n++) {
    out = out.flatMap((p) => TOPIC_LEVELS.map((l) => [...p, l]));
    all.push(...out);
  }
  return all.map((l) => l.join('/')).filter(isValidTopicName);
}
const TOPICS = allTopics(4);

const filterArb = fc
  .array(fc.constantFrom(...FILTER_LEVELS), { minLength: 1, maxLength: 3 })
  .map((l) => l.join('/'))
  .filter(isValidTopicFilter);

describe('topic validation', () => {
  it.each(['a', 'a/b', '/', 'a//b', '$SYS/x', 'sensors/d1/temp'])('valid name %s', (t) => {
    expect(isValidTopicName(t)).toBe(true);
  });
  it.each(['', 'a/+', '#', 'a/#', 'a\u0000b', 'x'.repeat(2000)])('invalid name %j', (t) => {
    expect(isValidTopicName(t)).toBe(false);
  });
  it.each(['#', '+', 'a/+/b', 'a/#', '+/+', '/#', '$SYS/#'])('valid filter %s', (f) => {
    expect(isValidTopicFilter(f)).toBe(true);
  });
  it.each(['', 'a#', 'a/#/b', 'a+/b', 'a/b+', '##', 'a/\u0000'])('invalid filter %j', (f) => {
    expect(isValidTopicFilter(f)).toBe(false);
  });
});

describe('topic matching (MQTT 3.1.1 section 4.7)', () => {
  const cases: [string, string, boolean][] = [
    ['sport/tennis/player1/#', 'sport/tennis/player1', true],
    ['sport/tennis/player1/#', 'sport/tennis/player1/ranking', true],
    ['sport/#', 'sport', true],
    ['#', 'anything/at/all', true],
    ['sport/tennis/+', 'sport/tennis/player1', true],
    ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
    ['sport/+', 'sport', false],
    ['sport/+', 'sport/', true],
    ['+/+', '/finance', true],
    ['/+', '/finance', true],
    ['+', '/finance', false],
    ['#', '$SYS/x', false],
    ['+/monitor/Clients', '$SYS/monitor/Clients', false],
    ['$SYS/#', '$SYS/monitor/Clients', true],
    ['$SYS/monitor/+', '$SYS/monitor/Clients', true],
  ];
  it.each(cases)('%s vs %s -> %s', (f, t, m) => expect(topicMatches(f, t)).toBe(m));
});

describe('filter containment', () => {
  it('agrees with exhaustive enumeration (sound and complete)', () => {
    fc.assert(
      fc.property(filterArb, filterArb, (outer, inner) => {
        const expected = TOPICS.every((t) => !topicMatches(inner, t) || topicMatches(outer, t));
        expect(filterContains(outer, inner)).toBe(expected);
      }),
      { numRuns: 3000 },
    );
  });
  it('agrees with exhaustive enumeration for every pair of filters up to 3 levels', () => {
    const filters: string[] = [];
    let layer: string[][] = FILTER_LEVELS.map((l) => [l]);
    for (let n = 1; n <= 3; n++) {
      filters.push(...layer.map((l) => l.join('/')).filter(isValidTopicFilter));
      layer = layer.flatMap((p) => FILTER_LEVELS.map((l) => [...p, l]));
    }
    const matchSets = new Map(filters.map((f) => [f, TOPICS.filter((t) => topicMatches(f, t))]));
    const wrong: string[] = [];
    for (const outer of filters) {
      for (const inner of filters) {
        const expected = matchSets.get(inner)!.every((t) => topicMatches(outer, t));
        if (filterContains(outer, inner) !== expected) wrong.push(`${outer} ⊇ ${inner}: expected ${expected}`);
      }
    }
    expect(wrong).toEqual([]);
  });
  it('overlap with a tree agrees with enumeration', () => {
    fc.assert(
      fc.property(filterArb, fc.constantFrom('a', '$s', 'a/b', '$s/a'), (filter, root) => {
        const expected = TOPICS.some((t) => (t === root || t.startsWith(root + '/')) && topicMatches(filter, t));
        expect(filterOverlapsTree(filter, root)).toBe(expected);
      }),
      { numRuns: 2000 },
    );
  });
  it.each<[string, string, boolean]>([
    ['#', '#', true],
    ['#', '$SYS/#', false],
    ['sensors/#', 'sensors/+/temp', true],
    ['sensors/+/temp', 'sensors/#', false],
    ['sensors/d1/#', 'sensors/+/#', false],
    ['a/+', 'a/#', false],
    ['a/#', 'a', true],
    ['+/x', '$SYS/x', false],
    ['+/#', '#', true],
    ['/+/#', '/#', true],
    ['+/+/#', '/#', true],
    ['a/+/#', 'a/#', false],
  ])('%s contains %s -> %s', (o, i, r) => expect(filterContains(o, i)).toBe(r));
});

describe('policy: built-in roles', () => {
  it('sensor publishes only below its own sensors/<id>', () => {
    const d = dev('d1');
    expect(canPublish(d, 'sensors/d1/temp')).toBe(true);
    expect(canPublish(d, 'sensors/d1')).toBe(true);
    expect(canPublish(d, 'sensors/d2/temp')).toBe(false);
    expect(canPublish(d, 'sensors/d10/temp')).toBe(false);
    expect(canPublish(d, 'cmd/d1/x')).toBe(false);
    expect(canPublish(d, '$mqsec/kx/d1')).toBe(false);
    expect(canPublish(d, '$SYS/x')).toBe(false);
  });
  it('sensor subscribes only inside cmd/<id>', () => {
    const d = dev('d1');
    expect(canSubscribe(d, 'cmd/d1/#')).toBe(true);
    expect(canSubscribe(d, 'cmd/d1/+')).toBe(true);
    expect(canSubscribe(d, 'cmd/+/#')).toBe(false);
    expect(canSubscribe(d, 'cmd/#')).toBe(false);
    expect(canSubscribe(d, '#')).toBe(false);
    expect(canSubscribe(d, '+/d1/#')).toBe(false);
    expect(canSubscribe(d, 'sensors/d1/#')).toBe(false);
    expect(canReceive(d, 'cmd/d1/led')).toBe(true);
    expect(canReceive(d, 'cmd/d2/led')).toBe(false);
  });
  it('app reads all sensors, commands all devices, never $mqsec', () => {
    expect(canSubscribe(app, 'sensors/#')).toBe(true);
    expect(canSubscribe(app, 'sensors/+/temp')).toBe(true);
    expect(canSubscribe(app, '#')).toBe(false);
    expect(canSubscribe(app, '$mqsec/#')).toBe(false);
    expect(canPublish(app, 'cmd/d1/led')).toBe(true);
    expect(canPublish(app, 'sensors/d1/temp')).toBe(false);
  });
  it('admin does everything except $mqsec', () => {
    expect(canSubscribe(admin, '#')).toBe(true);
    expect(canSubscribe(admin, '$SYS/#')).toBe(true);
    expect(canSubscribe(admin, '$mqsec/#')).toBe(false);
    expect(canSubscribe(admin, '$mqsec/kx/+')).toBe(false);
    expect(canSubscribe(admin, '$mqsec')).toBe(false);
    expect(canPublish(admin, 'anything/x')).toBe(true);
    expect(canPublish(admin, '$mqsec/kx/d1')).toBe(false);
    expect(canReceive(admin, '$mqsec/kx/d1')).toBe(false);
  });
  it('no principal can ever touch $mqsec (property)', () => {
    const roles = BUILTIN_ROLES;
    fc.assert(
      fc.property(
        fc.constantFrom(...roles),
        fc.array(fc.constantFrom('$mqsec', 'kx', 'd1', '+', '#', 'a'), { minLength: 1, maxLength: 4 }),
        (r, levels) => {
          const p: Principal = { id: 'd1', kind: 'device', role: r };
          const s = levels.join('/');
          if (s === '$mqsec' || s.startsWith('$mqsec/')) {
            expect(canPublish(p, s)).toBe(false);
            expect(canReceive(p, s)).toBe(false);
          }
          if (isValidTopicFilter(s) && filterOverlapsTree(s, '$mqsec')) expect(canSubscribe(p, s)).toBe(false);
        },
      ),
    );
  });
  it('a granted subscription only ever receives allowed topics (property)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...BUILTIN_ROLES), filterArb, (r, filter) => {
        const p: Principal = { id: 'a', kind: 'device', role: r };
        if (!canSubscribe(p, filter)) return;
        for (const t of TOPICS) if (topicMatches(filter, t)) expect(canReceive(p, t)).toBe(true);
      }),
    );
  });
});

describe('rules', () => {
  it('%u substitution refuses ids with topic syntax', () => {
    expect(expandRuleFilter('sensors/%u/#', 'd1')).toBe('sensors/d1/#');
    expect(expandRuleFilter('sensors/%u/#', 'a/b')).toBeUndefined();
    expect(expandRuleFilter('sensors/%u/#', '+')).toBeUndefined();
    expect(expandRuleFilter('sensors/%u/#', '#')).toBeUndefined();
    expect(canPublish({ id: '#', kind: 'device', role: role('sensor') }, 'sensors/x/y')).toBe(false);
  });
  it('rules cannot name the protocol tree', () => {
    expect(validateRuleFilter('$mqsec/#')).toMatch(/reserved/);
    expect(validateRuleFilter('$mqsec/kx/%u')).toMatch(/reserved/);
    expect(validateRuleFilter('#')).toBeUndefined();
    expect(validateRuleFilter('a/#/b')).toMatch(/valid/);
    expect(validateRuleFilter('x/%u/#')).toBeUndefined();
  });
  it('deny by default: a role without rules can do nothing', () => {
    const p: Principal = { id: 'n', kind: 'account', role: { name: 'none', plaintext: false, rules: [] } };
    expect(canPublish(p, 'a')).toBe(false);
    expect(canSubscribe(p, 'a')).toBe(false);
    expect(canReceive(p, 'a')).toBe(false);
  });
});
