import { paint } from '../text/style.js';
import type { TraceReport } from './trace.js';

export interface RenderOptions {
  color: boolean;
  /** Columns between the two lifelines. Default 72. */
  width?: number;
  /** Whose side the trace was taken on (labels the lifelines). */
  side?: 'client' | 'server';
}

/**
 * The trace as a sequence diagram: a lifeline for each side, an arrow per step in the direction it travelled,
 * the step's values under it, and steps that belong to both sides (the key schedule) across the diagram.
 */
export function renderTrace(
  report: Pick<TraceReport, 'steps' | 'ok' | 'protocol' | 'cipherSuite' | 'error'>,
  o: RenderOptions,
): string[] {
  const c = paint(o.color);
  const width = o.width ?? 72;
  const me = o.side ?? 'client';
  const left = me === 'client' ? 'client (us)' : 'client';
  const right = me === 'server' ? 'server (us)' : 'server';
  const out = [c.bold(`${left}${' '.repeat(Math.max(1, width + 2 - left.length - right.length))}${right}`)];
  const fill = (n: number, ch: string) => ch.repeat(Math.max(2, n));
  for (const s of report.steps) {
    const title = `${s.n}. ${s.title}`;
    const alert = s.kind === 'alert';
    let line: string;
    if (s.direction === 'client->server') {
      line = `│${c.cyan(`── ${title} ${fill(width - title.length - 5, '─')}▶`)}│`;
    } else if (s.direction === 'server->client') {
      line = `│${c.magenta(`◀─ ${title} ${fill(width - title.length - 5, '─')}─`)}│`;
    } else {
      line = `╞${c.yellow(`══ ${title} ${fill(width - title.length - 4, '═')}`)}╡`;
    }
    out.push(alert ? c.red(line.replace(/\x1b\[\d+m/g, '')) : line);
    const checks = new Map((s.checks ?? []).map((x) => [x.line, x.ok]));
    s.lines.forEach((l, i) => {
      const ok = checks.get(i);
      out.push(`│   ${ok === undefined ? dimSecrets(l, c) : ok ? c.green(l) : c.red(l)}`);
    });
  }
  out.push(
    report.ok
      ? c.green(`=> mutual TLS established (${report.protocol}, ${report.cipherSuite})`)
      : c.red(`=> failed: [${report.error?.code}] ${report.error?.message}`),
  );
  return out;
}

/** Masked secrets dimmed (the mask is trace's own notation: the first two bytes, then the length). */
function dimSecrets(line: string, c: ReturnType<typeof paint>): string {
  return line.replace(/[0-9a-f]{4}…\(\d+ bytes, --reveal-keys to show\)/g, (m) => c.dim(m));
}
