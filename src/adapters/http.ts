import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import { identityOf, type PeerIdentity } from '../identity/identity.js';
import { compilePolicy, type Decision, type Policy } from '../identity/policy.js';
import { enforceHandshakeDeadline, reportHandshakeErrors, timeoutReporter, type MtlsServerOptions } from '../tls/server.js';
import { serverTlsOptions } from '../tls/options.js';

/** What the middleware attaches to each request as `req.mtls`. */
export interface RequestMtls {
  identity?: PeerIdentity;
  decision: Decision;
}

declare module 'node:http' {
  interface IncomingMessage {
    mtls?: RequestMtls;
  }
}

function pathOf(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}

/** Decides for one request: the identity of its connection and the per-route rules for its path. */
export function authorizeRequest(policy: Policy, req: IncomingMessage): RequestMtls {
  const identity = identityOf(req as unknown as { socket: unknown });
  const decision = policy.decide(identity, pathOf(req.url));
  const r: RequestMtls = { decision, ...(identity ? { identity } : {}) };
  req.mtls = r;
  return r;
}

export function sendForbidden(res: ServerResponse, decision: Decision): void {
  const body = JSON.stringify({ error: 'forbidden', reason: decision.reason });
  res.writeHead(403, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
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
    if (!m.decision.allowed) return sendForbidden(res, m.decision);
    next();
  };
}

/** An HTTPS server that requires client certificates and applies `policy` (per route) before `handler`. */
export function createMtlsHttpsServer(o: MtlsServerOptions, handler: (req: IncomingMessage, res: ServerResponse) => void, onDecision?: (req: IncomingMessage, m: RequestMtls) => void): https.Server {
  const policy = o.policy ?? compilePolicy({ allow: [] });
  const auth = mtlsAuthorize(policy, onDecision);
  const server = https.createServer({ ...serverTlsOptions(o.credentials, o), handshakeTimeout: 0 }, (req, res) => auth(req, res, () => handler(req, res)));
  enforceHandshakeDeadline(server, o.handshakeTimeoutMs ?? 10_000, timeoutReporter(server, o.handshakeTimeoutMs ?? 10_000));
  reportHandshakeErrors(server);
  return server;
}
