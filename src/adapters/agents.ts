import https from 'node:https';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { Agent as UndiciAgent, buildConnector } from 'undici';
import { MtlsError } from '../errors.js';
import { rememberSessions, serverIdentityOf } from '../tls/session-identity.js';
import type { Credentials } from '../tls/credentials.js';
import { clientTlsOptions, checkServerIdentity, type ServerExpectation } from '../tls/options.js';
import { checkStaple, collectStaple, type StapleMode } from '../tls/stapling.js';
import { isIpLiteral } from '../pki/names.js';

export interface ClientAgentOptions {
  credentials?: Credentials;
  /** PEM trust bundle. */
  ca: string;
  /** Expected server identity (SPIFFE ID pattern, or a name other than the URL's host). */
  expect?: ServerExpectation;
  /** Ask for the server's stapled OCSP status and check it ('require': refuse a server without one). */
  staple?: StapleMode;
}

/** The identity check, then the staple check, of a connected socket; the first refusal, or undefined. */
function serverError(
  socket: tls.TLSSocket,
  host: string,
  o: ClientAgentOptions,
  staple: () => Buffer | undefined,
): Error | undefined {
  return (
    identityError(socket, host, o.expect ?? {}) ??
    (o.staple ? checkStaple(socket, staple(), o.staple).error : undefined)
  );
}

/** Checks the server identity on a connected socket, resumed or not, and remembers it for its sessions. */
function identityError(socket: tls.TLSSocket, host: string, expect: ServerExpectation): Error | undefined {
  const id = serverIdentityOf(socket);
  if (!id)
    return new MtlsError(
      'SERVER_IDENTITY_MISMATCH',
      'the server identity is unknown (no certificate, or a resumed session never verified here)',
    );
  rememberSessions(socket, id);
  return checkServerIdentity(id, host, expect);
}

/** An https.Agent that presents our certificate and checks the server's identity from DER, resumed or not. */
export class MtlsHttpsAgent extends https.Agent {
  private readonly o: ClientAgentOptions;

  constructor(o: ClientAgentOptions & { keepAlive?: boolean }) {
    super({
      keepAlive: o.keepAlive ?? true,
      ...clientTlsOptions(o.credentials, o.ca, o.expect ?? {}),
      ...(o.staple ? { requestOCSP: true } : {}),
    });
    this.o = o;
  }

  override createConnection(options: tls.ConnectionOptions, cb?: (err: Error | null, s: Duplex) => void): Duplex {
    const create = (
      https.Agent.prototype as unknown as {
        createConnection: (o: tls.ConnectionOptions, cb?: unknown) => tls.TLSSocket;
      }
    ).createConnection;
    const socket = create.call(this, options, cb);
    const staple = this.o.staple ? collectStaple(socket) : () => undefined;
    socket.once('secureConnect', () => {
      const err = serverError(socket, String(options.host ?? options.servername ?? ''), this.o, staple);
      if (err) socket.destroy(err);
    });
    return socket;
  }
}

/**
 * An undici Agent (undici 6, Node 20's fetch stack) for mTLS: `fetch(url, { dispatcher: mtlsUndiciAgent(o) })`.
 * Presents our certificate, verifies the server, and checks its identity on every connection, resumed or not.
 */
export function mtlsUndiciAgent(o: ClientAgentOptions): UndiciAgent {
  const base = clientTlsOptions(o.credentials, o.ca, o.expect ?? {});
  if (o.staple) return new UndiciAgent({ connect: stapleConnector(base, o) });
  const connector = buildConnector(base as buildConnector.BuildOptions);
  return new UndiciAgent({
    connect: (opts, callback) => {
      connector(opts, (err, socket) => {
        if (err || !socket) return callback(err ?? new Error('no socket'), null);
        const mismatch = identityError(socket as tls.TLSSocket, opts.hostname, o.expect ?? {});
        if (mismatch) {
          socket.destroy();
          return callback(mismatch, null);
        }
        callback(null, socket);
      });
    },
  });
}

/**
 * undici's own connector calls back after 'secureConnect', too late to hear the staple ('OCSPResponse' comes
 * first): with stapling, connections are made here (10 s deadline, SNI as undici sends it).
 */
function stapleConnector(base: tls.ConnectionOptions, o: ClientAgentOptions): buildConnector.connector {
  return (opts, callback) => {
    const servername = opts.servername ?? (isIpLiteral(opts.hostname) ? undefined : opts.hostname);
    const options = {
      ...base,
      requestOCSP: true,
      host: opts.hostname,
      port: Number(opts.port) || 443,
      ...(servername ? { servername } : {}),
    };
    const socket = tls.connect(options);
    const staple = collectStaple(socket);
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      if (err) {
        socket.destroy();
        return callback(err, null);
      }
      callback(null, socket);
    };
    const deadline = setTimeout(
      () => finish(new MtlsError('HANDSHAKE_TIMEOUT', 'no TLS handshake within 10 s')),
      10_000,
    );
    socket.once('error', finish);
    socket.once('secureConnect', () => {
      socket.off('error', finish);
      finish(serverError(socket, opts.hostname, o, staple) ?? null);
    });
  };
}
