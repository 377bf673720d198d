import type http from 'node:http';
import type { PeerIdentity } from '../identity/identity.js';
import { clientCertHeader, IDENTITY_HEADERS, xfccValue } from './xfcc.js';

/** What the HTTP proxy sends on and answers itself: the request headers the backend sees, and JSON error answers. */

/** A JSON error answer; `close` ends the connection after it (the request body may not have been read). */
export function answer(res: http.ServerResponse, status: number, error: string, reason: string, close = false): void {
  const body = JSON.stringify({ error, reason });
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(body);
}

/** Hop-by-hop headers (RFC 9110 7.6.1): never forwarded. */
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);
/** Never forwarded from the client: hop-by-hop headers and the identity headers we set ourselves. */
const STRIPPED = new Set([...HOP, ...IDENTITY_HEADERS]);

/** Header names a Connection header lists as hop-by-hop for this message (usually none). */
function connectionTokens(value: string | undefined): Set<string> | undefined {
  if (!value || /^\s*(keep-alive|close)\s*$/i.test(value)) return undefined;
  return new Set(
    value
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
}

export function forwardedHeaders(
  req: http.IncomingMessage,
  id: PeerIdentity,
  o: { by?: string; xfccCertificate: boolean; clientCertHeader: boolean },
): http.OutgoingHttpHeaders {
  const listed = connectionTokens(req.headers.connection);
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers))
    if (!STRIPPED.has(k) && !listed?.has(k) && v !== undefined) out[k] = v;
  // Sanitize and set: whatever the client sent in these headers is gone; only what we verified is there.
  out['x-forwarded-client-cert'] = xfccValue(id, {
    ...(o.by ? { by: o.by } : {}),
    includeCert: o.xfccCertificate,
  });
  if (o.clientCertHeader) out['client-cert'] = clientCertHeader(id);
  const xff = req.headers['x-forwarded-for'];
  out['x-forwarded-for'] = `${xff ? `${xff}, ` : ''}${req.socket.remoteAddress}`;
  out['x-forwarded-proto'] = 'https';
  return out;
}

/** The target's response headers that go back to the client (raw names and order): hop-by-hop ones dropped. */
export function responseHeaders(ur: http.IncomingMessage): [string, string][] {
  const out: [string, string][] = [];
  const listed = connectionTokens(ur.headers.connection);
  for (let i = 0; i < ur.rawHeaders.length; i += 2) {
    const k = ur.rawHeaders[i]!.toLowerCase();
    if (!HOP.has(k) && !listed?.has(k)) out.push([ur.rawHeaders[i]!, ur.rawHeaders[i + 1]!]);
  }
  return out;
}
