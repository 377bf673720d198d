import tls from 'node:tls';
import { identityFromCertificate, type PeerIdentity } from '../identity/identity.js';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import { MtlsError } from '../errors.js';
import type { Credentials } from './credentials.js';
import { rememberSessions, serverIdentityOf } from './session-identity.js';
import { Capture, tappedSocket } from '../trace/capture.js';
import { classifyTlsError } from './errors.js';
import { checkServerIdentity, clientTlsOptions, type EndpointOptions, type ServerExpectation } from './options.js';

export interface ConnectOptions extends EndpointOptions {
  host: string;
  port: number;
  /** Our client certificate; omit to connect without one. */
  credentials?: Credentials;
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
}

export interface MtlsConnection {
  socket: tls.TLSSocket;
  server: PeerIdentity;
  /** The server's chain as it was at secureConnect (leaf first); empty on a resumed session. */
  chain: Certificate[];
  resumed: boolean;
  /** The latest TLS session for resumption (TLS 1.3 tickets arrive after the handshake), or undefined yet. */
  session(): Buffer | undefined;
}

/**
 * The peer's chain, leaf first. Call it at 'secureConnect': on a TLS 1.3 client, Node (OpenSSL 3.0) no longer
 * returns the peer certificate once the server's NewSessionTicket has been processed.
 */
export function peerChain(socket: tls.TLSSocket): Certificate[] {
  const out: Certificate[] = [];
  let c: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (c && c.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(parseCertificate(c.raw));
    c = c.issuerCertificate;
  }
  return out;
}

/**
 * Connects, verifies the server's chain and identity (SPIFFE ID or name, from DER), and resolves with the
 * server's identity. The identity is checked again on resumed sessions, where Node skips checkServerIdentity.
 * Failures reject with an MtlsError of a stable code (see tls/errors.ts).
 */
export function connectMtls(o: ConnectOptions): Promise<MtlsConnection> {
  const expect = o.expect ?? {};
  const peer = `${o.host}:${o.port}`;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(classifyTlsError(err, { sentOurCert: o.credentials !== undefined && answered, unanswered: !answered, peer }));
    };
    const socket = tls.connect({
      host: o.host, port: o.port, ...clientTlsOptions(o.credentials, o.ca, expect, o),
      ...(o.session ? { session: o.session } : {}),
      ...(o.capture ? { socket: tappedSocket(o.host, o.port, o.capture) } : {}),
    });
    if (o.capture) {
      const capture = o.capture;
      socket.on('keylog', (line: Buffer) => capture.keylog.push(line.toString('latin1')));
    }
    let session: Buffer | undefined;
    socket.on('session', (s: Buffer) => { session = s; });
    // A key log line means the server answered our ClientHello: only then can a close be about our certificate.
    let answered = false;
    socket.once('keylog', () => { answered = true; });
    const timer = setTimeout(() => fail(Object.assign(new Error('connection timed out'), { code: 'ETIMEDOUT' })), o.timeoutMs ?? 10_000);
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      const chain = peerChain(socket);
      const server = chain.length ? identityFromCertificate(chain[0]!) : serverIdentityOf(socket);
      if (!server) {
        return fail(new MtlsError('SERVER_IDENTITY_MISMATCH', socket.isSessionReused()
          ? 'resumed a TLS session whose server identity was never verified here; connect without the session'
          : 'the server sent no certificate'));
      }
      rememberSessions(socket, server);
      const mismatch = checkServerIdentity(server, o.host, expect);
      if (mismatch) return fail(mismatch);
      const done = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.off('error', fail);
        socket.off('close', closed);
        socket.off('end', closed);
        resolve({ socket, server, chain, resumed: socket.isSessionReused(), session: () => session });
      };
      const closed = () => fail(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
      if (o.confirmMs && socket.getProtocol() === 'TLSv1.3') {
        // The server's verdict on our certificate (or on its absence) comes after our secureConnect. Over a
        // tapped (Duplex) socket the server's close shows as 'end' first.
        socket.once('close', closed);
        socket.once('end', closed);
        setTimeout(done, o.confirmMs);
      } else {
        done();
      }
    });
  });
}
