import net from 'node:net';
import { MtlsError, type MtlsErrorCode } from '../errors.js';

/** Where to listen or connect: a TCP host and port, or a unix socket path. */
export type Address = { host: string; port: number } | { path: string };

export const formatAddress = (a: Address): string =>
  'path' in a ? `unix:${a.path}` : `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;

/** `HOST:PORT` or `[v6]:PORT` split; `host` is empty for `:PORT`. Undefined when the text has neither shape. */
function splitHostPort(text: string): { host: string; port: number; bracketed: boolean } | undefined {
  const m = /^(\[[^\]]+\]|[^:[\]]*):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port > 65535) return undefined;
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port, bracketed: m[1]!.startsWith('[') };
}

/**
 * The one parser of `HOST:PORT` in mtlskit. A dial target (`mtls connect`, `trace`, `doctor`): host required,
 * port 1-65535, an IPv6 address in brackets.
 */
export function parseHostPort(
  text: string,
  what = 'target',
  code: MtlsErrorCode = 'USAGE',
): { host: string; port: number } {
  const a = splitHostPort(text);
  if (!a || !a.host || a.port === 0 || (a.bracketed && !net.isIPv6(a.host))) {
    throw new MtlsError(code, `${what} '${text}' is not HOST:PORT; write it like localhost:8443 or [::1]:8443`);
  }
  return { host: a.host, port: a.port };
}

/** A listen or target address: `HOST:PORT`, `[v6]:PORT`, `:PORT` (all interfaces) or `unix:PATH`. */
export function parseAddress(text: string, what: string): Address {
  if (text.startsWith('unix:')) {
    const p = text.slice(5);
    if (!p) throw new MtlsError('BAD_INPUT', `${what} 'unix:' needs a path, e.g. unix:/run/app.sock`);
    return { path: p };
  }
  const a = splitHostPort(text);
  if (!a)
    throw new MtlsError('BAD_INPUT', `${what} '${text}' is not HOST:PORT or unix:PATH; write it like 127.0.0.1:8080`);
  if (a.bracketed && !net.isIPv6(a.host)) {
    throw new MtlsError('BAD_INPUT', `${what} '${text}': '${a.host}' is not an IPv6 address`);
  }
  return { host: a.host || '0.0.0.0', port: a.port };
}
