import crypto from 'node:crypto';
import type tls from 'node:tls';
import { identityFromCertificate, type PeerIdentity } from '../identity/identity.js';
import { parseCertificate } from '../pki/certificate.js';

/**
 * On a resumed TLS 1.3 session a Node client gets no peer certificate at all (OpenSSL does not keep it in the
 * client's session), and Node does not call checkServerIdentity. So we remember which verified server
 * identity each session ticket belongs to, and look it up on resumption. Bounded; the oldest go first.
 */
const MAX_SESSIONS = 10_000;
const verified = new Map<string, PeerIdentity>();
const keyOf = (session: Buffer) => crypto.createHash('sha256').update(session).digest('base64');

/** Remember every session `socket` receives as belonging to `identity` (already verified on this connection). */
export function rememberSessions(socket: tls.TLSSocket, identity: PeerIdentity): void {
  socket.on('session', (s: Buffer) => {
    verified.set(keyOf(s), identity);
    if (verified.size > MAX_SESSIONS) verified.delete(verified.keys().next().value as string);
  });
}

/**
 * The server's identity for a connected client socket: from its certificate on a full handshake, from the
 * remembered session on a resumed one. Undefined when neither is known (fail closed).
 */
export function serverIdentityOf(socket: tls.TLSSocket): PeerIdentity | undefined {
  // Call at 'secureConnect'. Never getPeerX509Certificate(): see docs/endpoints.md, Node pitfalls.
  const raw = socket.getPeerCertificate().raw;
  if (raw) return identityFromCertificate(parseCertificate(raw, 'server certificate'));
  if (!socket.isSessionReused()) return undefined;
  const session = socket.getSession();
  return session ? verified.get(keyOf(session)) : undefined;
}
