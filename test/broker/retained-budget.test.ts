/** The retained-message bookkeeping (broker/limits/retained-budget.ts) on its own. */
import { describe, expect, it } from 'vitest';
import { RESTORED_OWNER, RetainedBudget, retainedCost } from '../../broker/limits/retained-budget.js';

const limits = { perOwnerCount: 2, perOwnerBytes: 100, totalCount: 3, totalBytes: 150 };

describe('RetainedBudget', () => {
  it('per-owner count: the third topic is refused, replacing one of the two is not', () => {
    const b = new RetainedBudget(limits);
    b.store('a', 't/1', 5);
    b.store('a', 't/2', 5);
    expect(b.check('a', 't/3', 5)).toBe('owner-count');
    expect(b.check('a', 't/1', 10)).toBeUndefined(); // a replacement adds no message
    expect(b.check('b', 't/3', 5)).toBeUndefined(); // another owner has its own count
  });

  it('per-owner bytes: a replacement is charged the difference, topic included', () => {
    const b = new RetainedBudget(limits);
    b.store('a', 't/1', 90); // 93 bytes
    expect(b.usage('a')).toEqual({ count: 1, bytes: retainedCost('t/1', 90) });
    expect(b.check('a', 't/2', 5)).toBe('owner-bytes'); // 93 + 8 > 100
    expect(b.check('a', 't/1', 97)).toBeUndefined(); // 100: exactly the limit
    expect(b.check('a', 't/1', 98)).toBe('owner-bytes');
    b.store('a', 't/1', 10);
    expect(b.usage('a')).toEqual({ count: 1, bytes: 13 });
    expect(b.check('a', 't/2', 5)).toBeUndefined();
  });

  it('global limits across owners', () => {
    const b = new RetainedBudget(limits);
    b.store('a', 'a/1', 60);
    b.store('b', 'b/1', 60);
    expect(b.check('c', 'c/1', 40)).toBe('total-bytes'); // 63 + 63 + 43 > 150
    b.store('c', 'c/1', 10);
    expect(b.check('c', 'c/2', 1)).toBe('total-count');
    expect(b.totals()).toEqual({ count: 3, bytes: 139 });
  });

  it('an empty payload clears and frees the budget (and is never refused)', () => {
    const b = new RetainedBudget(limits);
    b.store('a', 't/1', 5);
    b.store('a', 't/2', 5);
    expect(b.check('a', 't/9', 0)).toBeUndefined();
    b.store('a', 't/1', 0);
    expect(b.usage('a')).toEqual({ count: 1, bytes: 8 });
    expect(b.check('a', 't/3', 5)).toBeUndefined();
    b.clear('t/2');
    expect(b.usage('a')).toEqual({ count: 0, bytes: 0 });
    expect(b.totals()).toEqual({ count: 0, bytes: 0 });
  });

  it('replacing another owner\'s message frees its budget and charges the new owner', () => {
    const b = new RetainedBudget(limits);
    b.store('a', 'shared', 50);
    b.store('b', 'shared', 20);
    expect(b.usage('a')).toEqual({ count: 0, bytes: 0 });
    expect(b.usage('b')).toEqual({ count: 1, bytes: 26 });
    expect(b.totals()).toEqual({ count: 1, bytes: 26 });
  });

  it('messages found at start count globally only, until replaced', () => {
    const b = new RetainedBudget(limits);
    b.store(RESTORED_OWNER, 'old/1', 50);
    b.store(RESTORED_OWNER, 'old/2', 50);
    expect(b.check('a', 'a/1', 50)).toBe('total-bytes');
    expect(b.check('a', 'old/1', 50)).toBeUndefined(); // replacing one frees it
    b.store('a', 'old/1', 50);
    expect(b.usage(RESTORED_OWNER)).toEqual({ count: 1, bytes: 55 });
    expect(b.usage('a')).toEqual({ count: 1, bytes: 55 });
  });
});
