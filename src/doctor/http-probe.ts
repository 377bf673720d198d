import type { TLSSocket } from 'node:tls';
import { printable } from '../text/printable.js';

/** What an HTTPS server answered to one request after our handshake. */
export interface HttpAnswer {
  statusLine: string;
  status: number;
  /** Its Date header: the server's clock. */
  date?: Date;
  /** For a refusal (4xx/5xx): the reason its body gives (a JSON `reason` or `error`, else the start of the text). */
  reason?: string;
}

export interface HttpProbeResult {
  answer?: HttpAnswer;
  /** The server closed (or reset) the connection without an HTTP answer. */
  closed: boolean;
  error?: NodeJS.ErrnoException;
}

const MAX = 16 * 1024;

/**
 * `GET path` on an established connection, `Connection: close`; reads the head and up to 16 KiB of body for
 * `timeoutMs` at most. Used by doctor (the clock, a 403) and by `mtls connect --http`.
 */
export function httpProbe(socket: TLSSocket, host: string, path = '/', timeoutMs = 1500): Promise<HttpProbeResult> {
  return new Promise((resolve) => {
    let data = Buffer.alloc(0);
    let done = false;
    const finish = (closed: boolean, error?: NodeJS.ErrnoException) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      const answer = parseAnswer(data);
      resolve({ ...(answer ? { answer } : {}), closed: closed && !answer, ...(error && !answer ? { error } : {}) });
    };
    const onData = (d: Buffer) => {
      data = Buffer.concat([data, d]).subarray(0, MAX);
      const head = data.indexOf('\r\n\r\n');
      if (data.length >= MAX) return finish(false);
      if (head < 0) return;
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(data.subarray(0, head).toString('latin1'))?.[1];
      if (length !== undefined && data.length - head - 4 >= Number(length)) finish(false);
    };
    socket.on('data', onData);
    socket.once('error', (err: NodeJS.ErrnoException) => finish(true, err));
    socket.once('end', () => finish(true));
    socket.once('close', () => finish(true));
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: mtlskit\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
    );
  });
}

function parseAnswer(data: Buffer): HttpAnswer | undefined {
  const text = data.toString('latin1');
  const m = /^HTTP\/\d(?:\.\d)? (\d{3})[^\r\n]*/.exec(text);
  if (!m) return undefined;
  const headEnd = text.indexOf('\r\n\r\n');
  const head = headEnd < 0 ? text : text.slice(0, headEnd);
  const body = headEnd < 0 ? '' : data.subarray(headEnd + 4).toString('utf8');
  const status = Number(m[1]);
  const dateText = /\r\ndate:\s*([^\r\n]+)/i.exec(head)?.[1];
  const date = dateText && !Number.isNaN(Date.parse(dateText)) ? new Date(dateText) : undefined;
  let reason: string | undefined;
  if (status >= 400 && body.trim()) {
    try {
      const j = JSON.parse(body) as { reason?: unknown; error?: unknown };
      const r = j.reason ?? j.error;
      reason = typeof r === 'string' ? r : undefined;
    } catch {
      reason = body.trim().split('\n')[0];
    }
  }
  return {
    statusLine: printable(m[0], 120),
    status,
    ...(date ? { date } : {}),
    ...(reason ? { reason: printable(reason, 200) } : {}),
  };
}

/** The answer as one line: its status line and, when it gives one, its reason. */
export const describeAnswer = (a: HttpAnswer): string => `${a.statusLine}${a.reason ? `: ${a.reason}` : ''}`;

/**
 * For a 401 or 403: that TLS worked and the application's authorization refused us, with the server's reason
 * (doctor's NOT_AUTHORIZED and `connect --http` say the same); undefined for any other answer.
 */
export function authorizationRefusal(a: HttpAnswer): string | undefined {
  if (a.status !== 401 && a.status !== 403) return undefined;
  return `TLS worked with our certificate, and the server's authorization refused us: ${a.statusLine}${a.reason ? ` (${a.reason})` : ''}`;
}
