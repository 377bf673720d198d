import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { MtlsError } from '../errors.js';
import { identityOf } from '../identity/identity.js';
import { compilePolicy, type Policy } from '../identity/policy.js';
import { answerClientError, authorizeRequest, sendForbidden, type RequestMtls } from '../http/authorize.js';
import { classifyTlsError } from '../tls/errors.js';
import { peerChain } from '../tls/dial.js';
import {
  enforceHandshakeDeadline,
  followCredentials,
  mtlsServerTlsOptions,
  remoteOf,
  reportHandshakeErrors,
  revokedPeer,
  serverCrls,
  serverOcsp,
  serverStapling,
  timeoutReporter,
  type HandshakeErrorEvent,
  type MtlsServerOptions,
} from '../tls/server.js';

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
export function createMtlsHttpsServer(
  o: MtlsServerOptions,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  onDecision?: (req: IncomingMessage, m: RequestMtls) => void,
): https.Server {
  const policy = o.policy ?? compilePolicy({ allow: [] });
  const auth = mtlsAuthorize(policy, onDecision);
  const crls = serverCrls(o);
  const ocsp = serverOcsp(o);
  const server = https.createServer(mtlsServerTlsOptions(o), (req, res) => {
    // A keep-alive connection outlives a CRL reload or a revocation: each request is looked up again, and a revoked
    // certificate's connection is answered 403 and closed.
    const leaf = (crls || ocsp) && identityOf(req)?.certificate;
    const revoked = leaf && crls?.failure([leaf]);
    if (revoked) return refuseRevoked(server, req, res, revoked);
    if (!ocsp || !leaf) return auth(req, res, () => handler(req, res));
    ocsp.failure([leaf]).then(
      (refused) => (refused ? refuseRevoked(server, req, res, refused) : auth(req, res, () => handler(req, res))),
      (err: Error) => res.destroy(err),
    );
  });
  if (ocsp)
    // Asked at the handshake too (the answer is cached for the first request), with the issuer the chain carries.
    server.on('secureConnection', (socket: TLSSocket) => {
      const identity = identityOf(socket);
      if (!identity) return;
      void ocsp.failure(socket.isSessionReused() ? [identity.certificate] : peerChain(socket)).then((refused) => {
        if (!refused || socket.destroyed) return;
        server.emit('mtls:handshake-error', { remote: remoteOf(socket), error: refused } satisfies HandshakeErrorEvent);
        socket.destroy();
      });
    });
  if (crls)
    server.on('secureConnection', (socket: TLSSocket) => {
      const identity = identityOf(socket);
      const revoked = identity && revokedPeer(crls, socket, identity);
      if (!revoked) return;
      server.emit('mtls:handshake-error', { remote: remoteOf(socket), error: revoked } satisfies HandshakeErrorEvent);
      socket.destroy();
    });
  enforceHandshakeDeadline(
    server,
    o.handshakeTimeoutMs ?? 10_000,
    timeoutReporter(server, o.handshakeTimeoutMs ?? 10_000),
  );
  reportHandshakeErrors(server);
  serverStapling(server, o);
  followCredentials(server, o);
  // A connection that fails after its handshake (OpenSSL's internal_error for a client certificate too large for
  // a session ticket, a reset, a request Node cannot parse): said once as 'mtls:connection-error', answered as
  // Node would (400, 408) or closed.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    server.emit('mtls:connection-error', { remote: remoteOf(socket), error: classifyTlsError(err) });
    answerClientError(err, socket);
  });
  return server;
}

function refuseRevoked(server: https.Server, req: IncomingMessage, res: ServerResponse, e: MtlsError): void {
  server.emit('mtls:connection-error', { remote: remoteOf(req.socket), error: e } satisfies HandshakeErrorEvent);
  const body = JSON.stringify({ error: 'forbidden', code: e.code, reason: e.message });
  res.writeHead(403, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  res.end(body);
}

export { authorizeRequest, type RequestMtls };
