import { EventEmitter } from 'node:events';
import tls from 'node:tls';
import { MtlsError } from '../errors.js';
import { identityOf, type PeerIdentity } from '../identity/identity.js';
import { compilePolicy, type Decision, type Policy } from '../identity/policy.js';
import type { Credentials } from './credentials.js';
import { authorizationFailure, classifyTlsError } from './errors.js';
import { serverTlsOptions, type EndpointOptions } from './options.js';

export interface MtlsServerOptions extends EndpointOptions {
  credentials: Credentials;
  /** Default: deny everyone (no allow rule). */
  policy?: Policy;
  /** Close connections whose handshake has not finished in time. Default 10 s. */
  handshakeTimeoutMs?: number;
}

/** One connection's outcome, emitted as 'mtls:connection' on the server. */
export interface ConnectionEvent {
  remote: string;
  identity?: PeerIdentity;
  decision: Decision;
  resumed: boolean;
}

/** A failed handshake, emitted as 'mtls:handshake-error' on the server. */
export interface HandshakeErrorEvent {
  remote: string;
  error: MtlsError;
}

export function remoteOf(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}

/**
 * Node destroys a socket that fails verification under rejectUnauthorized without telling why ("socket hang
 * up"); the reason is left in socket.authorizationError. Turn every failed handshake into a typed event.
 */
export function reportHandshakeErrors(server: EventEmitter): void {
  // Cache the peer address on the raw socket now: a socket destroyed for a bad certificate cannot tell it later.
  server.prependListener('connection', (raw: { remoteAddress?: string }) => void raw.remoteAddress);
  server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
    const aborted = (err as NodeJS.ErrnoException).code === 'ECONNRESET' && !socket.authorizationError;
    const error = authorizationFailure(socket.authorizationError)
      ?? (aborted ? new MtlsError('HANDSHAKE_FAILED', 'the client closed the connection during the handshake (it may not trust our server certificate)', { cause: err }) : classifyTlsError(err));
    const remote = remoteOf((socket as unknown as { _parent?: tls.TLSSocket })._parent ?? socket);
    server.emit('mtls:handshake-error', { remote, error } satisfies HandshakeErrorEvent);
  });
}

/**
 * A TLS server that requires and verifies a client certificate, then authorizes the verified identity with
 * the policy (after the chain is verified, failing closed) and calls `onConnection` only for allowed peers.
 */
export function createMtlsServer(o: MtlsServerOptions, onConnection?: (socket: tls.TLSSocket, identity: PeerIdentity) => void): tls.Server {
  const policy = o.policy ?? compilePolicy({ allow: [] });
  const server = tls.createServer({ ...serverTlsOptions(o.credentials, o), handshakeTimeout: o.handshakeTimeoutMs ?? 10_000 });
  reportHandshakeErrors(server);
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    const identity = identityOf(socket);
    const decision = policy.decide(identity);
    const event: ConnectionEvent = { remote: remoteOf(socket), decision, resumed: socket.isSessionReused(), ...(identity ? { identity } : {}) };
    server.emit('mtls:connection', event);
    if (!decision.allowed || !identity) {
      socket.destroy();
      return;
    }
    onConnection?.(socket, identity);
  });
  return server;
}
