import tls from 'node:tls';
import { identityFromCertificate, type PeerIdentity } from '../identity/identity.js';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import type { Credentials } from './credentials.js';
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
}

export interface MtlsConnection {
  socket: tls.TLSSocket;
  server: PeerIdentity;
  /** The server's chain as it was at secureConnect (leaf first). */
  chain: Certificate[];
  resumed: boolean;
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
      reject(classifyTlsError(err, { sentOurCert: o.credentials !== undefined, peer }));
    };
    const socket = tls.connect({
      host: o.host, port: o.port, ...clientTlsOptions(o.credentials, o.ca, expect, o),
      ...(o.session ? { session: o.session } : {}),
    });
    const timer = setTimeout(() => fail(Object.assign(new Error('connection timed out'), { code: 'ETIMEDOUT' })), o.timeoutMs ?? 10_000);
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      const chain = peerChain(socket);
      if (chain.length === 0) return fail(new Error('the server sent no certificate'));
      const server = identityFromCertificate(chain[0]!);
      const mismatch = checkServerIdentity(server, o.host, expect);
      if (mismatch) return fail(mismatch);
      const done = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.off('error', fail);
        socket.off('close', closed);
        resolve({ socket, server, chain, resumed: socket.isSessionReused() });
      };
      const closed = () => fail(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
      if (o.confirmMs && socket.getProtocol() === 'TLSv1.3') {
        // The server's verdict on our certificate (or on its absence) comes after our secureConnect.
        socket.once('close', closed);
        setTimeout(done, o.confirmMs);
      } else {
        done();
      }
    });
  });
}
