import crypto from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import tls from 'node:tls';
import { MtlsError } from '../errors.js';
import { identityFromCertificate, type PeerIdentity } from '../identity/identity.js';
import { parseCertificate } from '../pki/certificate.js';
import { dnsNameMatches } from '../pki/name-match.js';
import { checkIpAddress, compileSpiffePattern, isIpLiteral, printable } from '../pki/names.js';
import type { Credentials } from './credentials.js';

/** TLS 1.2 suites: ECDHE with AEAD only (TLS 1.3 suites are all AEAD; its groups are limited below). */
export const SECURE_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');
/** ECDHE groups only: no finite-field DH. */
export const SECURE_GROUPS = 'X25519:P-256:P-384';
/**
 * TLS 1.2 renegotiation is refused by every server we build, as the proxy's native engine does: Node's own limit
 * (3 per 10 minutes) still lets a client make the server redo a handshake's public-key work on demand.
 */
export const NO_RENEGOTIATION = crypto.constants.SSL_OP_NO_RENEGOTIATION;

export interface EndpointOptions {
  /** Default TLSv1.2 (TLS 1.3 is preferred when both support it). */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** ALPN protocols, e.g. ['h2', 'http/1.1']. */
  alpn?: string[];
}

/** Server options: a client certificate is required and verified against the trust bundle. */
export function serverTlsOptions(
  creds: Pick<Credentials, 'cert' | 'key' | 'ca'>,
  opts: EndpointOptions & { sni?: Record<string, Credentials> } = {},
): tls.TlsOptions {
  const o: tls.TlsOptions = {
    cert: creds.cert,
    key: creds.key,
    ca: creds.ca,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: opts.minVersion ?? 'TLSv1.2',
    ciphers: SECURE_CIPHERS,
    ecdhCurve: SECURE_GROUPS,
    honorCipherOrder: true,
    secureOptions: NO_RENEGOTIATION,
  };
  if (opts.alpn) o.ALPNProtocols = opts.alpn;
  if (opts.sni) {
    const contexts = new Map(
      Object.entries(opts.sni).map(([host, c]) => [host.toLowerCase(), tls.createSecureContext(serverTlsOptions(c))]),
    );
    o.SNICallback = (servername, cb) => cb(null, contexts.get(servername.toLowerCase()));
  }
  return o;
}

/** What the client expects the server to be. Without a SPIFFE ID, the host name (or `servername`) is checked. */
export interface ServerExpectation {
  /** SPIFFE ID or pattern (`*` one segment, trailing `**`): checked instead of the DNS name. */
  spiffeId?: string;
  /** Name to check (and send as SNI); defaults to the host connected to. */
  servername?: string;
}

/**
 * Checks the server's identity from its DER certificate. Node's default `checkServerIdentity` ignores URI
 * SANs and parses the `subjectaltname` string; this does neither. Returns an MtlsError or undefined.
 */
export function checkServerIdentity(id: PeerIdentity, host: string, expect: ServerExpectation): MtlsError | undefined {
  if (expect.spiffeId !== undefined) {
    const match = compileSpiffePattern(expect.spiffeId);
    if (!id.spiffeId)
      return new MtlsError(
        'SERVER_IDENTITY_MISMATCH',
        `the server's certificate has no SPIFFE ID (exactly one spiffe:// URI SAN), expected ${expect.spiffeId}`,
      );
    if (!match(id.spiffeId))
      return new MtlsError('SERVER_IDENTITY_MISMATCH', `the server is ${id.spiffeId.uri}, not ${expect.spiffeId}`);
    return undefined;
  }
  const name = (expect.servername ?? host).replace(/^\[|\]$/g, '');
  let ip: string | undefined;
  try {
    ip = checkIpAddress(name);
  } catch {
    ip = undefined;
  }
  if (ip !== undefined) {
    if (id.ips.includes(ip)) return undefined;
    return new MtlsError(
      'SERVER_IDENTITY_MISMATCH',
      `the server's certificate is not for IP ${ip} (it has ${[...id.ips, ...id.dns].join(', ') || 'no names'})`,
    );
  }
  if (id.dns.some((d) => dnsNameMatches(d, name))) return undefined;
  return new MtlsError(
    'SERVER_IDENTITY_MISMATCH',
    `the server's certificate is for ${id.dns.join(', ') || 'no DNS names'}, ` +
      `not '${printable(name)}'; use --servername or fix its SANs`,
  );
}

/** Client options: present our certificate, verify the server against the trust bundle and check its identity. */
export function clientTlsOptions(
  creds: Credentials | undefined,
  ca: string,
  expect: ServerExpectation = {},
  opts: EndpointOptions = {},
): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = {
    ca,
    rejectUnauthorized: true,
    minVersion: opts.minVersion ?? 'TLSv1.2',
    ciphers: SECURE_CIPHERS,
    ecdhCurve: SECURE_GROUPS,
    checkServerIdentity: (host: string, cert: PeerCertificate) =>
      checkServerIdentity(identityFromCertificate(parseCertificate(cert.raw, 'server certificate')), host, expect),
  };
  if (creds) {
    o.cert = creds.cert;
    o.key = creds.key;
  }
  // SNI carries host names only (RFC 6066 3): never an IP literal.
  if (expect.servername && !isIpLiteral(expect.servername)) o.servername = expect.servername;
  if (opts.alpn) o.ALPNProtocols = opts.alpn;
  return o;
}
