import { MtlsError } from '../errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3, y: 365 * 86400e3 };

/** Parses `500ms`, `90d`, `12h`, `1y`, `30m`, `1w`, or a combination such as `1d12h`, into milliseconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const t = text.trim();
  const re = /(\d+)(ms|[smhdwy])/gy;
  let total = 0;
  let consumed = 0;
  for (const m of t.matchAll(re)) {
    total += Number(m[1]) * UNIT_MS[m[2] as string]!;
    consumed += m[0].length;
  }
  if (t.length === 0 || consumed !== t.length || !Number.isSafeInteger(total)) {
    throw new MtlsError('BAD_DURATION', `${what} '${text}' is not a duration; use a number with a unit, e.g. 90d, 12h, 1y, 30m`);
  }
  if (total <= 0) throw new MtlsError('BAD_DURATION', `${what} '${text}' must be longer than zero`);
  return total;
}

/** "in 3 days", "2 hours ago": a human distance between `when` and `now`. */
export function relativeTime(when: Date, now: Date): string {
  const diff = when.getTime() - now.getTime();
  const abs = Math.abs(diff);
  const steps: [number, string][] = [
    [365 * 86400e3, 'year'], [30 * 86400e3, 'month'], [86400e3, 'day'], [3600e3, 'hour'], [60e3, 'minute'], [1e3, 'second'],
  ];
  let phrase = 'now';
  for (const [ms, unit] of steps) {
    if (abs >= ms) {
      const n = Math.floor(abs / ms);
      phrase = `${n} ${unit}${n === 1 ? '' : 's'}`;
      break;
    }
  }
  if (phrase === 'now') return 'now';
  return diff >= 0 ? `in ${phrase}` : `${phrase} ago`;
}

/** ISO-8601 to the minute, UTC: `2026-11-24T10:00Z`. */
export function shortTime(d: Date): string {
  return d.toISOString().slice(0, 16) + 'Z';
}
