import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { identityOf, type PeerIdentity } from '../identity/identity.js';
import { compilePolicy, type Decision, type Policy } from '../identity/policy.js';
import { normalizeRequestTarget, type PathOptions } from '../identity/request-target.js';
import { classifyTlsError } from '../tls/errors.js';
import { enforceHandshakeDeadline, mtlsServerTlsOptions, remoteOf, reportHandshakeErrors, timeoutReporter, type MtlsServerOptions } from '../tls/server.js';

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
    r = { decision: { allowed: false, reason: `bad request target: ${n.reason}` }, badTarget: true, ...(identity ? { identity } : {}) };
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
  res.writeHead(m.badTarget ? 400 : 403, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(m.badTarget ? { connection: 'close' } : {}) });
  res.end(body);
}

/**
 * Middleware for Node http(s) handlers and Express: sets `req.mtls` and answers 403 with the reason when the
 * policy denies; otherwise calls `next`. `onDecision` sees every decision (logging, audit).
 */
export function mtlsAuthorize(policy: Policy, onDecision?: (req: IncomingMessage, m: RequestMtls) => void) {
  return (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    const m = authorizeRequest(policy, req);
    onDecision?.(req, m);
    if (!m.decision.allowed) return sendForbidden(res, m);
    next();
  };
}

/** An HTTPS server that requires client certificates and applies `policy` (per route) before `handler`. */
export function createMtlsHttpsServer(o: MtlsServerOptions, handler: (req: IncomingMessage, res: ServerResponse) => void, onDecision?: (req: IncomingMessage, m: RequestMtls) => void): https.Server {
  const policy = o.policy ?? compilePolicy({ allow: [] });
  const auth = mtlsAuthorize(policy, onDecision);
  const server = https.createServer(mtlsServerTlsOptions(o), (req, res) => auth(req, res, () => handler(req, res)));
  enforceHandshakeDeadline(server, o.handshakeTimeoutMs ?? 10_000, timeoutReporter(server, o.handshakeTimeoutMs ?? 10_000));
  reportHandshakeErrors(server);
  // A connection that fails after its handshake (OpenSSL's internal_error for a client certificate too large for
  // a session ticket, a reset, a request Node cannot parse): said once as 'mtls:connection-error', answered as
  // Node would (400, 408) or closed.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    server.emit('mtls:connection-error', { remote: remoteOf(socket), error: classifyTlsError(err) });
    answerClientError(err, socket);
  });
  return server;
}

/**
 * What an HTTP server owes a request Node could not read (its 'clientError'), as Node's default handler does: 408
 * for a head that came too late, 431 for one too large, 400 for one that does not parse; anything else (a reset,
 * a TLS failure after the handshake) just closes.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  const code = err.code ?? '';
  const status = code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : code.startsWith('HPE_') ? '400 Bad Request' : undefined;
  if (status && socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  else socket.destroy();
}
