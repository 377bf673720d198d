import https from 'node:https';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { Agent as UndiciAgent, buildConnector } from 'undici';
import { MtlsError } from '../errors.js';
import { rememberSessions, serverIdentityOf } from '../tls/session-identity.js';
import type { Credentials } from '../tls/credentials.js';
import { clientTlsOptions, checkServerIdentity, type ServerExpectation } from '../tls/options.js';

export interface ClientAgentOptions {
  credentials?: Credentials;
  /** PEM trust bundle. */
  ca: string;
  /** Expected server identity (SPIFFE ID pattern, or a name other than the URL's host). */
  expect?: ServerExpectation;
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
  private readonly expect: ServerExpectation;

  constructor(o: ClientAgentOptions & { keepAlive?: boolean }) {
    super({ keepAlive: o.keepAlive ?? true, ...clientTlsOptions(o.credentials, o.ca, o.expect ?? {}) });
    this.expect = o.expect ?? {};
  }

  override createConnection(options: tls.ConnectionOptions, cb?: (err: Error | null, s: Duplex) => void): Duplex {
    const create = (
      https.Agent.prototype as unknown as {
        createConnection: (o: tls.ConnectionOptions, cb?: unknown) => tls.TLSSocket;
      }
    ).createConnection;
    const socket = create.call(this, options, cb);
    socket.once('secureConnect', () => {
      const err = identityError(socket, String(options.host ?? options.servername ?? ''), this.expect);
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
  const expect = o.expect ?? {};
  const base = clientTlsOptions(o.credentials, o.ca, expect);
  const connector = buildConnector(base as buildConnector.BuildOptions);
  return new UndiciAgent({
    connect: (opts, callback) => {
      connector(opts, (err, socket) => {
        if (err || !socket) return callback(err ?? new Error('no socket'), null);
        const mismatch = identityError(socket as tls.TLSSocket, opts.hostname, expect);
        if (mismatch) {
          socket.destroy();
          return callback(mismatch, null);
        }
        callback(null, socket);
      });
    },
  });
}
