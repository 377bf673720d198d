import { EventEmitter } from 'node:events';
import type net from 'node:net';
import tls from 'node:tls';
import { MtlsError } from '../errors.js';
import { identityOf, type PeerIdentity } from '../identity/identity.js';
import { compilePolicy, type Decision, type Policy } from '../identity/policy.js';
import type { Credentials } from './credentials.js';
import { CredentialHolder, currentCredentials } from './reload.js';
import { authorizationFailure, classifyTlsError } from './errors.js';
import { CrlSet } from './crl-file.js';
import { peerChain } from './dial.js';
import { serverTlsOptions, type EndpointOptions } from './options.js';
import { OcspStapler, stapleFor } from './stapling.js';
import { OcspClientChecker } from './ocsp-clients.js';

export interface MtlsServerOptions extends EndpointOptions {
  /**
   * Our certificate: fixed, or a CredentialHolder (CredentialReloader watching files, RenewingCredentials renewed
   * from the CA) whose every change the server takes at once, session ticket keys kept.
   */
  credentials: Credentials | CredentialHolder;
  /** Default: deny everyone (no allow rule). */
  policy?: Policy;
  /** Close connections whose handshake has not finished in time. Default 10 s. */
  handshakeTimeoutMs?: number;
  /**
   * PEM (or DER) CRLs, one for every CA of the trust bundle, checked for every client chain at its handshake and,
   * on HTTP servers, at every request. Refused at creation when empty, unparseable, not signed by a CA of the
   * bundle, expired, or when a CA has none (src/tls/crl-file.ts). A CrlSet can be replaced while the server runs.
   * Once past its nextUpdate a CRL refuses every client until a fresh one replaces it (hard-fail).
   */
  crl?: string | Buffer | CrlSet;
  /**
   * Staple our certificate's OCSP status to every handshake whose client asks (RFC 6066 8): true (the responder
   * its AIA names), or an OcspStapler of your own (a fixed URL, events). Its issuer must follow it in the chain.
   */
  staple?: boolean | OcspStapler;
  /**
   * Ask each client certificate's OCSP responder before admitting it (true: the responder it names, hard-fail), or an
   * OcspClientChecker of your own (a fixed URL, soft-fail, cache, events). HTTPS servers ask again at each request
   * (answers are cached for seconds), so a kept-alive connection of a certificate revoked since gets 403.
   */
  ocsp?: boolean | OcspClientChecker;
}

/** The OCSP check of clients `o` asks for, if any. */
export function serverOcsp(o: MtlsServerOptions): OcspClientChecker | undefined {
  if (!o.ocsp) return undefined;
  return o.ocsp === true ? new OcspClientChecker() : o.ocsp;
}

/** Attaches the stapling `o` asks for to `server` (see MtlsServerOptions.staple). */
export function serverStapling(server: tls.Server, o: MtlsServerOptions): void {
  if (!o.staple) return;
  stapleFor(server, o.staple === true ? new OcspStapler() : o.staple, currentCredentials(o.credentials).chain);
}

/** When `o.credentials` can change (a CredentialHolder), `server` follows it. */
export function followCredentials(server: tls.Server, o: MtlsServerOptions): void {
  if (o.credentials instanceof CredentialHolder)
    o.credentials.attach(server, (c) => mtlsServerTlsOptions({ ...o, credentials: c }));
}

/** Node's server options for `o`: the endpoint's TLS options (revocation is looked up by us: serverCrls). */
export function mtlsServerTlsOptions(o: MtlsServerOptions): tls.TlsOptions {
  return { ...serverTlsOptions(currentCredentials(o.credentials), o), handshakeTimeout: 0 };
}

/**
 * The CRLs of `o`, checked. They are not handed to OpenSSL (with Node's `crl` option a handshake was 2.8x dearer at
 * 100,000 entries): `revokedPeer` looks each certificate up in a hash set.
 */
export function serverCrls(o: MtlsServerOptions): CrlSet | undefined {
  if (o.crl === undefined || o.crl instanceof CrlSet) return o.crl;
  return new CrlSet(o.crl, 'CRL', currentCredentials(o.credentials));
}

/**
 * Why the peer of a finished handshake is refused by `crls`: its whole chain on a full handshake when a CRL above
 * the leaf's issuer lists anything, else its leaf (a resumed session's chain was checked at its full handshake).
 */
export function revokedPeer(crls: CrlSet, socket: tls.TLSSocket, identity: PeerIdentity): MtlsError | undefined {
  const leaf = identity.certificate;
  return crls.failure(!socket.isSessionReused() && crls.needsChain(leaf) ? peerChain(socket) : [leaf]);
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

/** The TCP socket a server-side TLS socket wraps (Node keeps it as `_parent`); it outlives what the TLS socket forgets. */
export function rawSocketOf<T extends net.Socket = net.Socket>(s: tls.TLSSocket): T | undefined {
  return (s as unknown as { _parent?: T })._parent ?? undefined;
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
    const error =
      authorizationFailure(socket.authorizationError) ??
      (aborted
        ? new MtlsError(
            'HANDSHAKE_FAILED',
            'the client closed the connection during the handshake (it may not trust our server certificate)',
            { cause: err },
          )
        : classifyTlsError(err));
    const remote = remoteOf(rawSocketOf(socket) ?? socket);
    server.emit('mtls:handshake-error', { remote, error } satisfies HandshakeErrorEvent);
    // Node leaves the socket to whoever listens to tlsClientError.
    socket.destroy();
  });
}

const DEADLINE = Symbol('handshake deadline');
type WithDeadline = net.Socket & { [DEADLINE]?: NodeJS.Timeout };

/**
 * Closes connections whose TLS handshake has not finished within `ms` of the TCP accept. Node's own
 * `handshakeTimeout` only emits 'tlsClientError' and leaves the socket open when the client sent part of a
 * record and stopped (measured on Node 20.20: a slowloris stays connected forever), so we keep our own timer on
 * the raw socket. Pass `handshakeTimeout: 0` to the server so that Node's does not fire as well. `ms` may be a
 * function, read at each accept (a reloadable limit).
 */
export function enforceHandshakeDeadline(
  server: tls.Server,
  ms: number | (() => number),
  onTimeout?: (raw: net.Socket) => void,
): void {
  server.on('connection', (raw: WithDeadline) => {
    raw[DEADLINE] = setTimeout(
      () => {
        onTimeout?.(raw);
        raw.destroy();
      },
      typeof ms === 'function' ? ms() : ms,
    );
    raw.once('close', () => clearTimeout(raw[DEADLINE]));
  });
  const clear = (s: tls.TLSSocket) => clearTimeout(rawSocketOf<WithDeadline>(s)?.[DEADLINE]);
  server.on('secureConnection', clear);
  server.on('tlsClientError', (_err: Error, s: tls.TLSSocket) => clear(s));
}

/** Emits 'mtls:handshake-error' (HANDSHAKE_TIMEOUT) for a connection cut by the deadline. */
export function timeoutReporter(server: EventEmitter, ms: number): (raw: net.Socket) => void {
  return (raw) =>
    server.emit('mtls:handshake-error', {
      remote: remoteOf(raw),
      error: new MtlsError('HANDSHAKE_TIMEOUT', `no finished TLS handshake within ${ms} ms; connection closed`),
    } satisfies HandshakeErrorEvent);
}

/**
 * A TLS server that requires and verifies a client certificate, then authorizes the verified identity with
 * the policy (after the chain is verified, failing closed) and calls `onConnection` only for allowed peers.
 */
export function createMtlsServer(
  o: MtlsServerOptions,
  onConnection?: (socket: tls.TLSSocket, identity: PeerIdentity) => void,
): tls.Server {
  const policy = o.policy ?? compilePolicy({ allow: [] });
  const crls = serverCrls(o);
  const server = tls.createServer(mtlsServerTlsOptions(o));
  enforceHandshakeDeadline(
    server,
    o.handshakeTimeoutMs ?? 10_000,
    timeoutReporter(server, o.handshakeTimeoutMs ?? 10_000),
  );
  reportHandshakeErrors(server);
  serverStapling(server, o);
  followCredentials(server, o);
  const ocsp = serverOcsp(o);
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    const identity = identityOf(socket);
    const revoked = crls && identity && revokedPeer(crls, socket, identity);
    const refuse = (error: MtlsError) => {
      server.emit('mtls:handshake-error', { remote: remoteOf(socket), error } satisfies HandshakeErrorEvent);
      socket.destroy();
    };
    if (revoked) return refuse(revoked);
    if (!ocsp || !identity) return admit(socket, identity);
    // The responder is asked before the connection is handed on; an error meanwhile must not go unheard.
    const pending = () => undefined;
    socket.on('error', pending);
    void ocsp.failure(socket.isSessionReused() ? [identity.certificate] : peerChain(socket)).then((refused) => {
      socket.off('error', pending);
      if (socket.destroyed) return;
      if (refused) refuse(refused);
      else admit(socket, identity);
    });
  });
  const admit = (socket: tls.TLSSocket, identity: PeerIdentity | undefined) => {
    const decision = policy.decide(identity);
    const event: ConnectionEvent = {
      remote: remoteOf(socket),
      decision,
      resumed: socket.isSessionReused(),
      ...(identity ? { identity } : {}),
    };
    server.emit('mtls:connection', event);
    // OpenSSL can still fail the connection after the handshake (a client certificate too large for a session
    // ticket makes it send internal_error): said once, as 'mtls:connection-error', instead of nothing.
    socket.once('error', (err: Error) =>
      server.emit('mtls:connection-error', {
        remote: event.remote,
        error: classifyTlsError(err),
      } satisfies HandshakeErrorEvent),
    );
    if (!decision.allowed || !identity) {
      socket.destroy();
      return;
    }
    onConnection?.(socket, identity);
  };
  return server;
}
