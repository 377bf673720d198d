import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { identityOf, type PeerIdentity } from '../identity/identity.js';
import type { Decision, Policy } from '../identity/policy.js';
import { normalizeRequestTarget, type PathOptions } from '../identity/request-target.js';

/** What the middleware attaches to each request as `req.mtls`. */
export interface RequestMtls {
  identity?: PeerIdentity;
  decision: Decision;
  /** The normalized request target (path and query) the decision was made on; absent when it was refused. */
  target?: string;
  /** The request target cannot be normalized safely: answer 400, not 403. */
  badTarget?: boolean;
}

declare module 'node:http' {
  interface IncomingMessage {
    mtls?: RequestMtls;
  }
}

/**
 * Decides for one request: the identity of its connection and the per-route rules for its normalized path
 * (`..`, `%2e`, `//`, `%61` and absolute-form resolved first; an encoded `/`, a NUL or a bad escape refused). The
 * decision holds for the normalized target only, so `req.url` is rewritten to it: whatever routes after this
 * (Express, a handler, the proxy's forwarder) sees the path that was authorized.
 */
export function authorizeRequest(policy: Policy, req: IncomingMessage, opts: PathOptions = {}): RequestMtls {
  const identity = identityOf(req as unknown as { socket: unknown });
  const n = normalizeRequestTarget(req.url ?? '/', opts);
  let r: RequestMtls;
  if (!n.ok) {
    r = {
      decision: { allowed: false, reason: `bad request target: ${n.reason}` },
      badTarget: true,
      ...(identity ? { identity } : {}),
    };
  } else {
    r = { decision: policy.decide(identity, n.path), target: n.path + n.query, ...(identity ? { identity } : {}) };
    req.url = r.target;
  }
  req.mtls = r;
  return r;
}

/** 403 with the decision's reason, or 400 for a request target that cannot be normalized. */
export function sendForbidden(res: ServerResponse, m: RequestMtls): void {
  const body = JSON.stringify({ error: m.badTarget ? 'bad request' : 'forbidden', reason: m.decision.reason });
  res.writeHead(m.badTarget ? 400 : 403, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...(m.badTarget ? { connection: 'close' } : {}),
  });
  res.end(body);
}

/**
 * What an HTTP server owes a request Node could not read (its 'clientError'), as Node's default handler does: 408
 * for a head that came too late, 431 for one too large, 400 for one that does not parse; anything else (a reset,
 * a TLS failure after the handshake) just closes.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  const code = err.code ?? '';
  const status =
    code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? '408 Request Timeout'
      : code === 'HPE_HEADER_OVERFLOW'
        ? '431 Request Header Fields Too Large'
        : code.startsWith('HPE_')
          ? '400 Bad Request'
          : undefined;
  if (status && socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  else socket.destroy();
}
