import { MtlsError } from '../errors.js';

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1e3,
  m: 60e3,
  h: 3600e3,
  d: 86400e3,
  w: 7 * 86400e3,
  y: 365 * 86400e3,
};

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
    throw new MtlsError(
      'BAD_DURATION',
      `${what} '${text}' is not a duration; use a number with a unit, e.g. 90d, 12h, 1y, 30m`,
    );
  }
  if (total <= 0) throw new MtlsError('BAD_DURATION', `${what} '${text}' must be longer than zero`);
  return total;
}

/** The inverse of parseDuration, in the units people write: 30d, 24h, 1d12h, 90s (never weeks or years). */
export function formatDuration(ms: number): string {
  let left = Math.round(ms);
  let out = '';
  for (const unit of ['d', 'h', 'm', 's', 'ms']) {
    const size = UNIT_MS[unit]!;
    if (left >= size) {
      out += `${Math.floor(left / size)}${unit}`;
      left %= size;
    }
  }
  return out || '0s';
}

/**
 * "in 90 days", "2 hours ago": a distance between `when` and `now` as people say it, rounded to the nearest unit
 * and in the unit they would pick (a 90-day certificate expires "in 90 days", not "in 2 months").
 */
export function relativeTime(when: Date, now: Date): string {
  const diff = when.getTime() - now.getTime();
  const abs = Math.abs(diff);
  const day = 86400e3;
  const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  let phrase: string;
  if (abs < 1e3) return 'now';
  if (abs < 90e3) phrase = plural(Math.round(abs / 1e3), 'second');
  else if (abs < 90 * 60e3) phrase = plural(Math.round(abs / 60e3), 'minute');
  else if (abs < 36 * 3600e3) phrase = plural(Math.round(abs / 3600e3), 'hour');
  else if (abs < 100 * day) phrase = plural(Math.round(abs / day), 'day');
  else if (abs < 330 * day) phrase = plural(Math.round(abs / (30.44 * day)), 'month');
  else {
    const years = Math.round((abs / (365.25 * day)) * 2) / 2;
    phrase = `${years} year${years === 1 ? '' : 's'}`;
  }
  return diff >= 0 ? `in ${phrase}` : `${phrase} ago`;
}

/** ISO-8601 to the minute, UTC: `2026-11-24T10:00Z`. */
export function shortTime(d: Date): string {
  return d.toISOString().slice(0, 16) + 'Z';
}
