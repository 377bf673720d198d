import assert from 'node:assert/strict';
import { it } from 'node:test';
import { relativeTime } from '../src/text/duration.js';

it('durations read as people say them (issue 16: a 90-day certificate does not expire "in 2 months")', () => {
  const now = new Date('2026-11-30T12:00:00Z');
  const at = (ms: number) => new Date(now.getTime() + ms);
  const day = 86400e3;
  assert.equal(relativeTime(at(90 * day - 5e3), now), 'in 90 days');
  assert.equal(relativeTime(at(24 * 3600e3), now), 'in 24 hours');
  assert.equal(relativeTime(at(-3 * day), now), '3 days ago');
  assert.equal(relativeTime(at(45 * 60e3), now), 'in 45 minutes');
  assert.equal(relativeTime(at(200 * day), now), 'in 7 months');
  assert.equal(relativeTime(at(365 * day), now), 'in 1 year');
  assert.equal(relativeTime(at(-547 * day), now), '1.5 years ago');
  assert.equal(relativeTime(at(10 * 365 * day), now), 'in 10 years');
  assert.equal(relativeTime(at(400), now), 'now');
});
