import type tls from 'node:tls';
import { identityFromCertificate, type PeerIdentity } from '../identity/identity.js';
import type { Certificate } from '../pki/certificate.js';
import { MtlsError } from '../errors.js';
import type { Credentials } from './credentials.js';
import { currentCredentials, type CredentialHolder } from './reload.js';
import { rememberSessions, serverIdentityOf } from './session-identity.js';
import type { Capture } from './capture.js';
import { dial, DialError } from './dial.js';
import { checkStaple, type StapleMode } from './stapling.js';
import type { OcspStatus } from '../pki/ocsp-check.js';
import { classifyTlsError } from './errors.js';
import { checkServerIdentity, clientTlsOptions, type EndpointOptions, type ServerExpectation } from './options.js';

export { peerChain } from './dial.js';

export interface ConnectOptions extends EndpointOptions {
  host: string;
  port: number;
  /** Our client certificate (fixed, or the current one of a CredentialHolder); omit to connect without one. */
  credentials?: Credentials | CredentialHolder;
  /** PEM trust bundle for the server's chain. */
  ca: string;
  expect?: ServerExpectation;
  /** A session from a previous connection (`socket.getSession()` or the 'session' event) to resume. */
  session?: Buffer;
  /** Whole connect + handshake deadline. Default 10 s. */
  timeoutMs?: number;
  /**
   * TLS 1.3 completes on our side before the server has checked our certificate; wait this long for a
   * rejection (an alert or a close) before calling the connection established. Default 0 (do not wait).
   */
  confirmMs?: number;
  /** Record every byte both ways and the key log into this (for `analyzeHandshake`); off by default. */
  capture?: Capture;
  /**
   * Ask the server to staple its certificate's OCSP status and check it: 'request' refuses a revoked or
   * unbelievable staple, 'require' also a server that staples none. Off by default.
   */
  staple?: StapleMode;
}

export interface MtlsConnection {
  socket: tls.TLSSocket;
  server: PeerIdentity;
  /** The server's chain as it was at secureConnect (leaf first); empty on a resumed session. */
  chain: Certificate[];
  resumed: boolean;
  /** The latest TLS session for resumption (TLS 1.3 tickets arrive after the handshake), or undefined yet. */
  session(): Buffer | undefined;
  /** The OCSP response the server stapled, checked (only with `staple`, on a full handshake that had one). */
  staple?: OcspStatus;
}

/**
 * Connects, verifies the server's chain and identity (SPIFFE ID or name, from DER), and resolves with the
 * server's identity. The identity is checked again on resumed sessions, where Node skips checkServerIdentity.
 * Failures reject with an MtlsError of a stable code (see tls/errors.ts).
 */
export async function connectMtls(o: ConnectOptions): Promise<MtlsConnection> {
  const expect = o.expect ?? {};
  let server: PeerIdentity | undefined;
  let stapled: OcspStatus | undefined;
  try {
    const d = await dial({
      host: o.host,
      port: o.port,
      verify: 'strict',
      timeoutMs: o.timeoutMs ?? 10_000,
      confirmMs: o.confirmMs ?? 0,
      ...(expect.servername ? { servername: expect.servername } : {}),
      ...(o.capture ? { capture: o.capture } : {}),
      tls: {
        ...clientTlsOptions(currentCredentials(o.credentials), o.ca, expect, o),
        ...(o.session ? { session: o.session } : {}),
        ...(o.staple ? { requestOCSP: true } : {}),
      },
      onSecure: (socket, chain, staple) => {
        server = chain.length ? identityFromCertificate(chain[0]!) : serverIdentityOf(socket);
        if (!server) {
          return new MtlsError(
            'SERVER_IDENTITY_MISMATCH',
            socket.isSessionReused()
              ? 'resumed a TLS session whose server identity was never verified here; connect without the session'
              : 'the server sent no certificate',
          );
        }
        rememberSessions(socket, server);
        const mismatch = checkServerIdentity(server, o.host, expect);
        if (mismatch || !o.staple) return mismatch;
        const verdict = checkStaple(socket, staple, o.staple);
        stapled = verdict.status;
        return verdict.error;
      },
    });
    return {
      socket: d.socket,
      server: server!,
      chain: d.chain,
      resumed: d.socket.isSessionReused(),
      session: d.session,
      ...(stapled ? { staple: stapled } : {}),
    };
  } catch (err) {
    const e = err as DialError;
    const answered = e instanceof DialError && e.answered;
    const classified = classifyTlsError(e instanceof DialError ? e.cause : err, {
      sentOurCert: o.credentials !== undefined && answered,
      unanswered: !answered,
      peer: `${o.host}:${o.port}`,
      ...(e instanceof DialError ? { connected: e.connected, serverBytes: e.serverBytes } : {}),
    });
    // What the handshake agreed before the close: a caller that reads the capture may find it was a graceful one.
    if (!(e instanceof DialError) || !e.handshook) throw classified;
    throw new MtlsError(classified.code, classified.message, {
      cause: classified.cause,
      details: { ...classified.details, protocol: e.protocol, cipher: e.cipher },
    });
  }
}
