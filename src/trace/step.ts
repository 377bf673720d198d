/** The trace's unit: a numbered step with its lines, some of which state the result of a check. */

export interface TraceStep {
  n: number;
  title: string;
  /** Who sent it: client -> server or server -> client. */
  direction?: 'client->server' | 'server->client';
  lines: string[];
  /** The lines that are a check mtlskit made (a chain verified, a signature, a Finished MAC, a policy decision). */
  checks?: { line: number; ok: boolean }[];
  /** An alert: one side refused the other. */
  kind?: 'alert';
}

/** A line that states the result of a check. */
export interface Judged {
  ok: boolean;
  text: string;
}
export type Line = string | Judged;
export const judged = (ok: boolean, text: string): Judged => ({ ok, text });

/** A step from lines some of which are checks. */
export function makeStep(
  n: number,
  title: string,
  direction: TraceStep['direction'],
  lines: Line[],
  kind?: 'alert',
): TraceStep {
  const checks = lines.flatMap((l, i) => (typeof l === 'string' ? [] : [{ line: i, ok: l.ok }]));
  return {
    n,
    title,
    ...(direction ? { direction } : {}),
    lines: lines.map((l) => (typeof l === 'string' ? l : l.text)),
    ...(checks.length ? { checks } : {}),
    ...(kind ? { kind } : {}),
  };
}

const VERSIONS: Record<number, string> = {
  0x0304: 'TLS 1.3',
  0x0303: 'TLS 1.2',
  0x0302: 'TLS 1.1',
  0x0301: 'TLS 1.0',
  0x0300: 'SSL 3.0',
};
export const versionName = (v: number) => VERSIONS[v] ?? `0x${v.toString(16).padStart(4, '0')}`;

/** A secret as the trace shows it: masked (first two bytes and the length) unless `reveal`. */
export const mask = (b: Buffer, reveal: boolean) =>
  reveal ? b.toString('hex') : `${b.subarray(0, 2).toString('hex')}…(${b.length} bytes, --reveal-keys to show)`;
