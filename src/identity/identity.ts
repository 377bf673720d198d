import type { TLSSocket } from 'node:tls';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import { formatDn, type DnAttribute, type SpiffeId } from '../pki/names.js';
import { leafSpiffeId } from '../pki/path-rules.js';

/** Who the verified peer is, decoded from its DER certificate (never from Node's `subjectaltname` string). */
export interface PeerIdentity {
  /** Present when the certificate carries exactly one URI SAN and it is a valid SPIFFE ID. */
  spiffeId?: SpiffeId;
  uris: string[];
  dns: string[];
  ips: string[];
  emails: string[];
  subject: DnAttribute[];
  issuer: DnAttribute[];
  /** RFC 4514 strings of `subject` and `issuer`. */
  subjectDn: string;
  issuerDn: string;
  serial: string;
  fingerprint256: string;
  notBefore: Date;
  notAfter: Date;
  certificate: Certificate;
}

export function identityFromCertificate(c: Certificate): PeerIdentity {
  const id: PeerIdentity = {
    uris: c.san?.uri ?? [],
    dns: c.san?.dns ?? [],
    ips: c.san?.ip ?? [],
    emails: c.san?.email ?? [],
    subject: c.subject,
    issuer: c.issuer,
    subjectDn: formatDn(c.subject),
    issuerDn: formatDn(c.issuer),
    serial: c.serialHex,
    fingerprint256: c.fingerprint256,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    certificate: c,
  };
  const spiffe = leafSpiffeId(c);
  if (spiffe.id) id.spiffeId = spiffe.id;
  return id;
}

const cache = new WeakMap<TLSSocket, PeerIdentity | null>();

/**
 * Identities by exact DER bytes: a client presents the same certificate on every full handshake, so it is
 * parsed once. Safe because the identity is a pure function of those bytes (OpenSSL still verifies the chain
 * on every handshake). Bounded; least recently used go first.
 */
const MAX_CACHED_IDENTITIES = 1024;
const byDer = new Map<string, PeerIdentity>();

export function identityForDer(raw: Buffer): PeerIdentity {
  const key = raw.toString('base64');
  let id = byDer.get(key);
  if (id) {
    byDer.delete(key);
  } else {
    // Shared across connections: frozen, so no caller can change another connection's identity.
    const fresh = identityFromCertificate(parseCertificate(raw, 'peer certificate'));
    for (const list of [fresh.uris, fresh.dns, fresh.ips, fresh.emails, fresh.subject, fresh.issuer])
      Object.freeze(list);
    id = Object.freeze(fresh);
    if (byDer.size >= MAX_CACHED_IDENTITIES) byDer.delete(byDer.keys().next().value as string);
  }
  byDer.set(key, id);
  return id;
}

/** Anything that leads to a TLS socket: the socket itself, an http(s)/http2 request, or an object with `.socket`. */
export type HasTlsSocket = TLSSocket | { socket: unknown } | { connection: unknown };

function socketOf(x: HasTlsSocket): TLSSocket | undefined {
  const s =
    (x as { encrypted?: boolean }).encrypted === true && typeof (x as TLSSocket).getPeerX509Certificate === 'function'
      ? (x as TLSSocket)
      : ((x as { socket?: unknown }).socket ?? (x as { connection?: unknown }).connection);
  if (s && typeof (s as TLSSocket).getPeerX509Certificate === 'function') return s as TLSSocket;
  // http2 compat requests expose the stream's session socket
  const stream = (x as { stream?: { session?: { socket?: unknown } } }).stream;
  const ss = stream?.session?.socket;
  return ss && typeof (ss as TLSSocket).getPeerX509Certificate === 'function' ? (ss as TLSSocket) : undefined;
}

/**
 * The verified peer of a TLS connection, or undefined when it presented no certificate or the chain did not
 * verify (`socket.authorized` false). Parsed once per connection and cached. Works on resumed sessions: the
 * peer certificate is part of the session.
 */
export function identityOf(x: HasTlsSocket): PeerIdentity | undefined {
  const socket = socketOf(x);
  if (!socket || !socket.authorized) return undefined;
  let id = cache.get(socket);
  if (id === undefined) {
    // Never getPeerX509Certificate(): see docs/endpoints.md, Node pitfalls.
    const raw = socket.getPeerCertificate().raw;
    id = raw ? identityForDer(raw) : null;
    cache.set(socket, id);
  }
  return id ?? undefined;
}

/** JSON view of an identity (what `serve --http` answers and `connect --json` prints). */
export function identityJson(id: PeerIdentity) {
  return {
    spiffeId: id.spiffeId?.uri ?? null,
    trustDomain: id.spiffeId?.trustDomain ?? null,
    dns: id.dns,
    uris: id.uris,
    ips: id.ips,
    emails: id.emails,
    subject: id.subjectDn,
    issuer: id.issuerDn,
    serial: id.serial,
    fingerprint256: id.fingerprint256,
    notAfter: id.notAfter.toISOString(),
  };
}
